"""Resource state: ARM JSON documents keyed by case-insensitive resource id.

Resources are stored as plain ARM JSON dicts (``{id, name, type, location, tags,
properties{...}}``) with the id's original case preserved; lookups ignore case, as ARM does.
``get`` returns the live document: mutate it only under ``Emulator.lock``. Emulator-private
state that is not part of the ARM document (a VM's guest OS, a disk's captured guest state)
lives beside it in ``meta(id)``, which disappears with the resource.
"""

from __future__ import annotations

import builtins
import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceId:
    """The parts of an ARM resource id."""

    subscription: str | None
    resource_group: str | None
    provider: str | None
    types: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def type(self) -> str:
        """Full resource type, e.g. ``Microsoft.Compute/virtualMachines/runCommands``."""
        if not self.provider:
            return ""
        return "/".join((self.provider, *self.types))

    @property
    def name(self) -> str:
        return self.names[-1] if self.names else ""

    @property
    def parent(self) -> str | None:
        """Id of the parent resource for a child resource, else None."""
        if len(self.names) < 2 or not self.provider:
            return None
        parts = [f"/subscriptions/{self.subscription}"]
        if self.resource_group:
            parts.append(f"/resourceGroups/{self.resource_group}")
        parts.append(f"/providers/{self.provider}")
        for t, n in zip(self.types[:-1], self.names[:-1], strict=True):
            parts.append(f"/{t}/{n}")
        return "".join(parts)


def parse_resource_id(resource_id: str) -> ResourceId:
    """Split an ARM id into its parts; tolerant of ids that stop short of a provider."""
    segs = [s for s in resource_id.split("/") if s]
    sub = rg = provider = None
    types: list[str] = []
    names: list[str] = []
    i = 0
    while i < len(segs):
        key = segs[i].lower()
        if key == "subscriptions" and i + 1 < len(segs) and sub is None:
            sub = segs[i + 1]
            i += 2
        elif key == "resourcegroups" and i + 1 < len(segs) and rg is None:
            rg = segs[i + 1]
            i += 2
        elif key == "providers" and i + 1 < len(segs) and provider is None:
            provider = segs[i + 1]
            i += 2
            rest = segs[i:]
            for j in range(0, len(rest), 2):
                types.append(rest[j])
                if j + 1 < len(rest):
                    names.append(rest[j + 1])
            break
        else:
            i += 1
    return ResourceId(sub, rg, provider, tuple(types), tuple(names))


def resource_type_of(resource_id: str) -> str:
    return parse_resource_id(resource_id).type


class ResourceStore:
    """In-memory ARM resources. Not thread-safe by itself: callers hold ``Emulator.lock``."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    @staticmethod
    def key(resource_id: str) -> str:
        return resource_id.rstrip("/").lower()

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """The live document, or None."""
        return self._items.get(self.key(resource_id))

    def exists(self, resource_id: str) -> bool:
        return self.key(resource_id) in self._items

    def put(self, resource_id: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) a resource; keeps the stored id's original case if it existed."""
        k = self.key(resource_id)
        existing = self._items.get(k)
        if existing is not None and "id" in existing:
            resource["id"] = existing["id"]
        else:
            resource.setdefault("id", resource_id.rstrip("/"))
        self._items[k] = resource
        return resource

    def delete(self, resource_id: str) -> dict[str, Any] | None:
        """Remove a resource and its meta; returns what was removed (None if absent)."""
        k = self.key(resource_id)
        self._meta.pop(k, None)
        return self._items.pop(k, None)

    def list(self, prefix: str, rtype: str | None = None) -> builtins.list[dict[str, Any]]:
        """Resources under ``prefix`` (an id prefix, matched at a segment boundary) of type
        ``rtype`` (case-insensitive; None: any), sorted by id for stable paging."""
        p = prefix.rstrip("/").lower() + "/"
        want = rtype.lower() if rtype else None
        out = []
        for k, v in self._items.items():
            if not k.startswith(p):
                continue
            if want is not None and str(v.get("type", "")).lower() != want:
                continue
            out.append(v)
        out.sort(key=lambda r: str(r.get("id", "")).lower())
        return out

    def all(self) -> builtins.list[dict[str, Any]]:
        return sorted(self._items.values(), key=lambda r: str(r.get("id", "")).lower())

    def meta(self, resource_id: str) -> dict[str, Any]:
        """Emulator-private state beside a resource (created empty on first use)."""
        return self._meta.setdefault(self.key(resource_id), {})

    def clear(self) -> None:
        self._items.clear()
        self._meta.clear()

    def snapshot(self) -> builtins.list[dict[str, Any]]:
        """A deep copy of every resource (for dumps)."""
        return copy.deepcopy(self.all())

    def __len__(self) -> int:
        return len(self._items)
