"""Operation latencies: how long things take in host time, with seeded jitter.

Defaults follow the published figures in platform-facts (a VM create takes minutes, gallery
replication "can take a few hours", a simple Windows image build 40+ minutes). A scenario can
override any name (``latency: {vm.create: 5m}`` or ``{mean: 5m, jitter: 0.1}``) and scale them
all (``latency_scale``). Modules may register defaults for their own names with
:meth:`LatencyModel.register`. Same seed, same sequence of draws.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_UNITS = {
    None: 1.0,
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``90``, ``"90s"``, ``"3m"``, ``"1.5h"``, ``"2d"``, ``"PT5M"`` or a timedelta."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5m'")
    elif isinstance(value, int | float):
        result = timedelta(seconds=float(value))
    else:
        m = _DURATION.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            result = timedelta(seconds=float(m.group(1)) * _UNITS[unit])
        else:
            iso = _ISO.match(value.strip())
            if not iso or value.strip().upper() in ("P", "PT"):
                raise ValueError(
                    f"invalid duration {value!r}: use seconds, '90s', '5m', '2h', '1d' or 'PT5M'"
                )
            parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
            result = timedelta(
                days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
            )
    if result < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return result


@dataclass(frozen=True)
class LatencySpec:
    """A mean duration and a relative jitter (0.2 = up to +-20 %, uniformly)."""

    mean: timedelta
    jitter: float = 0.2


def _s(seconds: float, jitter: float = 0.2) -> LatencySpec:
    return LatencySpec(timedelta(seconds=seconds), jitter)


# Defaults in host time. Names are "<area>.<thing>[.<step>]".
DEFAULTS: dict[str, LatencySpec] = {
    # Virtual machines (Compute RP): a Windows VM create is a few minutes end to end.
    "vm.create": _s(180),
    "vm.start": _s(60),
    "vm.deallocate": _s(90),
    "vm.power_off": _s(30),
    "vm.restart": _s(90),
    "vm.delete": _s(60),
    "vm.update": _s(20),
    "nic.delete": _s(10),
    "disk.create": _s(20),
    "disk.copy": _s(60),
    "disk.delete": _s(15),
    "snapshot.create": _s(60),
    "snapshot.delete": _s(15),
    # Run commands: the agent picks a command up after a delay, then the guest runs it.
    "runcommand.dispatch": _s(30),
    "runcommand.delete": _s(10),
    # Guest commands (simulated Windows guest).
    "guest.command": _s(2),  # Start-Sleep and no-ops use their own durations
    "guest.write_output": _s(0.1, 0),
    "guest.query": _s(1),
    "guest.registry": _s(1),
    "guest.choco_install": _s(120),
    "guest.winget_install": _s(120),
    "guest.bitlocker_disable": _s(1200),
    "guest.windows_update": _s(1800),
    "guest.restart": _s(120),
    "guest.stop": _s(30),
    "guest.sysprep": _s(600),
    "guest.msi_install": _s(60),  # msiexec /i <the AVD agent or its boot loader>.msi /quiet
    "guest.http_post": _s(1),
    # Compute Gallery (used by emulator/gallery.py).
    "gallery.create": _s(20),
    "gallery.delete": _s(20),
    "gallery.image.create": _s(20),
    "gallery.image.delete": _s(20),
    "gallery.version.create": _s(1800),
    "gallery.version.update": _s(300),
    "gallery.version.delete": _s(300),
    "gallery.replication.per_region": _s(2400, 0.3),
    # Azure Virtual Desktop (used by emulator/avd.py and emulator/users.py).
    "avd.host.register": _s(300),
    "avd.session.logoff": _s(10),
}

FALLBACK = _s(5)


class LatencyModel:
    """``get(name) -> timedelta``: the mean for ``name`` with seeded uniform jitter."""

    def __init__(self, seed: int | str = 0) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, LatencySpec] = dict(DEFAULTS)
        self._overrides: dict[str, LatencySpec] = {}
        self._rng = random.Random(f"latency:{seed}")
        self.scale = 1.0
        self.unknown: set[str] = set()

    def reseed(self, seed: int | str) -> None:
        with self._lock:
            self._rng = random.Random(f"latency:{seed}")

    def register(self, name: str, mean: timedelta, jitter: float = 0.2) -> None:
        """A module's default for one of its own names (scenario overrides still win)."""
        with self._lock:
            self._specs[name] = LatencySpec(mean, jitter)

    def override(self, name: str, spec: LatencySpec) -> None:
        with self._lock:
            self._overrides[name] = spec

    def clear_overrides(self) -> None:
        with self._lock:
            self._overrides.clear()
            self.scale = 1.0

    def spec(self, name: str) -> LatencySpec:
        with self._lock:
            found = self._overrides.get(name) or self._specs.get(name)
            if found is None:
                if name not in self.unknown:
                    log.warning("latency name %r has no default; using %s", name, FALLBACK.mean)
                    self.unknown.add(name)
                found = FALLBACK
            return found

    def mean(self, name: str) -> timedelta:
        return self.spec(name).mean * self.scale

    def get(self, name: str) -> timedelta:
        """One draw: mean * scale * (1 + U(-jitter, +jitter))."""
        spec = self.spec(name)
        with self._lock:
            factor = 1.0 + (self._rng.uniform(-spec.jitter, spec.jitter) if spec.jitter else 0.0)
        seconds = max(0.0, spec.mean.total_seconds() * self.scale * factor)
        return timedelta(seconds=round(seconds, 3))

    def table(self) -> dict[str, dict[str, float]]:
        """Effective means and jitters (for docs and the admin API)."""
        with self._lock:
            names = sorted(set(self._specs) | set(self._overrides))
            out = {}
            for n in names:
                s = self._overrides.get(n) or self._specs[n]
                out[n] = {"seconds": s.mean.total_seconds() * self.scale, "jitter": s.jitter}
            return out
