"""The retention orchestrator's pure helpers: listed versions and usages as planner input."""

from __future__ import annotations

from orchestrators.retention import _vm_ref, usages_of, version_facts
from shared.domain.retention import Usage, UsageKind
from shared.domain.versions import VersionState

DEF = (
    "/subscriptions/s1/resourceGroups/rg-img/providers/Microsoft.Compute/galleries/gal"
    "/images/office"
)


def test_a_region_that_includes_the_version_in_latest_wins() -> None:
    raw = {
        "id": f"{DEF}/versions/1.0.0",
        "name": "1.0.0",
        "tags": {"imagefactory:state": "backup", "imagefactory:state-at": "2026-01-01T00:00:00Z"},
        "exclude_from_latest": True,
        "regions": [
            {"name": "westeurope", "replicas": 2, "exclude_from_latest": None},
            {"name": "northeurope", "replicas": 1, "exclude_from_latest": False},
        ],
        "size_gb": 127,
    }
    facts = version_facts(raw)
    assert facts.state is VersionState.BACKUP
    assert facts.state_at is not None
    assert facts.state_at.tzinfo is not None
    assert facts.exclude_from_latest is False
    assert [(r.region, r.storage_gb) for r in facts.regions] == [
        ("westeurope", 254.0),
        ("northeurope", 127.0),
    ]
    raw["regions"][1]["exclude_from_latest"] = True  # type: ignore[index]
    assert version_facts(raw).exclude_from_latest is True


def test_usages_match_the_definition_case_insensitively_and_only_it() -> None:
    refs = [
        ("session-host", "vm1", f"{DEF}/versions/1.0.2"),
        ("host-pool-template", "hp1", DEF.upper()),
        ("vm", "vm2", DEF.replace("office", "analyst") + "/versions/1.0.2"),
        ("orchestration", "build:x", "not an id"),
    ]
    assert usages_of(DEF, refs) == [
        Usage(UsageKind.SESSION_HOST, "vm1", "1.0.2"),
        Usage(UsageKind.HOST_POOL_TEMPLATE, "hp1", None),
    ]


def test_a_vm_created_from_latest_uses_the_exact_version_azure_recorded() -> None:
    assert _vm_ref({"image_id": DEF, "exact_version": "1.0.3"}) == f"{DEF}/versions/1.0.3"
    assert _vm_ref({"image_id": DEF, "exact_version": None}) == DEF
    assert _vm_ref({"image_id": None}) is None
    marketplace = "/Subscriptions/s1/Providers/Microsoft.Compute/Locations/weu/Publishers/p"
    assert _vm_ref({"image_id": marketplace}) is None
