"""Gallery activities: definition, version allocation, staged version, replication, clean-up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared import names
from shared.domain.manifest import manifest_from_tags
from shared.domain.resources import TAG_LAST_ALLOCATED
from shared.domain.steps import pre_capture_script
from shared.errors import (
    ConflictError,
    InputError,
    PermanentError,
    TemporaryError,
    classify_failure,
)
from tests.activities.conftest import (
    FACTORY_RG,
    GALLERY_RG,
    activity,
    add_fault,
    ensure,
    plan_for,
    wait_for,
)
from tests.emulator.conftest import EmulatorEnv

BUILD = "win11-office-00c0ffee"
SYSPREP = r"C:\Windows\System32\Sysprep\sysprep.exe /generalize /oobe /shutdown /quiet"
TERMINAL = {"Succeeded", "Failed", "TimedOut", "Canceled"}


def _writes(env: EmulatorEnv, suffix: str) -> int:
    return len(
        [
            e
            for e in env.emu.events.events("Microsoft.Resources.ResourceWriteSuccess")
            if e.subject.lower().endswith(suffix.lower())
        ]
    )


def test_ensure_gallery_image_creates_once_and_then_gets(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    with pytest.raises(TemporaryError) as first:
        activity(names.ACT_ENSURE_GALLERY_IMAGE)({"plan": plan})
    assert "creation started for gallery galFactory and image definition" in str(first.value)
    ids = ensure(plan)
    assert ids["gallery_id"].endswith(
        f"/resourceGroups/{GALLERY_RG}/providers/Microsoft.Compute/galleries/galFactory"
    )
    assert ids["image_definition_id"].endswith("/galleries/galFactory/images/win11-office")
    assert ensure(plan) == ids
    app_env.wait_idle()
    assert _writes(app_env, "/galleries/galFactory") == 1
    assert _writes(app_env, "/galleries/galFactory/images/win11-office") == 1
    definition = app_env.emu.store.get(ids["image_definition_id"])
    assert definition is not None
    features = {f["name"]: f["value"] for f in definition["properties"]["features"]}
    assert features["SecurityType"] == "TrustedLaunchSupported"
    assert definition["properties"]["hyperVGeneration"] == "V2"
    assert definition["properties"]["osState"] == "Generalized"


def test_refused_definition_while_the_gallery_is_created_is_plainly_temporary(
    app_env: EmulatorEnv,
) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    add_fault(
        app_env,
        type="http",
        op="Microsoft.Compute/galleries/images/write",
        status=404,
        code="ParentResourceNotFound",
        message="Gallery galFactory is not ready.",
        count=1,
    )
    with pytest.raises(TemporaryError) as first:
        activity(names.ACT_ENSURE_GALLERY_IMAGE)({"plan": plan})
    text = str(first.value)
    assert text == (
        "TemporaryError: gallery galFactory is still being created; image definition "
        "win11-office not ready: ParentResourceNotFound Gallery galFactory is not ready."
    )
    # Read back across the activity boundary, it is a temporary failure: the retry converges.
    assert classify_failure(f"Activity function 'x' failed: {text}") is TemporaryError
    assert ensure(plan)["image_definition_id"].endswith("/images/win11-office")


def test_existing_definition_with_other_security_is_a_conflict(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    ensure(plan)
    plan["gallery"]["security_type"] = "Standard"
    with pytest.raises(ConflictError) as caught:
        ensure(plan)
    assert "security type" in str(caught.value)


def test_ensure_bad_plan_names_the_field(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    del plan["gallery"]["image_definition"]
    with pytest.raises(InputError) as caught:
        activity(names.ACT_ENSURE_GALLERY_IMAGE)({"plan": plan})
    assert [e.path for e in caught.value.errors] == ["plan.gallery.image_definition"]


def test_allocate_never_reuses_and_replays_the_same(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    ensure(plan)
    allocate = activity(names.ACT_ALLOCATE_VERSION)
    first = allocate({"plan": plan, "build_id": BUILD})["version"]
    assert first == "1.0.0"
    # A retried allocation of the same build gets the same version back.
    assert allocate({"plan": plan, "build_id": BUILD})["version"] == "1.0.0"
    other = plan_for(app_env.subscription, "win11-office-11111111")
    assert allocate({"plan": other, "build_id": "win11-office-11111111"})["version"] == "1.0.1"
    definition_id = ensure(plan)["image_definition_id"]
    tags = app_env.emu.store.get(definition_id)["tags"]  # type: ignore[index]
    assert tags[TAG_LAST_ALLOCATED] == "1.0.1"
    assert tags["imagefactory:allocated-by"] == "win11-office-11111111"


def test_allocate_goes_above_the_recorded_highest(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    definition_id = ensure(plan)["image_definition_id"]
    doc = app_env.emu.store.get(definition_id)
    assert doc is not None
    doc["tags"][TAG_LAST_ALLOCATED] = "1.4.7"  # 1.4.7 was allocated once and since deleted
    assert activity(names.ACT_ALLOCATE_VERSION)({"plan": plan, "build_id": BUILD}) == {
        "version": "1.4.8"
    }
    doc["tags"][TAG_LAST_ALLOCATED] = "garbage"
    with pytest.raises(PermanentError) as caught:
        activity(names.ACT_ALLOCATE_VERSION)({"plan": plan, "build_id": "win11-office-2"})
    assert TAG_LAST_ALLOCATED in str(caught.value)


def _generalized_vm(env: EmulatorEnv, plan: dict[str, Any]) -> str:
    vm_id = str(activity(names.ACT_CREATE_BUILD_VM)({"plan": plan, "build_id": BUILD})["vm_id"])
    state = lambda: activity(names.ACT_GET_VM_STATE)({"vm_id": vm_id})  # noqa: E731
    wait_for(
        state,
        lambda s: (
            s["power_state"] == "PowerState/running" and s["provisioning_state"] == "Succeeded"
        ),
    )
    for name, script in (
        ("guard-bitlocker", plan["guardrail_script"]),
        ("sysprep", [SYSPREP]),
    ):
        activity(names.ACT_START_RUN_COMMAND)({"vm_id": vm_id, "name": name, "script": script})
        if name != "sysprep":
            done = wait_for(
                lambda n=name: activity(names.ACT_GET_RUN_COMMAND)({"vm_id": vm_id, "name": n}),
                lambda s: s["state"] in TERMINAL,
            )
            assert done["state"] == "Succeeded", done
    wait_for(state, lambda s: s["power_state"] in ("PowerState/stopped", "PowerState/deallocated"))
    activity(names.ACT_DEALLOCATE_VM)({"vm_id": vm_id})
    wait_for(state, lambda s: s["power_state"] == "PowerState/deallocated")
    activity(names.ACT_GENERALIZE_VM)({"vm_id": vm_id})
    return vm_id


def _manifest(plan: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "image": plan["image"],
        "version": version,
        "build_id": BUILD,
        "base": plan["source"],
        "catalogue_hash": plan["catalogue_hash"],
        "steps": [
            {
                "name": "step-01",
                "state": "Succeeded",
                "exit_code": 0,
                "kind": "script",
                "content_hash": "ab" * 32,
                "started": "2026-01-05T06:10:00+00:00",
                "ended": "2026-01-05T06:12:00+00:00",
            }
        ],
        "phase_seconds": {"customise": 120.0},
    }


def test_staged_version_from_a_generalized_vm_replicates_everywhere(app_env: EmulatorEnv) -> None:
    plan = plan_for(
        app_env.subscription,
        BUILD,
        guardrail_script=list(pre_capture_script(include_health_check=False)),
        version_tags={"cost-center": "4711"},
    )
    ensure(plan)
    version = activity(names.ACT_ALLOCATE_VERSION)({"plan": plan, "build_id": BUILD})["version"]
    vm_id = _generalized_vm(app_env, plan)
    payload = {
        "plan": plan,
        "build_id": BUILD,
        "version": version,
        "source_vm_id": vm_id,
        "manifest": _manifest(plan, version),
        "built_at": "2026-01-05T07:00:00+00:00",
    }
    created = activity(names.ACT_CREATE_IMAGE_VERSION)(payload)
    version_id = created["version_id"]
    assert version_id.endswith(f"/galleries/galFactory/images/win11-office/versions/{version}")
    # The create operation's status URL, where Azure keeps the error if the create fails.
    assert "/operations/" in str(created["operation_url"])
    # Create-or-get: the retried activity does not send a second PUT (so no new operation).
    assert activity(names.ACT_CREATE_IMAGE_VERSION)(payload) == {"version_id": version_id}

    final = wait_for(
        lambda: activity(names.ACT_GET_IMAGE_VERSION)({"version_id": version_id}),
        lambda s: (
            s["provisioning_state"] == "Succeeded"
            and all(r["state"] == "Completed" for r in s["regions"].values())
        ),
    )
    assert set(final["regions"]) == {"westeurope", "northeurope"}
    assert final["exists"] is True

    doc = app_env.emu.store.get(version_id)
    assert doc is not None
    profile = doc["properties"]["publishingProfile"]
    assert profile["excludeFromLatest"] is True
    assert all(t["excludeFromLatest"] is True for t in profile["targetRegions"])
    assert profile["endOfLifeDate"].startswith("2026-07-04")  # built_at + 180 days
    assert doc["properties"]["safetyProfile"]["allowDeletionOfReplicatedLocations"] is False
    tags = doc["tags"]
    assert tags["imagefactory:state"] == "staged"
    assert tags["imagefactory:build-id"] == BUILD
    assert tags["imagefactory:display-name"] == f"Win11 | Office | v{version} | 2026-01"
    assert tags["imagefactory:base-image-version"] == plan["source"]["version"]
    assert tags["imagefactory:catalogue-hash"] == plan["catalogue_hash"]
    assert tags["imagefactory:owner"] == "team-euc"
    assert tags["cost-center"] == "4711"
    manifest = manifest_from_tags(tags)
    assert manifest.version == version
    assert manifest.steps[0].status == "Succeeded"
    assert tags["imagefactory:manifest-hash"] == manifest.hash


def test_manifest_must_describe_this_version(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    vm = (
        f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}"
        "/providers/Microsoft.Compute/virtualMachines/vm1"
    )
    payload = {"plan": plan, "build_id": BUILD, "version": "1.0.0", "source_vm_id": vm}
    with pytest.raises(InputError) as missing:
        activity(names.ACT_CREATE_IMAGE_VERSION)({**payload, "manifest": {"image": "x"}})
    assert "manifest.version" in [e.path for e in missing.value.errors]
    with pytest.raises(InputError) as wrong:
        activity(names.ACT_CREATE_IMAGE_VERSION)({**payload, "manifest": _manifest(plan, "9.9.9")})
    assert [e.path for e in wrong.value.errors] == ["manifest.version"]
    with pytest.raises(InputError) as bad_version:
        activity(names.ACT_CREATE_IMAGE_VERSION)({**payload, "version": "1.0"})
    assert [e.path for e in bad_version.value.errors] == ["version"]


def _seed_version(env: EmulatorEnv, version: str, **fields: Any) -> str:
    from emulator.gallery import VersionSeed, seed_image_version

    with env.emu.lock:
        doc = seed_image_version(
            env.emu,
            VersionSeed(
                gallery="galFactory",
                image="win11-office",
                resource_group=GALLERY_RG,
                version=version,
                **fields,
            ),
        )
    return str(doc["id"])


def test_existing_version_is_this_builds_only_by_its_tag(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    ensure(plan)
    _seed_version(app_env, "1.0.0")  # made by hand, untagged
    _seed_version(app_env, "1.0.1", tags={"imagefactory:build-id": "win11-office-11111111"})
    vm = (
        f"/subscriptions/{app_env.subscription}/resourceGroups/{FACTORY_RG}"
        "/providers/Microsoft.Compute/virtualMachines/vm1"
    )
    for version, reason in (
        ("1.0.0", "without an imagefactory:build-id tag"),
        ("1.0.1", "belongs to build win11-office-11111111"),
    ):
        with pytest.raises(ConflictError) as caught:
            activity(names.ACT_CREATE_IMAGE_VERSION)(
                {
                    "plan": plan,
                    "build_id": BUILD,
                    "version": version,
                    "source_vm_id": vm,
                    "manifest": _manifest(plan, version),
                }
            )
        assert reason in str(caught.value)


def test_a_failed_build_deletes_only_its_own_staged_version(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    ensure(plan)
    staged = {"imagefactory:build-id": BUILD, "imagefactory:state": "staged"}
    eol = datetime(2026, 7, 1, tzinfo=UTC)  # the emulator's clock starts 2026-01-05
    own = _seed_version(app_env, "1.0.0", tags=staged, exclude_from_latest=True)
    active = _seed_version(app_env, "1.0.1", tags={**staged, "imagefactory:state": "active"})
    foreign = _seed_version(app_env, "1.0.2", tags={**staged, "imagefactory:build-id": "b-other"})
    blocked = _seed_version(
        app_env, "1.0.3", tags=staged, end_of_life=eol, block_deletion_before_end_of_life=True
    )
    delete = activity(names.ACT_DELETE_RESOURCE)
    state = activity(names.ACT_GET_RESOURCE_STATE)
    assert state({"resource_id": own}) == {
        "exists": True,
        "provisioning_state": "Succeeded",
        "error": None,
    }
    for version_id, build_id, reason in (
        (own, None, "build_id is missing"),
        (active, BUILD, "'active', not 'staged'"),
        (foreign, BUILD, "built by build b-other"),
        (blocked, BUILD, "blockDeletionBeforeEndOfLife is true"),
    ):
        with pytest.raises(PermanentError) as caught:
            delete({"resource_id": version_id, "build_id": build_id})
        assert reason in str(caught.value)
        assert str(caught.value).startswith("PermanentError: gallery version ")
    assert delete({"resource_id": own, "build_id": BUILD}) == {"deleted": True}
    wait_for(lambda: state({"resource_id": own}), lambda s: not s["exists"])
    assert delete({"resource_id": own, "build_id": BUILD}) == {"deleted": False}
    for kept in (active, foreign, blocked):
        assert state({"resource_id": kept})["exists"] is True


def test_get_image_version_of_a_missing_version(app_env: EmulatorEnv) -> None:
    plan = plan_for(app_env.subscription, BUILD)
    definition_id = ensure(plan)["image_definition_id"]
    state = activity(names.ACT_GET_IMAGE_VERSION)({"version_id": f"{definition_id}/versions/9.9.9"})
    assert state["exists"] is False
    assert state["regions"] == {}
    with pytest.raises(InputError) as caught:
        activity(names.ACT_GET_IMAGE_VERSION)({"version_id": definition_id})
    assert caught.value.errors[0].path == "version_id"


def test_failed_replication_shows_per_region(app_env: EmulatorEnv) -> None:
    plan = plan_for(
        app_env.subscription,
        BUILD,
        guardrail_script=list(pre_capture_script(include_health_check=False)),
    )
    ensure(plan)
    add_fault(app_env, type="flag", kind="replication_fails", match={"region": "northeurope"})
    version = activity(names.ACT_ALLOCATE_VERSION)({"plan": plan, "build_id": BUILD})["version"]
    vm_id = _generalized_vm(app_env, plan)
    created = activity(names.ACT_CREATE_IMAGE_VERSION)(
        {
            "plan": plan,
            "build_id": BUILD,
            "version": version,
            "source_vm_id": vm_id,
            "manifest": _manifest(plan, version),
        }
    )
    poll = {"version_id": created["version_id"], "operation_url": created["operation_url"]}
    final = wait_for(
        lambda: activity(names.ACT_GET_IMAGE_VERSION)(poll),
        lambda s: s["provisioning_state"] == "Failed",
    )
    assert final["regions"]["northeurope"]["details"]
    assert final["aggregated_state"] == "Failed", final
    # The create operation's error, in Azure's words (code: message).
    assert str(final["error"]).startswith(
        "ReplicationJobsNotCompleted: Replication job not completed at region: 'North Europe'."
    ), final
