"""Property-based: schemathesis drives every operation of docs/openapi.json against the devhost.

The real app runs on the devhost with the emulator behind it (loopback only); schemathesis
generates valid and invalid paths, queries, headers and bodies from the document (a bounded
number per operation) and checks that no answer is a 5xx, that every status, content type,
header and body is the one the document declares, and that invalid input is refused with a 4xx.
The caller holds every app role, so role refusals do not hide deeper paths (those are tested
route by route). ``ignored_auth`` is left out: the principal header is App Service's (the
front end authenticates), so the tests of 401/403 per route cover it; ``unsupported_method``
too, and no unlisted methods are sent: a method a function does not list is answered by the
host, not the app (404 like the Functions host; an unknown verb such as QUERY 501).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import ignored_auth, unsupported_method

from devhost.demo import World, local_world
from shared.domain.principal import HEADER, encode_principal
from tests.e2e.lifecycle_kit import CATALOGUE, scenario
from triggers._api import KEY_PATTERN

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
schema = schemathesis.openapi.from_dict(json.loads(DOC.read_text(encoding="utf-8")))
# The bearer token is the front end's business (App Service Authentication): no test drops it.
schema.config.generation.update(with_security_parameters=False)
# Methods a route does not list are the host's answer (404, or 501 for a verb such as QUERY).
schema.config.phases.coverage.unexpected_methods = set()
EVERYONE = encode_principal("fuzz@tests", ("Reader", "Operator", "Approver"))
load_all_checks()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with local_world(scenario({"1.0.0": "active", "1.0.1": "staged"}, "1.0.0"), CATALOGUE) as w:
        w.clock.resume()
        yield w


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_no_operation_breaks_its_contract(case: schemathesis.Case, world: World) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and re.fullmatch(KEY_PATTERN, key):
        # Examples reuse generated keys with other bodies (a 422 by design, tested on its own).
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4().hex}"
    if isinstance(case.body, dict) and isinstance(case.body.get("callback_url"), str):
        # Callbacks are off in this world (400 naming callback_url: tested on their own).
        case.body["callback_url"] = None
    case.call_and_validate(
        base_url=world.host.url,
        headers={HEADER: EVERYONE},
        excluded_checks=[ignored_auth, unsupported_method],
        timeout=30,
    )
