"""Helpers for the API tests: call a registered route as the host would, a durable store fake.

``call(route_name, ...)`` builds the ``func.HttpRequest`` the Functions host would hand the route
(URL, route parameters, query, headers, body) and awaits the registered endpoint with a
:class:`FakeDurable` client that keeps instances in memory the way the durable API reports them
(runtime status, input, custom status, output). The gallery is replaced by :func:`use_gallery`
with versions built from lifecycle states (and manifests), so the real lifecycle code runs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest

import function_app
from devhost.functions import index_app
from shared.azure.gallery import RegionFlags, VersionLifecycle
from shared.domain.manifest import BaseImage, BuildManifest, StepRecord, manifest_tags
from shared.domain.principal import HEADER, encode_principal
from shared.domain.resources import (
    TAG_CHANGE_TICKET,
    TAG_REQUESTED_BY,
    TAG_STATE,
    TAG_STATE_AT,
    TAG_STATE_BY,
    TAG_STATE_PREVIOUS,
    TAG_STATE_REASON,
)
from triggers import images
from triggers._api import REGISTRY

SUB = "11111111-1111-1111-1111-111111111111"
IMAGE = "win11-office"
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

READER = encode_principal("rita@contoso.com", ("Reader",))
OPERATOR = encode_principal("otto@contoso.com", ("Operator",))
APPROVER = encode_principal("bob@contoso.com", ("Approver",))
ALICE = encode_principal("alice@contoso.com", ("Operator", "Approver"))  # requests builds
NOBODY = encode_principal("nora@contoso.com", ())  # signed in, no app role


def app_functions() -> list[Any]:
    """The app's indexed functions (``get_functions`` may run once per app: the devhost's
    index caches it for every test of the session)."""
    index = index_app(function_app.app)
    return [index.get(name) for name in index.names]


@dataclass
class _Runtime:
    value: str


@dataclass
class FakeStatus:
    instance_id: str
    name: str
    input_: Any
    runtime_status: _Runtime | None
    custom_status: Any = None
    output: Any = None
    created_time: datetime | None = None
    last_updated_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "name": self.name,
            "runtimeStatus": self.runtime_status.value if self.runtime_status else None,
            "customStatus": self.custom_status,
            "output": self.output,
            "createdTime": self.created_time.isoformat() if self.created_time else None,
            "lastUpdatedTime": (
                self.last_updated_time.isoformat() if self.last_updated_time else None
            ),
        }


@dataclass
class _Entity:
    entity_exists: bool
    entity_state: Any


@dataclass
class FakeDurable:
    """The durable client as the routes use it, in memory; ``ends`` completes on start."""

    instances: dict[str, FakeStatus] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    ends: dict[str, Any] = field(default_factory=dict)  # orchestrator name -> output
    entities: dict[str, Any] = field(default_factory=dict)  # entity key -> state
    fail: dict[str, BaseException] = field(default_factory=dict)

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def put(self, instance_id: str, name: str, state: str, **kw: Any) -> FakeStatus:
        created = kw.pop("created_time", T0)
        status = FakeStatus(
            instance_id, name, kw.pop("input_", None), _Runtime(state), created_time=created, **kw
        )
        self.instances[instance_id] = status
        return status

    async def get_status(self, instance_id: str, show_input: bool = False, **_: Any) -> Any:
        self._maybe_fail("get_status")
        found = self.instances.get(instance_id)
        if found is None:
            return FakeStatus(instance_id, "", None, None)
        return found

    async def get_status_by(self, instance_id_prefix: str | None = None, **_: Any) -> list[Any]:
        self._maybe_fail("get_status_by")
        return [s for i, s in self.instances.items() if i.startswith(instance_id_prefix or "")]

    async def start_new(self, name: str, instance_id: str | None, payload: Any) -> str:
        self._maybe_fail("start_new")
        instance_id = instance_id or f"auto-{len(self.calls)}"
        self.calls.append(("start_new", name, instance_id, payload))
        if name in self.ends:
            self.put(
                instance_id, name, "Completed", input_=json.dumps(payload), output=self.ends[name]
            )
        else:
            self.put(instance_id, name, "Running", input_=json.dumps(payload))
        return instance_id

    async def read_entity_state(self, entity: Any) -> Any:
        self._maybe_fail("read_entity_state")
        state = self.entities.get(str(getattr(entity, "key", entity)))
        return _Entity(state is not None, state)

    async def signal_entity(self, entity: Any, operation: str, payload: Any = None) -> None:
        self.calls.append(("signal_entity", str(entity), operation, payload))

    async def raise_event(self, instance_id: str, event: str, payload: Any) -> None:
        self._maybe_fail("raise_event")
        self.calls.append(("raise_event", instance_id, event, payload))

    async def terminate(self, instance_id: str, reason: str) -> None:
        self._maybe_fail("terminate")
        self.calls.append(("terminate", instance_id, reason))
        self.instances[instance_id].runtime_status = _Runtime("Terminated")

    def started(self, name: str | None = None) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == "start_new" and (name is None or c[1] == name)]


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), self.body
        assert "error" in self.body, self.body
        error: dict[str, Any] = self.body["error"]
        return error


def call(
    route_name: str,
    who: str | None,
    client: FakeDurable,
    *,
    params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Call the registered route ``route_name`` as principal ``who`` (None: no header)."""
    spec = REGISTRY[route_name]
    path = spec.path
    for name, value in (params or {}).items():
        path = path.replace("{" + name + "}", value)
    url = f"http://127.0.0.1:7071/api/{path}"
    if query:
        url += "?" + urlencode(query)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if who is not None:
        all_headers[HEADER] = who
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    req = func.HttpRequest(
        method=spec.method,
        url=url,
        headers=all_headers,
        params=query or {},
        route_params=params or {},
        body=data,
    )
    response = asyncio.run(spec.endpoint(req, client))
    assert response.mimetype == "application/json"
    text = response.get_body()
    return Answer(response.status_code, json.loads(text) if text else None, dict(response.headers))


