"""End-to-end fixtures: the real app on the devhost against the emulator, in virtual time."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.demo import World, local_world
from shared.names import ENTITY_BUILD_QUEUE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world() -> Iterator[World]:
    with local_world() as w:
        yield w


def post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def queue_state(world: World, image: str) -> dict[str, Any]:
    """The state of the image's build queue entity (empty before its first request)."""
    exists, state = world.host.engine.read_entity(ENTITY_BUILD_QUEUE, image)
    value = json.loads(state) if exists and state else {}
    return value if isinstance(value, dict) else {}


def emulator_get(world: World, path: str) -> Any:
    ctx = ssl.create_default_context(cafile=str(world.emulator.ca_path))
    with urllib.request.urlopen(f"{world.emulator.url}{path}", context=ctx, timeout=30) as resp:
        return json.loads(resp.read())
