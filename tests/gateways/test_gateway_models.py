"""Ids the gateways build parse back (with the domain's parser); values convert to plain dicts."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.azure.models import ImageVersionState, RegionReplication, resource_id
from shared.domain.resources import ResourceId

SUB = "00000000-0000-0000-0000-000000000001"


def test_parse_nested_id_round_trips() -> None:
    text = resource_id(
        SUB, "rg-gal", "Microsoft.Compute/galleries/images/versions", "g", "i", "1.2.3"
    )
    arm = ResourceId.parse(text)
    assert arm.subscription_id == SUB
    assert arm.resource_group == "rg-gal"
    assert arm.type == "Microsoft.Compute/galleries/images/versions"
    assert arm.names == ("g", "i", "1.2.3")
    assert arm.name == "1.2.3"
    assert str(arm) == text
    assert arm.is_type("microsoft.compute/GALLERIES/images/versions")


def test_to_dict_is_plain_json() -> None:
    eol = datetime(2026, 7, 1, tzinfo=UTC)
    state = ImageVersionState(
        id="x",
        name="1.0.0",
        exists=True,
        regions={"westeurope": RegionReplication("Completed", 100)},
        end_of_life_date=eol,
    )
    out = state.to_dict()
    assert out["regions"] == {
        "westeurope": {"state": "Completed", "progress": 100, "details": None}
    }
    assert out["end_of_life_date"] == "2026-07-01T00:00:00+00:00"