# ---- the gallery ---------------------------------------------------------------------------


def manifest(version: str, steps: dict[str, str], tools: dict[str, str]) -> BuildManifest:
    return BuildManifest(
        image=IMAGE,
        version=version,
        build_id=f"{IMAGE}-{version.replace('.', '')}",
        base=BaseImage("marketplace", "MicrosoftWindowsDesktop", "windows-11", "win11", "1.0"),
        catalogue_hash="a" * 64,
        steps=tuple(
            StepRecord(name, "script", digest, T0, T0 + timedelta(minutes=3), "Succeeded", 0)
            for name, digest in steps.items()
        ),
        tools=tools,
        phase_seconds={"customise": 600.0},
        created=T0,
    )


def version(
    name: str,
    state: str,
    *,
    at: datetime = T0,
    by: str = "imagefactory",
    requested_by: str | None = None,
    with_manifest: BuildManifest | None = None,
) -> VersionLifecycle:
    tags = {
        TAG_STATE: state,
        TAG_STATE_AT: at.isoformat(),
        TAG_STATE_BY: by,
        TAG_STATE_REASON: f"to {state}",
        TAG_STATE_PREVIOUS: "staged",
        TAG_CHANGE_TICKET: "CHG0001",
    }
    if requested_by:
        tags[TAG_REQUESTED_BY] = requested_by
    if with_manifest is not None:
        tags.update(manifest_tags(with_manifest))
    regions = (RegionFlags("westeurope", 1, "Standard_LRS", state != "active"),)
    return VersionLifecycle(
        id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/"
        f"images/{IMAGE}/versions/{name}",
        name=name,
        exists=True,
        provisioning_state="Succeeded",
        tags=tags,
        exclude_from_latest=state != "active",
        target_regions=regions,
    )


def standard_versions() -> list[VersionLifecycle]:
    """1.0.0 backup, 1.0.1 active, 1.0.2 validated (alice's), 1.0.3 approved, 1.0.4 staged."""
    m1 = manifest("1.0.1", {"office": "h1", "teams": "h2"}, {"Office": "16.0.1", "Teams": "2.0"})
    m2 = manifest("1.0.2", {"office": "h1x", "fslogix": "h3"}, {"Office": "16.0.2"})
    return [
        version("1.0.0", "backup", at=T0),
        version("1.0.1", "active", at=T0 + timedelta(hours=1), with_manifest=m1),
        version(
            "1.0.2",
            "validated",
            at=T0 + timedelta(hours=2),
            requested_by="alice@contoso.com",
            with_manifest=m2,
        ),
        version("1.0.3", "approved", at=T0 + timedelta(hours=3), by="bob@contoso.com"),
        version("1.0.4", "staged", at=T0 + timedelta(hours=4)),
    ]


def use_gallery(monkeypatch: pytest.MonkeyPatch, versions: list[VersionLifecycle]) -> None:
    """Every image reads ``versions`` (only the standard image in the tests' calls)."""
    monkeypatch.setattr(images, "_read_versions", lambda image: list(versions))
