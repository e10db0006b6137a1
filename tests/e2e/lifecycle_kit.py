"""Helpers for the lifecycle tests and the lifecycle demo: a scenario with versions in every
state, principals, HTTP calls to the app, and what Azure (the emulator) holds."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from devhost.demo import DEFAULT_SCENARIO, ROOT, World
from devhost.demo_lifecycle import Estate
from shared.domain.principal import encode_principal
from shared.names import EG_IMAGE_VERSION_PREFIX

CATALOGUE = ROOT / "tests" / "e2e" / "catalogues" / "lifecycle.yaml"
IMAGE = "lc-win11"
SUB = "00000000-0000-0000-0000-000000000001"
DEFINITION_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd-images/providers/Microsoft.Compute/"
    f"galleries/gal_lc/images/{IMAGE}"
)
HOST_POOL_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/"
    "Microsoft.DesktopVirtualization/hostPools/hp-lc"
)
REGIONS = ("westeurope", "northeurope")
BASE_VERSION = "26200.7462.251205"  # the pinned base: the marketplace watch stays quiet

ALICE = encode_principal("alice@contoso.com", ("Approver", "Operator"))  # the requester
BOB = encode_principal("bob@contoso.com", ("Approver",))
OPS = encode_principal("ops@contoso.com", ("Operator",))
READER = encode_principal("reader@contoso.com", ("Reader",))


def version_id(version: str) -> str:
    return f"{DEFINITION_ID}/versions/{version}"


def scenario(
    states: dict[str, str], host_pool_version: str | None = None, *, host_pool: bool = True
) -> dict[str, Any]:
    """The default scenario plus gal_lc/lc-win11 with one version per entry (version ->
    state, tagged as the factory would) and host pool hp-lc deploying ``host_pool_version``."""
    sc: dict[str, Any] = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    versions = [
        {
            "version": version,
            "regions": list(REGIONS),
            "exclude_from_latest": state != "active",
            "base": f"MicrosoftWindowsDesktop:windows-11:win11-25h2-avd:{BASE_VERSION}",
            "tags": {
                "imagefactory:image": IMAGE,
                "imagefactory:state": state,
                "imagefactory:requested-by": "alice@contoso.com",
                "imagefactory:base-image-version": BASE_VERSION,
            },
        }
        for version, state in states.items()
    ]
    sc["galleries"].append(
        {
            "name": "gal_lc",
            "resource_group": "rg-avd-images",
            "location": "westeurope",
            "images": [
                {
                    "name": IMAGE,
                    "security_type": "TrustedLaunchSupported",
                    "publisher": "Contoso",
                    "offer": "avd-lc",
                    "sku": "lifecycle",
                    "versions": versions,
                }
            ],
        }
    )
    template: dict[str, Any] = {
        "imageType": "Gallery",
        "galleryImagePublisher": "MicrosoftWindowsDesktop",
        "galleryImageOffer": "windows-11",
        "galleryImageSKU": "win11-25h2-avd",
        "osDiskType": "Premium_LRS",
        "vmSize": {"id": "Standard_D4s_v5", "cores": 4, "ram": 16},
    }
    if host_pool_version:
        template = {**template, "imageType": "CustomImage"}
        template["customImageId"] = version_id(host_pool_version)
    if not host_pool:
        return sc
    sc["host_pools"].append(
        {
            "name": "hp-lc",
            "resource_group": "rg-avd",
            "location": "westeurope",
            "host_pool_type": "Pooled",
            "vm_template": template,
            "hosts": [],
        }
    )
    return sc


# ---- the app over HTTP and what Azure holds (devhost/demo_lifecycle.Estate) ----------------


def estate(world: World) -> Estate:
    return Estate(world, IMAGE, DEFINITION_ID, HOST_POOL_ID, REGIONS)


def call(
    world: World, method: str, path: str, body: Any = None, who: str | None = None
) -> tuple[int, Any]:
    return estate(world).call(method, path, body, who)


def approve(world: World, version: str, who: str, decision: str = "approve") -> tuple[int, Any]:
    """A decision; while it is being written (202) wait and ask again (first result)."""
    return estate(world).decide(version, who, decision)


def activate(world: World, version: str, who: str = OPS) -> tuple[int, Any]:
    return estate(world).activate(version, who)


def rollback(world: World, who: str = OPS, **body: Any) -> tuple[int, Any]:
    return estate(world).rollback(who, **body)


def wait_instance(world: World, instance_id: str, real_timeout: float = 60.0) -> dict[str, Any]:
    return estate(world).wait(instance_id, real_timeout)


def set_state(world: World, version: str, action: str, actor: str = "imagefactory") -> None:
    estate(world).set_state(version, action, actor)


def version_doc(world: World, version: str) -> dict[str, Any]:
    return estate(world).version_doc(version)


def state_of(world: World, version: str) -> str:
    return str(estate(world).state_of(version))


def latest(world: World) -> dict[str, str | None]:
    """What a VM created from the definition (no version) gets in each region."""
    return estate(world).latest()


def host_pool_image(world: World) -> str | None:
    return estate(world).host_pool_image()


def azure_snapshot(world: World) -> Any:
    """Everything the lifecycle could change: every version's tags, provisioning and latest
    flags, and the host pool's template."""
    emu = world.emulator.emu
    versions = {
        d["name"]: (
            d.get("tags"),
            d["properties"].get("provisioningState"),
            d["properties"]["publishingProfile"],
        )
        for d in emu.store.list(DEFINITION_ID + "/versions")
    }
    pool = emu.store.get(HOST_POOL_ID)
    return copy.deepcopy((versions, pool["properties"].get("vmTemplate") if pool else None))


def lifecycle_events(world: World) -> list[tuple[str, str]]:
    """(event type, version) of every lifecycle event the app published, in order."""
    return [
        (str(e["type"]).removeprefix(EG_IMAGE_VERSION_PREFIX), str(e.get("version")))
        for e in estate(world).events()
    ]


def versions_view(world: World, who: str = READER) -> dict[str, Any]:
    code, body = call(world, "GET", f"images/{IMAGE}/versions", who=who)
    assert code == 200, body
    result: dict[str, Any] = body
    return result
