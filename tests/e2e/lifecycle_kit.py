"""Helpers for the lifecycle tests and the lifecycle demo: a scenario with versions in every
state, principals, HTTP calls to the app, and what Azure (the emulator) holds."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import yaml

from devhost.demo import DEFAULT_SCENARIO, ROOT, World
from shared.domain.principal import HEADER, encode_principal
from shared.errors import TemporaryError
from tests.e2e.conftest import post_json

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


def scenario(states: dict[str, str], host_pool_version: str | None = None) -> dict[str, Any]:
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


# ---- the app over HTTP ------------------------------------------------------------------


def call(
    world: World, method: str, path: str, body: Any = None, who: str | None = None
) -> tuple[int, Any]:
    headers = {HEADER: who} if who else {}
    url = f"{world.host.url}/api/{path}"
    if method == "GET":
        import urllib.request

        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")
    return post_json(url, body if body is not None else {}, headers)


def approve(
    world: World, version: str, who: str, decision: str = "approve", ticket: str = "CHG-100"
) -> tuple[int, Any]:
    return call(
        world,
        "POST",
        f"images/{IMAGE}/versions/{version}/approval",
        {"decision": decision, "change_ticket": ticket, "comment": "looks good"},
        who,
    )


def activate(world: World, version: str, who: str = OPS) -> tuple[int, Any]:
    return call(
        world,
        "POST",
        f"images/{IMAGE}/activation",
        {"version": version, "change_ticket": "CHG-200"},
        who,
    )


def rollback(world: World, who: str = OPS, **body: Any) -> tuple[int, Any]:
    payload = {"change_ticket": "CHG-300", "reason": "users report crashes", **body}
    return call(world, "POST", f"images/{IMAGE}/rollback", payload, who)


def wait_instance(world: World, instance_id: str, real_timeout: float = 60.0) -> dict[str, Any]:
    """Wait (real seconds) for an orchestration to end; its final status."""
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        status = world.status(instance_id) or {}
        if status.get("runtimeStatus") in {"Completed", "Failed", "Terminated"}:
            return status
        time.sleep(0.02)
    raise TimeoutError(f"{instance_id} did not end within {real_timeout} s: {status}")


def set_state(world: World, version: str, action: str, actor: str = "imagefactory") -> None:
    """Change a state through the app's own activity (what validation does), then publish the
    event, retrying while the version is still updating from the previous change."""
    from activities.lifecycle import publish_lifecycle_event, set_version_state

    deadline = time.monotonic() + 60
    at = world.clock.now().isoformat()
    payload = {"image": IMAGE, "version": version, "action": action, "actor": actor, "at": at}
    while True:
        try:
            result = set_version_state({**payload, "reason": "e2e"})
            break
        except TemporaryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    publish_lifecycle_event(
        {
            "image": IMAGE,
            "version": version,
            "state": result["state"],
            "previous": result["previous"],
            "actor": actor,
            "reason": "e2e",
            "at": at,
        }
    )


# ---- what Azure holds -------------------------------------------------------------------


def version_doc(world: World, version: str) -> dict[str, Any]:
    doc = world.emulator.emu.store.get(version_id(version))
    assert doc is not None, f"no version {version}"
    return dict(doc)


def state_of(world: World, version: str) -> str:
    return str(version_doc(world, version)["tags"].get("imagefactory:state"))


def latest(world: World) -> dict[str, str | None]:
    """What a VM created from the definition (no version) gets in each region."""
    from emulator.gallery import latest_version

    out: dict[str, str | None] = {}
    for region in REGIONS:
        found = latest_version(world.emulator.emu, DEFINITION_ID, region)
        out[region] = str(found["name"]) if found else None
    return out


def host_pool_image(world: World) -> str | None:
    doc = world.emulator.emu.store.get(HOST_POOL_ID)
    assert doc is not None
    raw = doc["properties"].get("vmTemplate")
    template = json.loads(raw) if isinstance(raw, str) else raw or {}
    value = template.get("customImageId")
    return str(value) if value else None


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
        (e.event_type.removeprefix("ImageFactory.ImageVersion"), str(e.data.get("version")))
        for e in world.emulator.emu.events.events()
        if e.event_type.startswith("ImageFactory.ImageVersion")
    ]


def versions_view(world: World, who: str = READER) -> dict[str, Any]:
    code, body = call(world, "GET", f"images/{IMAGE}/versions", who=who)
    assert code == 200, body
    result: dict[str, Any] = body
    return result
