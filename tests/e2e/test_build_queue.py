"""The per-image build queue end to end: several requests at one virtual instant, real builds.

Before the queue became an entity, queue generations that started at the same instant drew the
same build id from ``new_uuid()`` and later builds overwrote earlier ones' status and resource
names. Here three requests arrive at one instant through the HTTP API; each must get its own
build id (the image plus the queue's sequence), its own build and its own staged version.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devhost.demo import World, first_marketplace_image
from shared.domain.naming import build_resource_names
from shared.domain.resources import TAG_BUILD_ID
from shared.names import sequenced_build_id
from tests.e2e.conftest import ROOT, get_json, post_json, queue_state

pytestmark = pytest.mark.slow

CATALOGUE = ROOT / "catalogue" / "images.yaml"
REQUESTS = 3


def _versions(world: World) -> list[dict[str, Any]]:
    return [
        doc
        for doc in world.emulator.emu.store.all()
        if str(doc.get("type", "")).lower() == "microsoft.compute/galleries/images/versions"
        and (doc.get("tags") or {}).get(TAG_BUILD_ID)
    ]


def test_requests_at_one_instant_get_distinct_builds_and_answers_to_follow(world: World) -> None:
    image = first_marketplace_image(CATALOGUE)["name"]
    url = f"{world.host.url}/api/images/{image}/builds"
    answers = [post_json(url, {"key": f"burst-{n}", "reason": "burst"}) for n in range(REQUESTS)]
    assert [code for code, _ in answers] == [202] * REQUESTS
    for n, (_, body) in enumerate(answers):
        assert body["key"] == f"manual:burst-{n}"
        assert body["outcome"] == "submitted"
        assert "/runtime/webhooks/durabletask/instances/build-request" in body["status_url"]
        assert body["queue_url"] == url
    # The same key again while its request runs is not a second build.
    code, again = post_json(url, {"key": "burst-0"})
    assert (code, again["outcome"]) == (202, "in progress")

    world.clock.resume()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = queue_state(world, image)
        recent = state.get("recent") or []
        done = [r for r in recent if r.get("status") and r["key"].startswith("manual:burst-")]
        if len(done) == REQUESTS:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the queue never finished: {queue_state(world, image)}")
    # (The marketplace watch may queue a build of its own meanwhile: it gets the next number.)
    expected = {sequenced_build_id(image, n) for n in range(1, REQUESTS + 1)}
    assert {r["build_id"] for r in done} == expected
    assert {r["status"] for r in done} == {"staged"}
    # Each request's own status URL now carries its build id.
    for _, body in answers:
        code, status = get_json(body["status_url"])
        assert code in (200, 202)
        assert status["customStatus"]["build_id"] in expected
        assert status["customStatus"]["outcome"] == "accepted"
    # Distinct builds, distinct resource names, distinct staged versions.
    names = [build_resource_names(image, b).to_dict() for b in sorted(expected)]
    for field in names[0]:
        assert len({n[field] for n in names}) == REQUESTS, field
    versions = [v for v in _versions(world) if v["tags"][TAG_BUILD_ID] in expected]
    assert {v["tags"][TAG_BUILD_ID] for v in versions} == expected
    assert len({v["name"] for v in versions}) == REQUESTS
    code, queue = get_json(url)
    assert code == 200
    assert queue["queue"]["builds_numbered"] >= REQUESTS
    assert [r["build_id"] for r in queue["queue"]["recent"] if r.get("status")][:REQUESTS] == [
        sequenced_build_id(image, n) for n in range(1, REQUESTS + 1)
    ]
