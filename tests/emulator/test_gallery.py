"""Compute Gallery conformance with the real ComputeManagementClient (api-version 2026-03-03)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from test_gallery_support import (
    GALLERY_API,
    RG,
    gallery_path,
    image_body,
    make_vm,
    step,
    version_body,
    wait_for,
)

from emulator.gallery import guest_state_for_version, latest_version


def _code(e: HttpResponseError) -> str:
    assert e.error is not None, e
    return str(e.error.code)


@pytest.fixture
def env(emulator_env: Any) -> Any:
    return emulator_env


@pytest.fixture
def cc(env: Any) -> Any:
    return env.compute_client()


def _gallery_and_image(cc: Any, image: str = "win11", **kw: Any) -> None:
    cc.galleries.begin_create_or_update(RG, "gal", {"location": "westeurope"}).result()
    cc.gallery_images.begin_create_or_update(RG, "gal", image, image_body(**kw)).result()


def _version(cc: Any, env: Any, name: str, vm_id: str, image: str = "win11", **kw: Any) -> Any:
    body = version_body({"source": {"virtualMachineId": vm_id}}, **kw)
    return cc.gallery_image_versions.begin_create_or_update(RG, "gal", image, name, body).result()


# -- galleries --------------------------------------------------------------------------------


def test_gallery_lifecycle_create_get_list_update_delete(env: Any, cc: Any) -> None:
    g = cc.galleries.begin_create_or_update(
        RG, "gal", {"location": "westeurope", "properties": {"description": "images"}}
    ).result()
    assert g.properties.provisioning_state == "Succeeded"
    assert g.properties.identifier.unique_name == f"{env.subscription}-GAL"
    for i in range(3):
        cc.galleries.begin_create_or_update(RG, f"gal{i}", {"location": "westeurope"}).result()
    names = [x.name for x in cc.galleries.list_by_resource_group(RG)]
    assert names == ["gal", "gal0", "gal1", "gal2"]  # 4 items over pages of 3
    assert len(list(cc.galleries.list())) == 4
    g = cc.galleries.begin_update(RG, "gal", {"tags": {"team": "euc"}}).result()
    assert g.tags == {"team": "euc"}
    assert cc.galleries.get(RG, "gal").properties.description == "images"
    cc.galleries.begin_delete(RG, "gal0").result()
    with pytest.raises(ResourceNotFoundError):
        cc.galleries.get(RG, "gal0")
    # deleting what is gone is not an error
    cc.galleries.begin_delete(RG, "gal0").result()


def test_gallery_bad_names_and_missing_location_are_400(env: Any) -> None:
    path = gallery_path("my-gallery")
    status, _, body = env.http("PUT", f"{path}?api-version={GALLERY_API}", {"location": "x"})
    assert status == 400
    assert body["error"]["code"] == "InvalidResourceName"
    assert "periods" in body["error"]["message"]
    status, _, body = env.http("PUT", f"{gallery_path()}?api-version={GALLERY_API}", {})
    assert status == 400
    assert body["error"]["code"] == "LocationRequired"


def test_gallery_delete_refused_while_images_exist(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    with pytest.raises(HttpResponseError) as err:
        cc.galleries.begin_delete(RG, "gal").result()
    assert err.value.status_code == 409
    assert _code(err.value) == "CannotDeleteResource"
    assert "nested resources" in str(err.value)


# -- image definitions ------------------------------------------------------------------------


def test_image_definition_crud_features_and_paging(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    im = cc.gallery_images.get(RG, "gal", "win11")
    assert im.properties.os_state == "Generalized"
    assert im.properties.hyper_v_generation == "V2"
    assert [(f.name, f.value) for f in im.properties.features] == [
        ("SecurityType", "TrustedLaunchSupported")
    ]
    assert im.properties.identifier.sku == "win11"
    for i, sec in enumerate(["TrustedLaunch", "Standard", None]):
        cc.gallery_images.begin_create_or_update(
            RG, "gal", f"img{i}", image_body(security=sec, sku=f"s{i}")
        ).result()
    assert [x.name for x in cc.gallery_images.list_by_gallery(RG, "gal")] == [
        "img0",
        "img1",
        "img2",
        "win11",
    ]
    updated = cc.gallery_images.begin_update(RG, "gal", "win11", {"tags": {"a": "b"}}).result()
    assert updated.tags == {"a": "b"}
    cc.gallery_images.begin_delete(RG, "gal", "img2").result()
    with pytest.raises(ResourceNotFoundError):
        cc.gallery_images.get(RG, "gal", "img2")


def test_image_definition_rules_are_enforced(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    # Trusted Launch needs a Generation 2 definition.
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_create_or_update(
            RG, "gal", "gen1", image_body(hyper_v="V1", security="TrustedLaunch", sku="g1")
        ).result()
    assert err.value.status_code == 400
    assert "V2" in str(err.value)
    # The identifier is unique within a gallery.
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_create_or_update(RG, "gal", "copy", image_body()).result()
    assert err.value.status_code == 409
    # Immutable properties.
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_create_or_update(
            RG, "gal", "win11", image_body(os_state="Specialized")
        ).result()
    assert err.value.status_code == 409
    assert _code(err.value) == "PropertyChangeNotAllowed"
    # Bad enum value, missing identifier, other region than the gallery.
    bad = image_body(sku="x")
    bad["properties"]["osType"] = "Solaris"
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_create_or_update(RG, "gal", "bad", bad).result()
    assert err.value.status_code == 400
    assert "osType" in str(err.value)
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_create_or_update(
            RG, "gal", "bad", image_body(location="northeurope", sku="y")
        ).result()
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        cc.gallery_images.begin_create_or_update(RG, "nogallery", "x", image_body()).result()


def test_image_delete_refused_while_versions_exist(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    _version(cc, env, "1.0.0", vm, safety={"blockDeletionBeforeEndOfLife": False})
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_images.begin_delete(RG, "gal", "win11").result()
    assert err.value.status_code == 409
    assert _code(err.value) == "CannotDeleteResource"


# -- image versions ---------------------------------------------------------------------------


def test_version_from_generalized_vm_replicates_region_by_region(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True, apps={"7zip": "24.09", "vscode": "1.96"})
    body = version_body(
        {"source": {"virtualMachineId": vm}},
        regions=[{"name": "westeurope"}, {"name": "North Europe", "regionalReplicaCount": 2}],
        exclude_from_latest=True,
        tags={"imagefactory:build-id": "b1"},
    )
    start = env.clock.now()
    env.clock.pause()  # the test moves time itself, ten minutes per look
    cc.gallery_image_versions.begin_create_or_update(
        RG, "gal", "win11", "1.0.0", body, polling=False
    )
    seen: list[tuple[str, str, dict[str, int]]] = []
    for _ in range(100):
        v = cc.gallery_image_versions.get(RG, "gal", "win11", "1.0.0", expand="ReplicationStatus")
        rs = v.properties.replication_status
        seen.append(
            (
                v.properties.provisioning_state,
                rs.aggregated_state,
                {s.region: s.progress for s in rs.summary},
            )
        )
        if v.properties.provisioning_state == "Succeeded":
            break
        step(env, timedelta(minutes=10))
    env.clock.resume()
    assert seen[0][0] == "Creating"
    assert seen[0][1] == "InProgress"
    assert seen[-1][:2] == ("Succeeded", "Completed")
    assert seen[-1][2] == {"West Europe": 100, "North Europe": 100}
    # Progress moved through intermediate values in virtual time, region by region.
    partial = [
        p for _, agg, p in seen if agg == "InProgress" and any(0 < x < 100 for x in p.values())
    ]
    assert partial, seen
    west_done = [p for _, agg, p in seen if agg == "InProgress" and p["West Europe"] == 100]
    assert west_done, "the source region finishes before the others"
    elapsed = env.clock.now() - start
    assert elapsed > timedelta(minutes=20)  # capture + replication take tens of minutes
    # The captured guest travels with the version.
    with env.emu.lock:
        guest = guest_state_for_version(env.emu, v.id)
        assert guest is not None
        assert guest.apps["7zip"] == "24.09"
        assert guest.sysprepped
        assert env.emu.store.meta(v.id)["regions_ready"] == {"westeurope", "northeurope"}
    profile = v.properties.publishing_profile
    assert profile.exclude_from_latest is True
    assert [
        (t.name, t.regional_replica_count, t.exclude_from_latest) for t in profile.target_regions
    ] == [
        ("West Europe", 1, True),
        ("North Europe", 2, True),
    ]
    # api-version 2026-03-03 defaults: end of life in 6 months, deletion blocked before it.
    assert profile.end_of_life_date is not None
    assert timedelta(days=180) < profile.end_of_life_date - start < timedelta(days=186)
    assert v.properties.safety_profile.block_deletion_before_end_of_life is True
    assert v.tags == {"imagefactory:build-id": "b1"}


def test_version_lro_polling_with_the_sdk(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    v = _version(cc, env, "1.0.0", vm, regions=[{"name": "westeurope"}, {"name": "northeurope"}])
    assert v.properties.provisioning_state == "Succeeded"
    listed = list(cc.gallery_image_versions.list_by_gallery_image(RG, "gal", "win11"))
    assert [x.name for x in listed] == ["1.0.0"]


def test_specialized_vm_cannot_be_captured_into_generalized_definition(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=False)
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.0", vm)
    assert err.value.status_code == 400
    assert "different OS state ['Specialized']" in str(err.value)
    assert "['Generalized']" in str(err.value)


def test_hyper_v_generation_mismatch_fails_the_operation(env: Any, cc: Any) -> None:
    _gallery_and_image(cc, image="gen1", hyper_v="V1", security=None, sku="gen1")
    vm = make_vm(env, "build1", generalized=True)  # a Gen2 image
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.0", vm, image="gen1")
    assert "Hypervisor generation ['V2']" in str(err.value)
    v = cc.gallery_image_versions.get(RG, "gal", "gen1", "1.0.0")
    assert v.properties.provisioning_state == "Failed"


def test_trusted_launch_vm_needs_a_trusted_launch_capable_definition(env: Any, cc: Any) -> None:
    _gallery_and_image(cc, image="std", security=None, sku="std")
    vm = make_vm(env, "build1", generalized=True, security_type="TrustedLaunch")
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.0", vm, image="std")
    assert err.value.status_code == 400
    assert "TrustedLaunch" in str(err.value)


def test_versions_from_snapshot_disk_and_other_version(env: Any, cc: Any) -> None:
    _gallery_and_image(cc, image="spec", os_state="Specialized", sku="spec")
    vm = make_vm(env, "host1", apps={"teams": "2"})
    os_disk = cc.virtual_machines.get(RG, "host1").storage_profile.os_disk.managed_disk.id
    snap = cc.snapshots.begin_create_or_update(
        RG,
        "snap1",
        {
            "location": "westeurope",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": os_disk}},
        },
    ).result()
    v1 = cc.gallery_image_versions.begin_create_or_update(
        RG, "gal", "spec", "1.0.0", version_body({"osDiskImage": {"source": {"id": snap.id}}})
    ).result()
    assert v1.properties.storage_profile.os_disk_image.source.id == snap.id
    v2 = cc.gallery_image_versions.begin_create_or_update(
        RG, "gal", "spec", "1.0.1", version_body({"source": {"id": v1.id}})
    ).result()
    assert v2.properties.provisioning_state == "Succeeded"
    v3 = cc.gallery_image_versions.begin_create_or_update(
        RG, "gal", "spec", "1.0.2", version_body({"source": {"virtualMachineId": vm}})
    ).result()
    with env.emu.lock:
        for v in (v1, v2, v3):
            guest = guest_state_for_version(env.emu, v.id)
            assert guest is not None
            assert guest.apps.get("teams") == "2"


def test_version_source_is_immutable(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm1 = make_vm(env, "build1", generalized=True)
    vm2 = make_vm(env, "build2", generalized=True)
    _version(cc, env, "1.0.0", vm1, safety={"blockDeletionBeforeEndOfLife": False})
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.0", vm2)
    assert err.value.status_code == 409
    assert _code(err.value) == "PropertyChangeNotAllowed"
    assert "storageProfile.source.virtualMachineId" in str(err.value)
    # The same source again is an update (here: tags).
    v = _version(cc, env, "1.0.0", vm1, tags={"x": "y"})
    assert v.tags == {"x": "y"}
    assert v.properties.provisioning_state == "Succeeded"


def test_end_of_life_blocks_deletion_until_unblocked(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    eol = (env.clock.now() + timedelta(days=30)).isoformat()
    _version(cc, env, "1.0.0", vm, end_of_life=eol, safety={"blockDeletionBeforeEndOfLife": True})
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_image_versions.begin_delete(RG, "gal", "win11", "1.0.0").result()
    assert err.value.status_code == 409
    assert "end of life" in str(err.value)
    assert "blockDeletionBeforeEndOfLife" in str(err.value)
    v = cc.gallery_image_versions.begin_update(
        RG,
        "gal",
        "win11",
        "1.0.0",
        {"properties": {"safetyProfile": {"blockDeletionBeforeEndOfLife": False}}},
    ).result()
    assert v.properties.safety_profile.block_deletion_before_end_of_life is False
    cc.gallery_image_versions.begin_delete(RG, "gal", "win11", "1.0.0").result()
    with pytest.raises(ResourceNotFoundError):
        cc.gallery_image_versions.get(RG, "gal", "win11", "1.0.0")
    # an end of life in the past is refused at creation
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.1", vm, end_of_life="2020-01-01T00:00:00Z")
    assert err.value.status_code == 400


def test_staged_version_is_excluded_from_latest_and_the_region_flag_wins(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    both = [{"name": "westeurope"}, {"name": "northeurope"}]
    _version(cc, env, "1.0.0", vm, regions=both)
    staged = [{"name": "westeurope"}, {"name": "northeurope", "excludeFromLatest": False}]
    v = _version(cc, env, "1.1.0", vm, regions=staged, exclude_from_latest=True)
    flags = {t.name: t.exclude_from_latest for t in v.properties.publishing_profile.target_regions}
    assert flags == {"West Europe": True, "North Europe": False}
    image_id = v.id.rsplit("/versions/", 1)[0]
    with env.emu.lock:
        assert latest_version(env.emu, image_id, "westeurope")["name"] == "1.0.0"  # type: ignore[index]
        assert latest_version(env.emu, image_id, "northeurope")["name"] == "1.1.0"  # type: ignore[index]
    # Promote: clear the global flag.
    cc.gallery_image_versions.begin_update(
        RG,
        "gal",
        "win11",
        "1.1.0",
        {"properties": {"publishingProfile": {"excludeFromLatest": False}}},
    ).result()
    with env.emu.lock:
        assert latest_version(env.emu, image_id, "westeurope")["name"] == "1.1.0"  # type: ignore[index]


def test_adding_a_region_replicates_and_removal_respects_the_safety_profile(
    env: Any, cc: Any
) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    _version(cc, env, "1.0.0", vm, safety={"allowDeletionOfReplicatedLocations": False})
    env.clock.pause()
    cc.gallery_image_versions.begin_update(
        RG,
        "gal",
        "win11",
        "1.0.0",
        {
            "properties": {
                "publishingProfile": {
                    "targetRegions": [{"name": "westeurope"}, {"name": "northeurope"}]
                }
            }
        },
        polling=False,
    )
    v = cc.gallery_image_versions.get(RG, "gal", "win11", "1.0.0", expand="ReplicationStatus")
    assert v.properties.provisioning_state == "Updating"
    states = {s.region: s.state for s in v.properties.replication_status.summary}
    assert states == {"West Europe": "Completed", "North Europe": "Replicating"}
    env.clock.resume()
    wait_for(
        env,
        lambda: env.emu.store.get(v.id)["properties"]["provisioningState"] == "Succeeded",
        what="replication to the added region",
    )
    with pytest.raises(HttpResponseError) as err:
        cc.gallery_image_versions.begin_update(
            RG,
            "gal",
            "win11",
            "1.0.0",
            {"properties": {"publishingProfile": {"targetRegions": [{"name": "westeurope"}]}}},
        ).result()
    assert err.value.status_code == 409
    assert "allowDeletionOfReplicatedLocations" in str(err.value)


def test_slow_and_failing_regions_by_fault(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    env.emu.faults.add(
        {
            "type": "multiplier",
            "kind": "replication_slow",
            "match": {"region": "northeurope"},
            "factor": 4,
        }
    )
    regions = [{"name": "westeurope"}, {"name": "northeurope"}]
    v = _version(cc, env, "1.0.0", vm, regions=regions)
    with env.emu.lock:
        from emulator.gallery import _runtime

        rt = _runtime(env.emu, v.id)
        assert rt is not None
        west, north = rt.regions["westeurope"], rt.regions["northeurope"]
        assert north.due - north.start > (west.due - west.start) * 2
    env.emu.faults.add(
        {
            "type": "flag",
            "kind": "replication_fails",
            "match": {"region": "northeurope", "version": "1.0.1"},
        }
    )
    with pytest.raises(HttpResponseError) as err:
        _version(cc, env, "1.0.1", vm, regions=regions)
    assert "ReplicationJobsNotCompleted" in str(err.value)
    failed = cc.gallery_image_versions.get(RG, "gal", "win11", "1.0.1", expand="ReplicationStatus")
    assert failed.properties.provisioning_state == "Failed"
    rs = failed.properties.replication_status
    assert rs.aggregated_state == "Failed"
    assert {s.region: s.state for s in rs.summary} == {
        "West Europe": "Completed",
        "North Europe": "Failed",
    }
    assert "injected fault" in next(s.details for s in rs.summary if s.state == "Failed")


def test_vm_created_from_a_version_carries_the_captured_guest(env: Any, cc: Any) -> None:
    from emulator.compute import guest_of

    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True, apps={"notepadplusplus": "8.7"})
    v = _version(cc, env, "1.0.0", vm, safety={"blockDeletionBeforeEndOfLife": False})
    host = cc.virtual_machines.begin_create_or_update(
        RG,
        "host1",
        {
            "location": "westeurope",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
                "storageProfile": {"imageReference": {"id": v.id}},
                "osProfile": {
                    "computerName": "host1",
                    "adminUsername": "a",
                    "adminPassword": "P@ssw0rd!!",
                },
                "networkProfile": {
                    "networkApiVersion": "2020-11-01",
                    "networkInterfaceConfigurations": [
                        {"name": "nic", "properties": {"primary": True}}
                    ],
                },
            },
        },
    ).result()
    with env.emu.lock:
        guest = guest_of(env.emu, host.id)
        assert guest is not None
        assert guest.apps.get("notepadplusplus") == "8.7"


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b["properties"].pop("storageProfile"), 400, "storageProfile"),
        (
            lambda b: b["properties"]["storageProfile"].update(
                {"osDiskImage": {"source": {"id": "/x"}}}
            ),
            400,
            "Only one source",
        ),
        (
            lambda b: b["properties"]["publishingProfile"].update(
                {"targetRegions": [{"name": "mars"}]}
            ),
            400,
            "mars",
        ),
        (
            lambda b: b["properties"]["publishingProfile"].update(
                {"targetRegions": [{"name": "northeurope"}]}
            ),
            400,
            "target regions",
        ),
        (
            lambda b: b["properties"]["publishingProfile"].update({"replicaCount": 0}),
            400,
            "replicaCount",
        ),
        (
            lambda b: b["properties"]["publishingProfile"].update({"endOfLifeDate": "soon"}),
            400,
            "endOfLifeDate",
        ),
        (lambda b: b.update({"location": "northeurope"}), 400, "location"),
    ],
)
def test_bad_version_requests_are_azure_style_4xx(
    env: Any, cc: Any, mutate: Any, status: int, fragment: str
) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    body = version_body({"source": {"virtualMachineId": vm}})
    mutate(body)
    path = f"{gallery_path()}/images/win11/versions/1.0.0?api-version={GALLERY_API}"
    code, _, resp = env.http("PUT", path, body)
    assert code == status, resp
    assert "error" in resp
    assert resp["error"]["code"]
    assert fragment in resp["error"]["message"] + str(resp["error"].get("target"))


def test_version_names_parents_and_expand_are_checked(env: Any, cc: Any) -> None:
    _gallery_and_image(cc)
    vm = make_vm(env, "build1", generalized=True)
    body = version_body({"source": {"virtualMachineId": vm}})
    base = f"{gallery_path()}/images/win11/versions"
    code, _, resp = env.http("PUT", f"{base}/1.0?api-version={GALLERY_API}", body)
    assert code == 400
    assert "Major(int32).Minor(int32).Patch(int32)" in resp["error"]["message"]
    code, _, resp = env.http("PUT", f"{base}/1.0.99999999999?api-version={GALLERY_API}", body)
    assert code == 400
    missing = f"{gallery_path()}/images/nope/versions/1.0.0?api-version={GALLERY_API}"
    code, _, resp = env.http("PUT", missing, body)
    assert code == 404
    assert resp["error"]["code"] == "ParentResourceNotFound"
    absent = f"{gallery_path()}/images/win11/versions/9.9.9"
    code, _, resp = env.http(
        "PUT",
        f"{base}/1.0.0?api-version={GALLERY_API}",
        version_body({"source": {"virtualMachineId": vm + "x"}}),
    )
    assert code == 404
    assert resp["error"]["code"] == "NotFound"
    code, _, resp = env.http("GET", f"{absent}?api-version={GALLERY_API}")
    assert code == 404
    assert resp["error"]["code"] == "ResourceNotFound"
    code, _, _ = env.http("DELETE", f"{absent}?api-version={GALLERY_API}")
    assert code == 204
    _version(cc, env, "1.0.0", vm, safety={"blockDeletionBeforeEndOfLife": False})
    code, _, resp = env.http("GET", f"{base}/1.0.0?api-version={GALLERY_API}&$expand=Everything")
    assert code == 400
    assert "$expand" in resp["error"]["message"]
    code, _, resp = env.http("GET", f"{base}/1.0.0?api-version=1999-01-01")
    assert code == 400
    assert resp["error"]["code"] == "InvalidApiVersionParameter"


def test_seeded_galleries_and_versions(emulator_factory: Any) -> None:
    from tests.emulator.conftest import SMALL_SCENARIO

    scenario = {
        **SMALL_SCENARIO,
        "galleries": [
            {
                "name": "seedgal",
                "resource_group": "rg-seed",
                "location": "westeurope",
                "images": [{"name": "win11", "publisher": "C", "offer": "O", "sku": "S"}],
            }
        ],
        "extensions": {
            "gallery_versions": [
                {
                    "gallery": "seedgal",
                    "image": "win11",
                    "version": "1.0.0",
                    "resource_group": "rg-seed",
                    "regions": ["westeurope", "northeurope"],
                    "apps": ["7zip"],
                }
            ]
        },
    }
    env = emulator_factory(scenario)
    cc = env.compute_client()
    v = cc.gallery_image_versions.get(
        "rg-seed", "seedgal", "win11", "1.0.0", expand="ReplicationStatus"
    )
    assert v.properties.provisioning_state == "Succeeded"
    assert v.properties.replication_status.aggregated_state == "Completed"
    with env.emu.lock:
        guest = guest_state_for_version(env.emu, v.id)
        assert guest is not None
        assert "7zip" in guest.apps
        assert guest.sysprepped
        assert latest_version(env.emu, v.id.rsplit("/versions/", 1)[0], "northeurope") is not None
    im = cc.gallery_images.get("rg-seed", "seedgal", "win11")
    assert im.properties.features[0].value == "TrustedLaunch"


def _nested_scenario(versions: list[Any], extensions: list[Any] | None = None) -> dict[str, Any]:
    from tests.emulator.conftest import SMALL_SCENARIO

    sc: dict[str, Any] = {
        **SMALL_SCENARIO,
        "galleries": [
            {
                "name": "seedgal",
                "resource_group": "rg-seed",
                "location": "westeurope",
                "images": [
                    {
                        "name": "win11",
                        "publisher": "C",
                        "offer": "O",
                        "sku": "S",
                        "versions": versions,
                    }
                ],
            }
        ],
    }
    if extensions is not None:
        sc["extensions"] = {"gallery_versions": extensions}
    return sc


def test_versions_seeded_under_their_image_definition(emulator_factory: Any) -> None:
    env = emulator_factory(
        _nested_scenario(
            [
                {"version": "1.0.0", "regions": ["westeurope", "northeurope"], "apps": ["git"]},
                {
                    "version": "1.1.0",
                    "regions": [{"name": "northeurope", "exclude_from_latest": True}],
                    "tags": {"state": "staged"},
                },
            ],
            # the older list still works beside it
            [
                {
                    "gallery": "seedgal",
                    "image": "win11",
                    "version": "0.9.0",
                    "resource_group": "rg-seed",
                }
            ],
        )
    )
    cc = env.compute_client()
    names = sorted(
        v.name
        for v in cc.gallery_image_versions.list_by_gallery_image("rg-seed", "seedgal", "win11")
    )
    assert names == ["0.9.0", "1.0.0", "1.1.0"]
    v = cc.gallery_image_versions.get("rg-seed", "seedgal", "win11", "1.1.0")
    assert v.tags == {"state": "staged"}
    regions = {
        t.name: t.exclude_from_latest for t in v.properties.publishing_profile.target_regions
    }
    assert set(regions) == {"West Europe", "North Europe"}  # the definition's region added
    image_id = v.id.rsplit("/versions/", 1)[0]
    with env.emu.lock:
        guest = guest_state_for_version(env.emu, f"{image_id}/versions/1.0.0")
        assert guest is not None
        assert "git" in guest.apps
        assert latest_version(env.emu, image_id, "westeurope")["name"] == "1.1.0"  # type: ignore[index]
        assert latest_version(env.emu, image_id, "northeurope")["name"] == "1.0.0"  # type: ignore[index]


@pytest.mark.parametrize(
    ("versions", "extensions", "fragment"),
    [
        ([{"version": "1.0"}], None, "galleries.0.images.0.versions.0.version"),
        ([{"version": "1.0.0", "base": "a:b:c"}], None, "galleries.0.images.0.versions.0.base"),
        ([{"version": "1.0.0"}, {"version": "1.0.0"}], None, "listed twice"),
        ([{"version": "1.0.0", "regios": ["westeurope"]}], None, "versions.0.regios"),
        (
            [{"version": "1.0.0"}],
            [
                {
                    "gallery": "seedgal",
                    "image": "win11",
                    "version": "1.0.0",
                    "resource_group": "rg-seed",
                }
            ],
            "seeded twice",
        ),
        ([], [{"gallery": "seedgal", "version": "1.0.0"}], "extensions.gallery_versions.0.image"),
    ],
    ids=["bad-name", "bad-base", "twice", "unknown-key", "twice-with-extensions", "ext-missing"],
)
def test_bad_seeded_versions_are_refused_naming_the_field(
    emulator_factory: Any, versions: list[Any], extensions: list[Any] | None, fragment: str
) -> None:
    with pytest.raises(ValueError, match="invalid") as err:
        emulator_factory(_nested_scenario(versions, extensions))
    assert fragment in str(err.value)
