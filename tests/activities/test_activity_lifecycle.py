"""Lifecycle activities against the emulator: one PATCH per change, retries that answer the
first result, refusals and busy versions that write nothing, host pool templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from activities.lifecycle import (
    get_host_pool_template,
    list_image_versions,
    set_host_pool_image,
    set_version_state,
)
from devhost.demo import World, local_world
from shared.errors import NotFoundError, PermanentError, TemporaryError, classify_failure
from tests.e2e.lifecycle_kit import (
    CATALOGUE,
    HOST_POOL_ID,
    IMAGE,
    azure_snapshot,
    scenario,
    version_doc,
    version_id,
)

pytestmark = pytest.mark.slow

WRITE = "Microsoft.Compute/galleries/images/versions/write"
POOL_WRITE = "Microsoft.DesktopVirtualization/hostPools/write"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    states = {"1.0.0": "active", "1.1.0": "approved", "1.2.0": "validated", "1.3.0": "approved"}
    with local_world(scenario(states, "1.0.0"), CATALOGUE) as w:
        yield w


def _writes(world: World, op: str) -> int:
    return sum(
        n for key, n in world.emulator.emu.metrics.requests.items() if op.lower() in key.lower()
    )


def _change(action: str, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
    return {
        "image": IMAGE,
        "version": version,
        "action": action,
        "actor": "ops@contoso.com",
        "reason": "test",
        "change_ticket": "CHG-1",
        "at": "2026-01-05T07:00:00+00:00",
        **extra,
    }


def test_one_patch_writes_state_and_latest_flags_and_a_retry_answers_the_first_result(
    world: World,
) -> None:
    before = _writes(world, WRITE)
    first = set_version_state(_change("activate"))
    assert first == {"image": IMAGE, "version": "1.1.0", "state": "active", "previous": "approved"}
    assert _writes(world, WRITE) == before + 1
    doc = version_doc(world, "1.1.0")
    profile = doc["properties"]["publishingProfile"]
    assert profile["excludeFromLatest"] is False
    assert {t["name"]: t["excludeFromLatest"] for t in profile["targetRegions"]} == {
        "westeurope": False,
        "northeurope": False,
    }
    assert doc["tags"]["imagefactory:change-ticket"] == "CHG-1"
    assert doc["tags"]["imagefactory:requested-by"] == "alice@contoso.com"  # kept
    # The version is Updating now; the same change again (a retried activity) still answers.
    assert doc["properties"]["provisioningState"] == "Updating"
    assert set_version_state(_change("activate")) == first
    assert _writes(world, WRITE) == before + 1


def test_a_refused_change_is_permanent_names_what_is_allowed_and_writes_nothing(
    world: World,
) -> None:
    before = azure_snapshot(world)
    with pytest.raises(PermanentError) as caught:
        set_version_state(_change("activate", "1.2.0"))
    text = str(caught.value)
    assert classify_failure(text) is PermanentError
    assert "current state: validated" in text
    assert "approve" in text
    with pytest.raises(PermanentError) as caught:
        set_version_state(_change("approve", "1.2.0", actor="Alice@Contoso.com"))
    assert "four eyes" in str(caught.value)
    with pytest.raises(NotFoundError):
        set_version_state(_change("activate", "7.7.7"))
    assert azure_snapshot(world) == before


def test_a_version_still_updating_is_a_temporary_error(world: World) -> None:
    set_version_state(_change("activate", "1.3.0", at="2026-01-05T08:00:00+00:00"))
    with pytest.raises(TemporaryError):
        set_version_state(_change("demote_to_backup", "1.3.0", at="2026-01-05T08:01:00+00:00"))


def test_host_pool_template_by_name_and_id_and_an_image_change_that_keeps_the_rest(
    world: World,
) -> None:
    by_name = get_host_pool_template({"host_pool": "hp-lc"})
    assert by_name["id"].lower() == HOST_POOL_ID.lower()
    assert by_name["image"] == version_id("1.0.0")
    assert get_host_pool_template({"host_pool": HOST_POOL_ID})["image"] == version_id("1.0.0")
    with pytest.raises(NotFoundError):
        get_host_pool_template({"host_pool": "hp-nowhere"})

    before = _writes(world, POOL_WRITE)
    same = set_host_pool_image(
        {
            "host_pool_id": by_name["id"],
            "vm_template": by_name["vm_template"],
            "version_id": version_id("1.0.0"),
        }
    )
    assert same["changed"] is False
    assert _writes(world, POOL_WRITE) == before
    moved = set_host_pool_image(
        {
            "host_pool_id": by_name["id"],
            "vm_template": by_name["vm_template"],
            "version_id": version_id("1.1.0"),
        }
    )
    assert moved["changed"] is True
    assert _writes(world, POOL_WRITE) == before + 1
    after = json.loads(get_host_pool_template({"host_pool": "hp-lc"})["vm_template"])
    assert after["customImageId"] == version_id("1.1.0")
    assert after["imageType"] == "CustomImage"
    assert after["vmSize"]["id"] == "Standard_D4s_v5"
    assert after["galleryImageSKU"] is None  # a custom image, not the marketplace one


def test_list_image_versions_shows_states_and_latest(world: World) -> None:
    out = list_image_versions({"image": IMAGE})
    assert [v["version"] for v in out["versions"]] == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    assert out["host_pools"] == ["hp-lc"]
    assert out["lifecycle"]["backup_days"] == 30
    assert set(out["latest"]) == {"westeurope", "northeurope"}
