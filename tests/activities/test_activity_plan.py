"""resolve_build_plan: catalogue + settings + the marketplace into an exact, named plan."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared import names
from shared.domain.naming import build_resource_names
from shared.domain.steps import content_hash
from shared.errors import ConflictError, InputError, NotFoundError, TemporaryError
from shared.settings import Settings
from tests.activities.conftest import WIN11_LATEST, activity, ensure, point_app_at
from tests.emulator.conftest import EmulatorEnv, EmulatorFactory

BUILD = "win11-office-1a2b3c4d"
SUBNET = (
    "/subscriptions/{subscription}/resourceGroups/rg-net/providers/"
    "Microsoft.Network/virtualNetworks/vnet/subnets/build"
)


def write_catalogue(directory: Path, subscription: str, **marketplace: str) -> Path:
    source = {
        "publisher": "MicrosoftWindowsDesktop",
        "offer": "windows-11",
        "sku": "win11-25h2-avd",
        "version": "latest",
        **marketplace,
    }
    subnet = SUBNET.format(subscription=subscription)
    text = f"""
images:
  - name: win11-office
    os: Win11
    workload: Office
    owner: avd-platform@contoso.com
    description: Knowledge-worker desktop.
    source:
      marketplace:
        publisher: {source["publisher"]}
        offer: {source["offer"]}
        sku: {source["sku"]}
        version: "{source["version"]}"
    gallery:
      resource_group: rg-gallery
      gallery_name: galFactory
      image_definition: win11-office
      publisher: Contoso
      offer: avd-win11
      sku: office
    build:
      vm_size: Standard_D4s_v5
      subnet_id: {subnet}
      location: westeurope
      resource_group: rg-image-factory
      timeout_minutes: 120
      sysprep_timeout_minutes: 45
      min_free_disk_gb: 25
    steps:
      - kind: install_app
        package: vcredist140
        manager: choco
      - kind: script
        name: hello
        lines:
          - Write-Output 'hello'
    target_regions:
      - name: westeurope
        replica_count: 2
      - name: northeurope
    naming:
      tags:
        cost-center: "4711"
    retention:
      end_of_life_days: 90
"""
    path = directory / "images.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def catalogue_env(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> EmulatorEnv:
    path = write_catalogue(tmp_path, emulator_env.subscription)
    point_app_at(emulator_env, monkeypatch, IMAGE_CATALOGUE_PATH=str(path))
    return emulator_env


def _resolve(**payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": "win11-office", "build_id": BUILD, "request": {}}
    body.update(payload)
    return activity(names.ACT_RESOLVE_BUILD_PLAN)(body)


def test_latest_marketplace_resolves_to_the_exact_newest(catalogue_env: EmulatorEnv) -> None:
    plan = _resolve(request={"key": "k1", "reason": "test"})
    assert plan["source"] == {
        "kind": "marketplace",
        "publisher": "MicrosoftWindowsDesktop",
        "offer": "windows-11",
        "sku": "win11-25h2-avd",
        "version": WIN11_LATEST,
        "image_version_id": None,
        "snapshot_source_id": None,
    }
    assert plan["base_version"] == WIN11_LATEST
    assert plan["resource_group"] == "rg-image-factory"
    assert plan["location"] == "westeurope"
    assert plan["gallery"]["name"] == "galFactory"
    assert plan["gallery"]["security_type"] == "TrustedLaunchSupported"
    assert plan["gallery"]["location"] == "westeurope"
    assert plan["names"] == build_resource_names("win11-office", BUILD).to_dict()
    assert plan["timeout_minutes"] == 120
    assert plan["sysprep_timeout_minutes"] == 45
    assert plan["min_free_disk_gb"] == 25
    assert (plan["os"], plan["workload"], plan["owner"]) == (
        "Win11",
        "Office",
        "avd-platform@contoso.com",
    )
    assert plan["end_of_life_days"] == 90
    assert plan["version_tags"] == {"cost-center": "4711"}
    assert [r["name"] for r in plan["target_regions"]] == ["westeurope", "northeurope"]
    assert plan["target_regions"][0]["replica_count"] == 2
    assert [s["name"] for s in plan["steps"]] == ["install-vcredist140", "hello"]
    for step in plan["steps"]:
        assert step["content_hash"] == content_hash(step["script"])
    assert any("Disable-BitLocker" in line for line in plan["guardrail_script"])
    assert any("PreventDeviceEncryption" in line for line in plan["guardrail_script"])
    assert plan["health_script"]
    assert len(plan["sysprep_script"]) == 1
    assert "/generalize /oobe /shutdown" in plan["sysprep_script"][0]
    assert len(plan["catalogue_hash"]) == 64


DOC = Path(__file__).resolve().parents[2] / "docs" / "build-activities.md"


def _documented_plan_fields() -> dict[str, set[str]]:
    """The plan table in docs/build-activities.md: field -> its sub-fields (empty if none)."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("`plan` fields", 1)[1].split("Activities validate it", 1)[0]
    fields: dict[str, set[str]] = {}
    for row in table.splitlines()[3:]:
        if not row.startswith("| "):
            continue
        first = row.split(" | ", 1)[0]
        for name, inner in re.findall(r"`([a-z_]+)(?: \[?\{([^}]*)\}\]?)?`", first):
            fields[name] = {f.strip() for f in inner.split(",") if f.strip() not in ("", "…")}
    return fields


