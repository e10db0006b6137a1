"""Resource state: ARM JSON documents keyed by case-insensitive resource id.

Resources are stored as plain ARM JSON dicts (``{id, name, type, location, tags,
properties{...}}``) with the id's original case preserved; lookups ignore case, as ARM does.
``get`` returns the live document: mutate it only under ``Emulator.lock``. Emulator-private
state that is not part of the ARM document (a VM's guest OS, a disk's captured guest state)
lives beside it in ``meta(id)``, which disappears with the resource.

With ``python -m emulator --state-dir DIR`` the store outlives the process (as Azurite keeps
storage): :meth:`ResourceStore.export` / :meth:`ResourceStore.restore` and
:func:`write_snapshot` / :func:`read_snapshot` write it to one file, replaced atomically.
"""

from __future__ import annotations

import builtins
import copy
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 1


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

    def export(self) -> dict[str, Any]:
        """Every resource and the meta beside it, as plain data for :func:`write_snapshot`.

        Meta entries that cannot be saved (a live callback, say) are left out, each logged once.
        """
        meta: dict[str, dict[str, bytes]] = {}
        for key, entries in self._meta.items():
            saved: dict[str, bytes] = {}
            for name, value in entries.items():
                try:
                    saved[name] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                except (pickle.PicklingError, TypeError, AttributeError) as e:
                    log.debug("meta %s of %s is not saved: %s", name, key, e)
            if saved:
                meta[key] = saved
        return {"items": copy.deepcopy(self._items), "meta": meta}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace everything with what :meth:`export` gave."""
        items = state.get("items")
        meta = state.get("meta")
        if not isinstance(items, dict) or not isinstance(meta, dict):
            raise ValueError("not a resource store export")
        self._items = {self.key(str(k)): v for k, v in items.items()}
        self._meta = {
            str(k): {str(n): pickle.loads(raw) for n, raw in entries.items()}  # noqa: S301
            for k, entries in meta.items()
        }

    def snapshot(self) -> builtins.list[dict[str, Any]]:
        """A deep copy of every resource (for dumps)."""
        return copy.deepcopy(self.all())

    def __len__(self) -> int:
        return len(self._items)


def write_snapshot(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader (or a restart after ``kill -9``) finds the
    previous snapshot or this one, never a part of one."""
    data = pickle.dumps({"format": SNAPSHOT_FORMAT, **state}, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """What :func:`write_snapshot` wrote (None: no snapshot). The file is the emulator's own
    local state; never point this at a file from elsewhere (it is a pickle)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    state = pickle.loads(raw)  # noqa: S301 - the emulator's own state file
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path}: not an emulator state snapshot (format {SNAPSHOT_FORMAT})")
    return state
