"""Connections (and the Log Analytics query over them), broken images, autoscale from templates."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from typing import Any

from azure.core.rest import HttpRequest
from test_gallery_support import SUB, run_to

from tests.emulator.conftest import SMALL_SCENARIO

RG = "rg-avd"
DAY = datetime.fromisoformat("2026-01-05T00:00:00+00:00")
WORKSPACE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-ops/providers/Microsoft.OperationalInsights"
    "/workspaces/law-avd"
)
IMAGE_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-img/providers/Microsoft.Compute/galleries/gal"
    "/images/office"
)


def pool_id(name: str) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DesktopVirtualization"
        f"/hostPools/{name}"
    )


def _pool(name: str, sku: str) -> dict[str, Any]:
    return {
        "name": name,
        "resource_group": RG,
        "location": "westeurope",
        "max_session_limit": 6,
        "hosts": [
            {
                "name_prefix": name,
                "count": 2,
                "image_reference": {
                    "publisher": "MicrosoftWindowsDesktop",
                    "offer": "windows-11" if sku.startswith("win11-25h2") else "office-365",
                    "sku": sku,
                    "version": "latest",
                },
            }
        ],
        "user_profile": {
            "users": 8,
            "logon_start_hour": 7,
            "logon_end_hour": 9,
            "mean_session_minutes": 240,
            "disconnect_probability": 0.0,
        },
    }


def query(env: Any, pool: str, start: datetime, end: datetime) -> dict[str, int]:
    """The app's Log Analytics query, sent through ARM with the SDK's pipeline."""
    body = {
        "query": f"WVDConnections | where _ResourceId =~ '{pool.lower()}' | summarize ...",
        "timespan": f"{start.isoformat()}/{end.isoformat()}",
    }
    client = env.compute_client()
    response = client.send_request(
        HttpRequest("POST", f"{WORKSPACE}/api/query?api-version=2020-08-01", json=body)
    )
    response.raise_for_status()
    table = response.json()["tables"][0]
    names = [c["name"] for c in table["columns"]]
    return dict(zip(names, table["rows"][0], strict=True))


def test_broken_image_fails_its_connections_and_log_analytics_counts_them(
    emulator_factory: Any,
) -> None:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["host_pools"] = [_pool("hpgood", "win11-24h2-avd-m365"), _pool("hpbad", "win11-25h2-avd")]
    # Seeded by the scenario: every host whose image is the 25H2 marketplace image is broken.
    sc["faults"] = [
        {"type": "flag", "kind": "session_connection_fails", "match": {"image": "*win11-25h2*"}}
    ]
    env = emulator_factory(sc)
    env.clock.pause()
    run_to(env, DAY + timedelta(hours=10))

    pools = {p["hostPool"]: p for p in env.emu.report()["users"]["pools"]}
    good, bad = pools[pool_id("hpgood")], pools[pool_id("hpbad")]
    assert good["logons"] == 8
    assert good["failedLogons"] == 0
    assert bad["logons"] == 0
    assert bad["failedLogons"] >= 8

    window = (DAY + timedelta(hours=6), DAY + timedelta(hours=10))
    assert query(env, pool_id("hpgood"), *window) == {"Connections": 8, "Failed": 0}
    counted = query(env, pool_id("hpbad"), *window)
    assert counted["Connections"] == counted["Failed"] == bad["failedLogons"]
    # Nothing before the users came in.
    early = (DAY + timedelta(hours=5), DAY + timedelta(hours=6))
    assert query(env, pool_id("hpbad"), *early) == {"Connections": 0, "Failed": 0}


def test_query_other_than_connections_of_one_pool_is_refused(emulator_factory: Any) -> None:
    env = emulator_factory()
    client = env.compute_client()
    response = client.send_request(
        HttpRequest(
            "POST",
            f"{WORKSPACE}/api/query?api-version=2020-08-01",
            json={"query": "Heartbeat | take 1", "timespan": "2026-01-05T00:00:00Z/P1D"},
        )
    )
    assert response.status_code == 400
    assert "WVDConnections" in response.json()["error"]["message"]


def _autoscale_scenario() -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["galleries"] = [
        {
            "name": "gal",
            "resource_group": "rg-img",
            "location": "westeurope",
            "images": [
                {
                    "name": "office",
                    "publisher": "Contoso",
                    "offer": "avd",
                    "sku": "office",
                    "versions": [
                        {"version": "1.0.0"},
                        {
                            "version": "1.0.1",
                            "regions": [{"name": "westeurope", "exclude_from_latest": True}],
                        },
                    ],
                }
            ],
        }
    ]
    sc["host_pools"] = [
        {
            "name": "hpscale",
            "resource_group": RG,
            "location": "westeurope",
            "vm_template": {"imageType": "CustomImage", "customImageId": IMAGE_ID},
        }
    ]
    return sc


def _scale(env: Any) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(
        f"{env.url}/_emulator/autoscale",
        data=json.dumps({"hostPool": pool_id("hpscale"), "count": 1}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    import ssl

    ctx = ssl.create_default_context(cafile=str(env.ca_path))
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        created: dict[str, Any] = json.loads(resp.read())["created"][0]
    return created


def test_autoscale_follows_the_regions_exclude_from_latest_at_once(emulator_factory: Any) -> None:
    env = emulator_factory(_autoscale_scenario())
    env.clock.pause()
    # 1.0.1 is newer but excluded from latest in westeurope: autoscale takes 1.0.0.
    assert _scale(env)["image"] == "1.0.0"

    client = env.compute_client()
    version = client.gallery_image_versions.get("rg-img", "gal", "office", "1.0.1")
    regions = [
        {"name": r.name, "excludeFromLatest": False}
        for r in version.publishing_profile.target_regions
    ]
    client.gallery_image_versions.begin_update(
        "rg-img",
        "gal",
        "office",
        "1.0.1",
        {"properties": {"publishingProfile": {"targetRegions": regions}}},
        polling=False,
    )
    run_to(env, env.clock.now() + timedelta(minutes=30))
    # The very next scale-out uses 1.0.1; nothing else had to change.
    second = _scale(env)
    assert second["image"] == "1.0.1"
    assert second["template"] == {"id": IMAGE_ID}
    report = env.emu.report()["autoscale"]["created"]
    assert [c["image"] for c in report] == ["1.0.0", "1.0.1"]
