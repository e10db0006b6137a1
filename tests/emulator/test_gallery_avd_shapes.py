"""Response shapes: every gallery and AVD answer carries at least the key names of the matching
Azure REST example (../shared/azure-rest-examples; see IGNORED_KEYS in test_gallery_support for
the few deliberate omissions)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_gallery_support import (
    AVD_API,
    GALLERY_API,
    RG,
    SUB,
    gallery_path,
    image_body,
    make_vm,
    missing_keys,
    version_body,
    wait_for,
)

from emulator.avd import open_session
from tests.emulator.conftest import SMALL_SCENARIO


def example(examples_dir: Path, rel: str, status: str = "200") -> Any:
    data = json.loads((examples_dir / rel).read_text(encoding="utf-8"))
    return data["responses"][status].get("body")


def check(examples_dir: Path, rel: str, actual: Any, status: str = "200") -> None:
    missing = missing_keys(example(examples_dir, rel, status), actual)
    assert not missing, f"{rel}: response lacks {missing}"


def call(env: Any, method: str, path: str, api: str, body: Any = None, want: int = 200) -> Any:
    sep = "&" if "?" in path else "?"
    status, _, parsed = env.http(method, f"{path}{sep}api-version={api}", body)
    assert status == want, (method, path, status, parsed)
    return parsed


def succeeded(env: Any, path: str) -> bool:
    doc = env.emu.store.get(path)
    return doc is not None and doc["properties"].get("provisioningState") == "Succeeded"


def test_gallery_shapes(emulator_env: Any, examples_dir: Path) -> None:
    env = emulator_env
    cg = "compute-gallery/2025-03-03/"
    gal = gallery_path()
    created = call(
        env,
        "PUT",
        gal,
        GALLERY_API,
        {"location": "westeurope", "properties": {"description": "d"}},
        201,
    )
    check(examples_dir, cg + "Gallery_Create.json", created, "201")
    wait_for(env, lambda: succeeded(env, gal), what="gallery")
    check(examples_dir, cg + "Gallery_Get.json", call(env, "GET", gal, GALLERY_API))
    img_a = f"{gal}/images/a"
    created = call(env, "PUT", img_a, GALLERY_API, image_body(sku="a"), 201)
    check(examples_dir, cg + "GalleryImage_Create.json", created, "201")
    for name in ("b", "c", "spec"):
        body = image_body(sku=name, os_state="Specialized" if name == "spec" else "Generalized")
        call(env, "PUT", f"{gal}/images/{name}", GALLERY_API, body, 201)
    wait_for(env, lambda: all(succeeded(env, f"{gal}/images/{n}") for n in "abc"), what="images")
    check(examples_dir, cg + "GalleryImage_Get.json", call(env, "GET", img_a, GALLERY_API))
    listed = call(env, "GET", f"{gal}/images", GALLERY_API)
    assert "nextLink" in listed  # 4 images, pages of 3
    check(examples_dir, cg + "GalleryImage_ListByGallery.json", listed)

    vm = make_vm(env, "build1", generalized=True)
    no_block = {"blockDeletionBeforeEndOfLife": False}
    v_vm = f"{img_a}/versions/1.0.0"
    created = call(
        env,
        "PUT",
        v_vm,
        GALLERY_API,
        version_body({"source": {"virtualMachineId": vm}}, safety=no_block),
        201,
    )
    check(examples_dir, cg + "GalleryImageVersion_Create_WithVmAsSource.json", created, "201")
    wait_for(env, lambda: succeeded(env, v_vm), what="version from a VM")
    # Versions with source.id (another gallery version), as in the Get/List examples.
    img_b = f"{gal}/images/b"
    for i in range(4):
        body = version_body(
            {"source": {"id": v_vm}},
            regions=[{"name": "westeurope"}, {"name": "northeurope"}],
            safety=no_block,
        )
        created = call(env, "PUT", f"{img_b}/versions/1.0.{i}", GALLERY_API, body, 201)
    check(examples_dir, cg + "GalleryImageVersion_Create.json", created, "201")
    wait_for(
        env,
        lambda: all(succeeded(env, f"{img_b}/versions/1.0.{i}") for i in range(4)),
        what="versions",
    )
    got = call(env, "GET", f"{img_b}/versions/1.0.0", GALLERY_API)
    check(examples_dir, cg + "GalleryImageVersion_Get.json", got)
    got = call(env, "GET", f"{img_b}/versions/1.0.0?$expand=ReplicationStatus", GALLERY_API)
    check(examples_dir, cg + "GalleryImageVersion_Get_WithReplicationStatus.json", got)
    listed = call(env, "GET", f"{img_b}/versions", GALLERY_API)
    assert "nextLink" in listed
    check(examples_dir, cg + "GalleryImageVersion_ListByGalleryImage.json", listed)
    patch = {
        "properties": {
            "publishingProfile": {
                "targetRegions": [
                    {"name": "westeurope"},
                    {"name": "northeurope", "regionalReplicaCount": 2},
                ]
            }
        }
    }
    updated = call(env, "PATCH", f"{img_b}/versions/1.0.0", GALLERY_API, patch)
    check(examples_dir, cg + "GalleryImageVersion_Update.json", updated)
    # From a snapshot of a (specialized) VM's OS disk.
    host = make_vm(env, "host1")
    with env.emu.lock:
        disk = env.emu.store.get(host)["properties"]["storageProfile"]["osDisk"]["managedDisk"][
            "id"
        ]  # type: ignore[index]
    snap = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/snapshots/s1"
    call(
        env,
        "PUT",
        snap,
        "2025-01-02",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": disk}},
        },
        202,
    )
    wait_for(env, lambda: succeeded(env, snap), what="snapshot")
    created = call(
        env,
        "PUT",
        f"{gal}/images/spec/versions/1.0.0",
        GALLERY_API,
        version_body({"osDiskImage": {"source": {"id": snap}}}),
        201,
    )
    check(
        examples_dir, cg + "GalleryImageVersion_Create_WithSnapshotsAsSource.json", created, "201"
    )
    # Delete: 202 with Azure-AsyncOperation (the example's headers), then 204 once gone.
    status, headers, _ = env.http("DELETE", f"{img_b}/versions/1.0.3?api-version={GALLERY_API}")
    assert status in (200, 202, 204)
    assert "azure-asyncoperation" in headers
    assert "location" in headers


def _avd_scenario() -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["host_pools"] = [
        {
            "name": "hp1",
            "resource_group": "rg-avd",
            "location": "westeurope",
            "hosts": [{"name_prefix": "avd", "count": 4}],
            "registration_token_hours": 24,
        }
    ]
    return sc


def test_avd_shapes(emulator_factory: Any, examples_dir: Path) -> None:
    env = emulator_factory(_avd_scenario())
    dv = "desktopvirtualization/"
    pools = (
        f"/subscriptions/{SUB}/resourceGroups/rg-avd/providers/Microsoft.DesktopVirtualization"
        "/hostPools"
    )
    expiry = (env.clock.now() + timedelta(hours=5)).isoformat()
    body = {
        "location": "westeurope",
        "tags": {"a": "b"},
        "properties": {
            "hostPoolType": "Pooled",
            "loadBalancerType": "BreadthFirst",
            "preferredAppGroupType": "Desktop",
            "maxSessionLimit": 5,
            "registrationInfo": {"expirationTime": expiry, "registrationTokenOperation": "Update"},
            "vmTemplate": "{}",
        },
    }
    created = call(env, "PUT", f"{pools}/hp2", AVD_API, body, 201)
    check(examples_dir, dv + "2024-04-03/HostPool_Create.json", created, "201")
    check(
        examples_dir, dv + "2022-09-09/HostPool_Get.json", call(env, "GET", f"{pools}/hp2", AVD_API)
    )
    patch = {
        "properties": {
            "description": "x",
            "registrationInfo": {"expirationTime": expiry, "registrationTokenOperation": "Update"},
        }
    }
    check(
        examples_dir,
        dv + "2024-04-03/HostPool_Update.json",
        call(env, "PATCH", f"{pools}/hp2", AVD_API, patch),
    )
    token = call(env, "POST", f"{pools}/hp1/retrieveRegistrationToken", AVD_API)
    check(examples_dir, dv + "2023-09-05/HostPools_RetrieveRegistrationToken_Post.json", token)
    tokens = call(env, "POST", f"{pools}/hp1/listRegistrationTokens", AVD_API)
    assert tokens["value"]
    check(examples_dir, dv + "2024-08-08-preview/HostPools_ListRegistrationToken_Post.json", tokens)

    hosts = f"{pools}/hp1/sessionHosts"
    with env.emu.lock:
        for i in range(4):
            open_session(env.emu, f"{hosts}/avd-0", f"u{i}@contoso.com", f"CONTOSO\\u{i}")
    listed = call(env, "GET", hosts, AVD_API)
    check(examples_dir, dv + "2023-09-05/SessionHost_List.json", listed)
    got = call(env, "GET", f"{hosts}/avd-0", AVD_API)
    check(examples_dir, dv + "2025-03-01-preview/SessionHost_Get.json", got)
    upd = call(
        env,
        "PATCH",
        f"{hosts}/avd-1",
        AVD_API,
        {"properties": {"allowNewSession": False, "friendlyName": "f"}},
    )
    check(examples_dir, dv + "2024-04-03/SessionHost_Update.json", upd)
    sessions = f"{hosts}/avd-0/userSessions"
    check(
        examples_dir,
        dv + "2024-04-03/UserSession_Get.json",
        call(env, "GET", f"{sessions}/1", AVD_API),
    )
    check(
        examples_dir, dv + "2024-04-03/UserSession_List.json", call(env, "GET", sessions, AVD_API)
    )
    by_pool = call(
        env, "GET", f"{pools}/hp1/userSessions?$filter=sessionState%20eq%20%27Active%27", AVD_API
    )
    check(examples_dir, dv + "2024-04-03/UserSession_ListByHostPool.json", by_pool)
    # Actions answer like the examples (200, no body).
    msg = {"messageTitle": "t", "messageBody": "b"}
    assert example(examples_dir, dv + "2023-09-05/UserSession_SendMessage_Post.json") is None
    assert call(env, "POST", f"{sessions}/1/sendMessage", AVD_API, msg) is None
    assert call(env, "POST", f"{sessions}/2/disconnect", AVD_API) is None
    assert call(env, "DELETE", f"{sessions}/2", AVD_API) is None
    assert call(env, "DELETE", f"{sessions}/1?force=true", AVD_API) is None
    assert call(env, "DELETE", f"{hosts}/avd-3", AVD_API) is None
    assert call(env, "DELETE", f"{hosts}/avd-3", AVD_API, want=204) is None


@pytest.mark.parametrize(
    ("rel", "status"),
    [
        ("desktopvirtualization/2022-09-09/SessionHost_Delete.json", "200"),
        ("desktopvirtualization/2025-03-01-preview/UserSession_Delete.json", "200"),
        ("desktopvirtualization/2024-04-03/UserSession_Disconnect_Post.json", "200"),
        ("compute-gallery/2025-03-03/GalleryImageVersion_Delete.json", "202"),
    ],
)
def test_examples_without_bodies_are_what_we_answer(
    examples_dir: Path, rel: str, status: str
) -> None:
    # These operations answer without a body (the emulator does too: see the tests above).
    assert example(examples_dir, rel, status) is None
