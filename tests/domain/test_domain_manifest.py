"""Build manifests: JSON round trip, compact tags within Azure's limits, diffs between versions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.manifest import (
    MAX_MANIFEST_PARTS,
    BaseImage,
    BuildManifest,
    StepRecord,
    diff_manifests,
    manifest_from_tags,
    manifest_tags,
)
from shared.domain.resources import MAX_TAG_VALUE, TAG_MANIFEST_HASH, TAG_MANIFEST_PARTS
from shared.errors import InputError, PermanentError

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MARKETPLACE = BaseImage(
    kind="marketplace",
    publisher="MicrosoftWindowsDesktop",
    offer="windows-11",
    sku="win11-25h2-avd",
    version="26200.7171.251105",
)


def step(name: str, content: str, minutes: int = 0, kind: str = "script") -> StepRecord:
    return StepRecord(
        name=name,
        kind=kind,
        content_hash=content * 64 if len(content) == 1 else content,
        started=T0 + timedelta(minutes=minutes),
        ended=T0 + timedelta(minutes=minutes + 3),
        status="Succeeded",
        exit_code=0,
    )


def manifest(**changes: Any) -> BuildManifest:
    base = BuildManifest(
        image="win11-office",
        version="1.3.0",
        build_id="win11-office-1a2b3c4d",
        base=MARKETPLACE,
        catalogue_hash="c" * 64,
        steps=(
            step("windows-update", "a"),
            step("restart", "b", 40),
            step("install-7zip", "d", 45),
        ),
        tools={"7zip": "23.01", "vlc": "3.0.20"},
        phase_seconds={"plan": 2.0, "customise": 3100.5, "sysprep": 600.25},
        created=T0 + timedelta(hours=2),
    )
    return replace(base, **changes)


def test_json_round_trip_is_exact() -> None:
    original = manifest()
    text = original.to_json()
    assert BuildManifest.from_json(text) == original
    assert BuildManifest.from_json(text.encode()) == original
    assert json.loads(text)["schema"] == 1
    assert " " not in text.replace("Succeeded", "")  # compact, canonical


def test_hash_is_stable_and_content_sensitive() -> None:
    assert manifest().hash == manifest().hash
    assert len(manifest().hash) == 64
    assert manifest(tools={"7zip": "24.08"}).hash != manifest().hash


def test_reads_the_build_orchestrators_shape() -> None:
    data = {
        "image": "win11-office",
        "version": "1.3.0",
        "build_id": "b-1",
        "base": {
            "kind": "gallery_version",
            "image_version_id": "/subscriptions/s/.../versions/1.2.0",
            "version": None,
            "publisher": None,
        },
        "catalogue_hash": "c" * 64,
        "steps": [
            {
                "name": "step-one",
                "state": "Succeeded",
                "exit_code": 0,
                "started": "2026-01-05T06:00:00+00:00",
                "ended": "2026-01-05T06:03:00+00:00",
                "kind": "script",
                "content_hash": "a" * 64,
            }
        ],
        "phase_seconds": {"plan": 1.5},
    }
    parsed = BuildManifest.from_dict(data)
    assert parsed.base.source_id == "/subscriptions/s/.../versions/1.2.0"
    assert parsed.steps[0].status == "Succeeded"
    assert parsed.steps[0].started == T0
    assert parsed.tools == {}
    assert parsed.created is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"image": ""}, "image"),
        ({"base": {}}, "base.kind"),
        ({"steps": [{"name": "s", "started": "2026-01-05T06:00:00"}]}, "steps[0].started"),
        ({"phase_seconds": {"plan": "slow"}}, "phase_seconds.plan"),
        ({"schema": 2}, "schema"),
    ],
)
def test_invalid_manifests_name_the_field(change: dict[str, Any], path: str) -> None:
    data = json.loads(manifest().to_json())
    data.update(change)
    with pytest.raises(InputError) as info:
        BuildManifest.from_dict(data)
    assert path in [e.path for e in info.value.errors]


def test_not_json() -> None:
    with pytest.raises(InputError, match="not JSON"):
        BuildManifest.from_json("{")
    with pytest.raises(InputError, match="must be a JSON object"):
        BuildManifest.from_json("[]")


def test_tags_round_trip_within_azure_limits() -> None:
    original = manifest()
    tags = manifest_tags(original)
    assert all(len(v) <= MAX_TAG_VALUE for v in tags.values())
    assert tags[TAG_MANIFEST_HASH] == original.hash
    parts = int(tags[TAG_MANIFEST_PARTS])
    assert set(tags) == {
        TAG_MANIFEST_HASH,
        TAG_MANIFEST_PARTS,
        *(f"imagefactory:manifest-{i:02d}" for i in range(parts)),
    }
    assert manifest_from_tags(tags) == original
    # Tag keys come back from Azure in any case.
    assert manifest_from_tags({k.upper(): v for k, v in tags.items()}) == original


def test_a_large_manifest_is_split_over_several_tags() -> None:
    many = tuple(step(f"step-{i:02d}", f"{i:064x}", i) for i in range(50))
    tools = {f"app-{i:03d}": f"{i}.{i * 7 % 13}.{i * 3}" for i in range(150)}
    big = manifest(steps=many, tools=tools)
    tags = manifest_tags(big)
    assert 1 < int(tags[TAG_MANIFEST_PARTS]) <= MAX_MANIFEST_PARTS
    assert manifest_from_tags(tags) == big


def test_too_large_for_the_free_tags_is_a_permanent_error() -> None:
    many = tuple(step(f"step-{i:02d}", f"{i:064x}", i) for i in range(50))
    with pytest.raises(PermanentError, match="only 1 are free"):
        manifest_tags(manifest(steps=many), max_parts=1)
    with pytest.raises(InputError):
        manifest_tags(manifest(), max_parts=49)


def test_damaged_tags_are_refused() -> None:
    tags = manifest_tags(manifest())
    with pytest.raises(InputError, match="missing or not a part count"):
        manifest_from_tags({})
    missing = dict(tags)
    missing.pop("imagefactory:manifest-00")
    with pytest.raises(InputError, match="missing manifest part"):
        manifest_from_tags(missing)
    garbled = dict(tags, **{"imagefactory:manifest-00": "!!!!" + tags["imagefactory:manifest-00"]})
    with pytest.raises(InputError, match="cannot decode"):
        manifest_from_tags(garbled)
    wrong_hash = dict(tags, **{TAG_MANIFEST_HASH: "0" * 64})
    with pytest.raises(InputError, match="the tag says 0000"):
        manifest_from_tags(wrong_hash)


def test_diff_of_identical_manifests_is_empty() -> None:
    diff = diff_manifests(manifest(), manifest(version="1.3.1"))
    assert diff.is_empty
    assert diff.render() == "1.3.0 -> 1.3.1\n  no differences"


def test_diff_answers_what_changed_between_versions() -> None:
    old = manifest()
    new = manifest(
        version="1.4.0",
        base=replace(MARKETPLACE, version="26200.7462.251210"),
        catalogue_hash="d" * 64,
        steps=(
            step("windows-update", "a"),
            step("restart", "b", 40),
            step("install-7zip", "e", 45),
            step("install-git", "f", 50),
        ),
        tools={"7zip": "24.08", "git": "2.45.1"},
    )
    diff = diff_manifests(old, new)
    assert diff.base == (MARKETPLACE, new.base)
    assert diff.catalogue_hashes == ("c" * 64, "d" * 64)
    assert diff.steps_added == ("install-git",)
    assert diff.steps_removed == ()
    assert diff.steps_changed == ("install-7zip",)
    assert not diff.steps_reordered
    assert dict(diff.apps_changed) == {"7zip": ("23.01", "24.08")}
    assert dict(diff.apps_added) == {"git": "2.45.1"}
    assert dict(diff.apps_removed) == {"vlc": "3.0.20"}
    assert diff.render() == "\n".join(
        [
            "1.3.0 -> 1.4.0",
            "  base image: MicrosoftWindowsDesktop/windows-11/win11-25h2-avd 26200.7171.251105 "
            "-> 26200.7462.251210",
            "  catalogue entry changed (cccccccccccc -> dddddddddddd)",
            "  steps added: install-git",
            "  steps changed: install-7zip",
            "  apps changed: 7zip 23.01 -> 24.08",
            "  apps added: git 2.45.1",
            "  apps removed: vlc 3.0.20",
        ]
    )


def test_diff_sees_removed_and_reordered_steps_and_a_new_kind_of_base() -> None:
    old = manifest()
    snapshot = BaseImage(kind="snapshot", source_id="/subscriptions/s/.../virtualMachines/avd-0")
    new = manifest(
        version="2.0.0",
        base=snapshot,
        steps=(step("install-7zip", "d", 45), step("windows-update", "a")),
    )
    diff = diff_manifests(old, new)
    assert diff.steps_removed == ("restart",)
    assert diff.steps_reordered
    rendered = diff.render()
    assert "steps removed: restart" in rendered
    assert "steps reordered" in rendered
    assert (
        "base image: MicrosoftWindowsDesktop/windows-11/win11-25h2-avd 26200.7171.251105 -> "
        "snapshot /subscriptions/s/.../virtualMachines/avd-0" in rendered
    )


def test_a_step_changing_kind_counts_as_changed() -> None:
    old = manifest(steps=(step("prep", "a", kind="script"),))
    new = manifest(steps=(step("prep", "a", kind="registry"),))
    assert diff_manifests(old, new).steps_changed == ("prep",)