def test_the_plan_is_exactly_what_the_contract_documents(catalogue_env: EmulatorEnv) -> None:
    """Every documented field is filled, and nothing undocumented is (the doc stays true)."""
    plan = _resolve()
    documented = _documented_plan_fields()
    assert set(plan) == set(documented)
    for name, inner in documented.items():
        value = plan[name]
        item = value[0] if isinstance(value, list) and value else value
        if inner and name != "version_tags":
            assert set(item) == inner, name


def test_same_inputs_same_plan(catalogue_env: EmulatorEnv) -> None:
    assert _resolve() == _resolve()


def test_request_base_version_pin_is_honoured(catalogue_env: EmulatorEnv) -> None:
    plan = _resolve(request={"base_version": "26200.7171.251105"})
    assert plan["source"]["version"] == "26200.7171.251105"
    with pytest.raises(NotFoundError) as caught:
        _resolve(request={"base_version": "26200.1.1"})
    assert "26200.1.1" in str(caught.value)


def test_catalogue_pin_wins_and_a_different_request_is_refused(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_catalogue(tmp_path, emulator_env.subscription, version="26200.7171.251105")
    point_app_at(emulator_env, monkeypatch, IMAGE_CATALOGUE_PATH=str(path))
    assert _resolve()["source"]["version"] == "26200.7171.251105"
    with pytest.raises(ConflictError):
        _resolve(request={"base_version": WIN11_LATEST})


def test_signal_url_makes_sysprep_post_the_finished_event(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_catalogue(tmp_path, emulator_env.subscription)
    point_app_at(
        emulator_env,
        monkeypatch,
        IMAGE_CATALOGUE_PATH=str(path),
        SYSPREP_SIGNAL_URL="https://127.0.0.1:9/api/sysprep",
    )
    plan = _resolve()
    script = plan["sysprep_script"]
    assert "/quit" in script[0]
    assert script[1] == "try {"  # the signal is a hint: a refused post never fails sysprep
    post = script[2]
    assert post.startswith("Invoke-RestMethod -Method Post -Uri 'https://127.0.0.1:9/api/sysprep'")
    assert "Authorization" not in post
    assert names.EG_SYSPREP_FINISHED in post
    assert f'"build_id":"{BUILD}"' in post
    assert "/virtualMachines/vm-win11-office-1a2b3c4d" in post
    assert script[-1] == "Stop-Computer -Force"
    assert plan["build_vm_identity_id"] is None


IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-image-factory"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-build-vm"
)


def test_an_identity_makes_sysprep_publish_to_the_topic_with_an_imds_token(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_catalogue(tmp_path, emulator_env.subscription)
    point_app_at(
        emulator_env,
        monkeypatch,
        IMAGE_CATALOGUE_PATH=str(path),
        SYSPREP_SIGNAL_URL="https://127.0.0.1:9/api/sysprep",  # the identity path wins
        EVENTGRID_TOPIC_ENDPOINT="https://127.0.0.1:9/api/events",
        BUILD_VM_IDENTITY_ID=IDENTITY,
    )
    plan = _resolve()
    assert plan["build_vm_identity_id"] == IDENTITY
    script = plan["sysprep_script"]
    assert script[2].startswith(
        "$imds = Invoke-RestMethod -Method Get -Uri 'http://169.254.169.254/"
    )
    assert "msi_res_id=" + IDENTITY in script[2]
    assert script[3].startswith(
        "Invoke-RestMethod -Method Post -Uri 'https://127.0.0.1:9/api/events'"
    )
    assert 'Authorization="Bearer $($imds.access_token)"' in script[3]
    assert names.EG_SYSPREP_FINISHED in script[3]


def test_a_malformed_identity_setting_is_refused_naming_it() -> None:
    env = {"AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001"}
    with pytest.raises(InputError) as caught:
        Settings.from_env({**env, "BUILD_VM_IDENTITY_ID": "id-build-vm"})
    assert caught.value.errors[0].path == "BUILD_VM_IDENTITY_ID"
    assert Settings.from_env({**env, "BUILD_VM_IDENTITY_ID": IDENTITY}).build_vm_identity_id == (
        IDENTITY
    )


def test_unknown_image_is_not_found_by_name(catalogue_env: EmulatorEnv) -> None:
    with pytest.raises(NotFoundError) as caught:
        _resolve(image="no-such-image")
    assert "no-such-image" in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"image": ""}, "image"),
        ({"build_id": "has spaces"}, "build_id"),
        ({"request": {"base_version": 5}}, "request.base_version"),
    ],
)
def test_bad_input_names_the_field(
    catalogue_env: EmulatorEnv, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(InputError) as caught:
        _resolve(**payload)
    assert field in [e.path for e in caught.value.errors]


def test_relative_catalogue_path_is_read_from_the_app_root(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repository's own catalogue, by the default relative path.
    point_app_at(emulator_env, monkeypatch, IMAGE_CATALOGUE_PATH="catalogue/images.yaml")
    plan = _resolve()
    assert plan["image"] == "win11-office"
    assert plan["source"]["version"] == WIN11_LATEST


def test_throttled_marketplace_is_temporary(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = emulator_factory(retry_after="seconds")
    point_app_at(
        env, monkeypatch, IMAGE_CATALOGUE_PATH=str(write_catalogue(tmp_path, env.subscription))
    )
    env.admin("POST", "faults", {"type": "http", "status": 429, "retry_after": 12, "count": 1})
    with pytest.raises(TemporaryError) as caught:
        _resolve()
    assert caught.value.retry_after == 12


def _repo_plan(image: str) -> dict[str, Any]:
    return activity(names.ACT_RESOLVE_BUILD_PLAN)({"image": image, "build_id": f"{image}-0a0b0c0d"})


def test_gallery_version_latest_resolves_to_the_newest_not_excluded(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emulator.gallery import VersionSeed, seed_image_version

    point_app_at(emulator_env, monkeypatch, IMAGE_CATALOGUE_PATH="catalogue/images.yaml")
    # win11-analyst is layered on the latest win11-office version in the same gallery.
    with pytest.raises(NotFoundError):
        _repo_plan("win11-analyst")  # no gallery, no versions yet
    ensure(_repo_plan("win11-office"))
    emu = emulator_env.emu
    with emu.lock:
        for version, excluded in (("1.0.0", False), ("1.2.0", False), ("1.10.0", True)):
            seed_image_version(
                emu,
                VersionSeed(
                    gallery="gal_avd_images",
                    image="win11-office",
                    version=version,
                    resource_group="rg-avd-images",
                    exclude_from_latest=excluded,
                ),
            )
    plan = _repo_plan("win11-analyst")
    assert plan["source"]["kind"] == "gallery_version"
    # 1.10.0 is staged (excluded from latest); numerically 1.2.0 beats 1.0.0.
    assert plan["source"]["image_version_id"].endswith("/images/win11-office/versions/1.2.0")
    assert plan["base_version"] == "1.2.0"
    pinned = activity(names.ACT_RESOLVE_BUILD_PLAN)(
        {"image": "win11-analyst", "build_id": "b-1", "request": {"base_version": "1.10.0"}}
    )
    assert pinned["source"]["image_version_id"].endswith("/versions/1.10.0")


def test_snapshot_source_resolves_the_session_hosts_os_disk(
    emulator_env: EmulatorEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emulator.compute import seed_vm

    point_app_at(emulator_env, monkeypatch, IMAGE_CATALOGUE_PATH="catalogue/images.yaml")
    with pytest.raises(NotFoundError) as missing:
        _repo_plan("win11-dev")
    assert "avd-dev-0" in str(missing.value)
    with emulator_env.emu.lock:
        seed_vm(
            emulator_env.emu,
            subscription=emulator_env.subscription,
            resource_group="rg-avd-dev",
            name="avd-dev-0",
            location="westeurope",
            image_reference={
                "publisher": "MicrosoftWindowsDesktop",
                "offer": "windows-11",
                "sku": "win11-25h2-avd",
                "version": WIN11_LATEST,
            },
        )
    plan = _repo_plan("win11-dev")
    assert plan["source"]["kind"] == "snapshot"
    assert (
        "/resourceGroups/rg-avd-dev/providers/Microsoft.Compute/disks/"
        in (plan["source"]["snapshot_source_id"])
    )
    assert plan["min_free_disk_gb"] == 20
