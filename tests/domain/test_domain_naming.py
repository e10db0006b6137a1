"""Naming standard and deterministic, ARM-valid names for temporary build resources."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.domain.naming import (
    GENERATED_NAME_PREFIXES,
    build_id_from_resource_name,
    build_resource_names,
    build_resource_tags,
    build_token,
    computer_name,
    display_name,
    is_valid_name,
    step_run_command,
    version_tags,
)
from shared.domain.resources import (
    DISK_TYPE,
    NIC_TYPE,
    TAG_BASE_IMAGE,
    TAG_BASE_IMAGE_VERSION,
    TAG_DISPLAY_NAME,
)
from shared.domain.versions import ImageVersion, VersionState
from shared.errors import InputError

BUILT = datetime(2025, 1, 31, 23, 30, tzinfo=UTC)


def test_display_name_follows_the_standard() -> None:
    assert display_name("Win11", "Office", "1.3.0", BUILT) == "Win11 | Office | v1.3.0 | 2025-01"
    assert display_name("Win11", "Office", ImageVersion(2, 0, 10), BUILT).endswith(
        "v2.0.10 | 2025-01"
    )


def test_display_name_month_is_utc() -> None:
    local = datetime(2025, 2, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))  # 2025-01-31 23:00Z
    assert display_name("Win11", "Office", "1.0.0", local).endswith("| 2025-01")


def test_display_name_refuses_naive_times_and_separators() -> None:
    with pytest.raises(InputError) as info:
        display_name("Win11", "Office", "1.0.0", datetime(2025, 1, 1))  # noqa: DTZ001
    assert info.value.errors[0].path == "built"
    with pytest.raises(InputError) as info:
        display_name("Win11", "Office | Dev", "1.0.0", BUILT)
    assert info.value.errors[0].path == "workload"
    with pytest.raises(InputError):
        display_name("Win11", "Office", "1.0", BUILT)


IDS = [
    "win11-office-1a2b3c4d",
    "a" * 40 + "-1a2b3c4d",
    "Win11_Office:build#7",
    "9-starts-with-digit",
    "x",
    "build-" + "x" * 200,
    "---",
    "ÄÖÜ-unicode",
]


@pytest.mark.parametrize("build_id", IDS)
def test_generated_names_are_valid_and_deterministic(build_id: str) -> None:
    names = build_resource_names("win11-office", build_id)
    assert names == build_resource_names("win11-office", build_id)
    assert is_valid_name("vm", names.vm)
    assert is_valid_name("vm", names.clone_vm)
    assert is_valid_name("computer_name", names.computer_name)
    assert len(names.computer_name) <= 15
    for nic in (names.nic, names.clone_nic):
        assert is_valid_name("nic", nic)
    for disk in (names.os_disk, names.clone_disk):
        assert is_valid_name("disk", disk)
    assert is_valid_name("snapshot", names.snapshot)
    values = list(names.to_dict().values())
    assert len(set(values)) == len(values)
    for value in values:
        assert value == value.lower()
        assert value[0].isalpha()
        assert value[-1].isalnum()
    generated = [v for k, v in names.to_dict().items() if k != "computer_name"]
    assert sorted(p for v in generated for p in GENERATED_NAME_PREFIXES if v.startswith(p)) == (
        sorted(GENERATED_NAME_PREFIXES)
    )


def test_different_builds_get_different_names() -> None:
    a = build_resource_names("win11-office", "win11-office-1a2b3c4d")
    b = build_resource_names("win11-office", "win11-office-1a2b3c4e")
    assert a.vm != b.vm
    assert a.computer_name != b.computer_name
    # Lossy slugs of different ids still differ (the hash of the original is kept).
    assert build_token("Build_1") != build_token("build-1")


def test_queue_made_build_ids_round_trip_through_resource_names() -> None:
    build_id = "win11-office-1a2b3c4d"
    names = build_resource_names("win11-office", build_id)
    assert names.vm == "vm-win11-office-1a2b3c4d"
    for name in (names.vm, names.clone_vm, names.nic, names.os_disk, names.snapshot):
        assert build_id_from_resource_name(name) == build_id
    assert build_id_from_resource_name("VM-WIN11-OFFICE-1A2B3C4D") == build_id
    assert build_id_from_resource_name("avd-dev-0") is None
    assert build_id_from_resource_name("vm-") is None
    assert build_id_from_resource_name("vm-bad_name") is None


def test_only_what_azure_creates_untagged_is_listed_by_exact_name() -> None:
    names = build_resource_names("win11-office", "win11-office-1a2b3c4d")
    untagged = names.created_untagged()
    assert set(untagged) == {NIC_TYPE, DISK_TYPE}
    assert untagged[DISK_TYPE] == {"osdisk-win11-office-1a2b3c4d"}
    assert untagged[NIC_TYPE] == {
        "nic-win11-office-1a2b3c4d",
        "vm-win11-office-1a2b3c4d-nic-win11-office-1a2b3c4d",
        "nicclone-win11-office-1a2b3c4d",
        "vmclone-win11-office-1a2b3c4d-nicclone-win11-office-1a2b3c4d",
    }
    # VMs, snapshots and copied disks are always created tagged: never matched by name.
    everything = {n for group in untagged.values() for n in group}
    assert not {names.vm, names.clone_vm, names.snapshot, names.clone_disk} & everything


def test_long_or_odd_build_ids_are_shortened_with_a_hash() -> None:
    token = build_token("build-" + "x" * 200)
    assert len(token) <= 52
    assert token.rsplit("-", 1)[1].isalnum()
    assert build_token("Win11_Office:build#7").startswith("win11-office-build-7-")
    with pytest.raises(InputError):
        build_token("  ")


def test_computer_name_rules() -> None:
    assert computer_name("win11-office", "b") == computer_name("win11-office", "b")
    assert computer_name("win11-office", "b").startswith("win11o-")
    assert computer_name("9lives", "b").startswith("b9live-")
    assert not computer_name("123", "b").replace("-", "").isdigit()


@pytest.mark.parametrize(
    ("kind", "name", "ok"),
    [
        ("vm", "vm-1", True),
        ("vm", "a" * 64, True),
        ("vm", "a" * 65, False),
        ("vm", "vm.1", False),  # Windows VMs: no period
        ("vm", "vm-", False),
        ("vm", "-vm", False),
        ("vm", "vm_", True),
        ("computer_name", "win11o-1a2b3c4d", True),
        ("computer_name", "a" * 16, False),
        ("computer_name", "12345", False),  # not only digits
        ("computer_name", "abc_def", False),
        ("nic", "nic.1", True),
        ("nic", "a" * 81, False),
        ("disk", "osdisk.1", False),
        ("disk", "osdisk-1", True),
        ("snapshot", "snap.1", True),
        ("snapshot", "snap-", False),
        ("run_command", "step-01", True),
        ("run_command", "", False),
    ],
)
def test_validity_rules(kind: str, name: str, ok: bool) -> None:
    assert is_valid_name(kind, name) is ok  # type: ignore[arg-type]


def test_step_run_command_names() -> None:
    assert step_run_command(1) == "step-01"
    assert step_run_command(12) == "step-12"
    assert step_run_command(120) == "step-120"
    assert step_run_command(3, "win11-office-1a2b3c4d") == "step-03-win11-office-1a2b3c4d"
    for build_id in IDS:
        name = step_run_command(999, build_id)
        assert is_valid_name("run_command", name), name
        assert len(name) <= 64  # the start_run_command activity's own limit
        assert name.startswith("step-999-")
    for bad in (0, 1000):
        with pytest.raises(InputError) as caught:
            step_run_command(bad)
        assert caught.value.errors[0].path == "index"


STANDARD = {
    "image": "win11-office",
    "owner": "avd@contoso.com",
    "os_name": "Win11",
    "workload": "Office",
}


def test_version_tags_record_the_requester() -> None:
    tags = version_tags(
        **STANDARD,
        version="1.3.0",
        build_id="b-1",
        built=BUILT,
        catalogue_hash="ab" * 32,
        base_image="p/o/s",
        requested_by="  alice@contoso.com ",
    )
    assert tags["imagefactory:requested-by"] == "alice@contoso.com"


def test_version_tags() -> None:
    tags = version_tags(
        **STANDARD,
        version="1.3.0",
        build_id="win11-office-1a2b3c4d",
        built=BUILT,
        catalogue_hash="ab" * 32,
        base_image="p/o/s",
        base_version="26200.7171.251105",
        extra={"cost-center": "4711", "imagefactory:state": "not this"},
    )
    assert tags == {
        "cost-center": "4711",
        "imagefactory:image": "win11-office",
        "imagefactory:state": "staged",
        "imagefactory:build-id": "win11-office-1a2b3c4d",
        "imagefactory:owner": "avd@contoso.com",
        "imagefactory:os": "Win11",
        "imagefactory:workload": "Office",
        "imagefactory:display-name": "Win11 | Office | v1.3.0 | 2025-01",
        "imagefactory:built": "2025-01-31T23:30:00+00:00",
        "imagefactory:catalogue-hash": "ab" * 32,
        "imagefactory:base-image": "p/o/s",
        "imagefactory:base-image-version": "26200.7171.251105",
        "imagefactory:requested-by": "imagefactory",  # nobody named: the app's own build
    }


def test_version_tags_shorten_long_base_ids_and_honour_state() -> None:
    long_id = "/subscriptions/s/" + "x" * 400
    tags = version_tags(
        **STANDARD,
        version="2.0.0",
        build_id="b",
        built=BUILT,
        catalogue_hash="c",
        base_image=long_id,
        state=VersionState.ACTIVE,
    )
    assert len(tags[TAG_BASE_IMAGE]) <= 256
    assert tags[TAG_BASE_IMAGE].endswith("x" * 200)
    assert TAG_BASE_IMAGE_VERSION not in tags
    assert tags["imagefactory:state"] == "active"
    assert tags[TAG_DISPLAY_NAME] == "Win11 | Office | v2.0.0 | 2025-01"
    given = version_tags(
        **STANDARD,
        version="2.0.0",
        build_id="b",
        built=BUILT,
        catalogue_hash="c",
        base_image="p/o/s",
        display="Win11 | Office | v2.0.0 | pilot",
    )
    assert given[TAG_DISPLAY_NAME] == "Win11 | Office | v2.0.0 | pilot"


def test_build_resource_tags() -> None:
    assert build_resource_tags("win11-office", "b-1", "build-vm") == {
        "imagefactory:image": "win11-office",
        "imagefactory:build-id": "b-1",
        "imagefactory:role": "build-vm",
    }
