"""The Azure control-plane emulator ("Azurite for ARM"): Compute, Gallery, AVD over HTTPS.

In-process use (tests, demos)::

    from devhost.clock import VirtualClock
    import emulator

    running = emulator.start("scenarios/default.yaml", clock=VirtualClock(start))
    ComputeManagementClient(cred, sub, base_url=running.url, connection_verify=str(running.ca_path))
    running.stop()

Command line: ``python -m emulator --port 8443 --scenario scenarios/default.yaml --virtual-time``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.clock import BaseClock, VirtualClock
from emulator.core import Emulator, EmulatorOptions
from emulator.scenario import Scenario, load_scenario

log = logging.getLogger(__name__)

# Resource modules, registered in this order when present (each exposes register(emu)).
MODULES = [
    "emulator.admin",
    "emulator.marketplace",
    "emulator.compute",
    "emulator.gallery",
    "emulator.avd",
    "emulator.users",
    "emulator.connections",
    "emulator.autoscale",
    "emulator.eventgrid_topic",
]


def build_emulator(
    clock: BaseClock,
    options: EmulatorOptions | None = None,
    modules: list[str] | None = None,
) -> Emulator:
    """An Emulator with every available module registered (no scenario loaded yet)."""
    emu = Emulator(clock, options=options)
    for name in modules if modules is not None else MODULES:
        if importlib.util.find_spec(name) is None:
            log.info("emulator module %s not present; skipped", name)
            continue
        module = importlib.import_module(name)
        module.register(emu)
    return emu


@dataclass
class RunningEmulator:
    """A started emulator: its URL, the CA bundle to trust, and the Emulator itself."""

    url: str
    ca_path: Path
    emu: Emulator
    clock: BaseClock
    _server: Any = field(repr=False)
    _owns_clock: bool = False
    _tmp_dir: Path | None = None

    def stop(self) -> None:
        self._server.stop()
        self.emu.stop()
        if self._owns_clock:
            self.clock.close()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    scenario: Scenario | str | Path | dict[str, Any] | None = None,
    *,
    clock: BaseClock | None = None,
    port: int = 0,
    ca_dir: Path | str | None = None,
    options: EmulatorOptions | None = None,
    modules: list[str] | None = None,
) -> RunningEmulator:
    """Start an emulator on 127.0.0.1:port over HTTPS and load ``scenario``.

    Without ``clock`` a VirtualClock starting at the scenario's ``start_time`` is created (and
    closed by ``stop()``). Without ``ca_dir`` the CA bundle goes to a temporary directory.
    """
    from emulator.server import HttpsServer

    sc = load_scenario(scenario)
    owns_clock = clock is None
    the_clock: BaseClock = clock if clock is not None else VirtualClock(sc.start_time)
    tmp = None
    if ca_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="emulator-ca-"))
        ca_dir = tmp
    emu = build_emulator(the_clock, options, modules)
    server = HttpsServer(emu, Path(ca_dir), port)
    emu.start()
    try:
        emu.load_scenario(sc)
    except Exception:
        server.stop()
        emu.stop()
        raise
    server.start()
    return RunningEmulator(server.url, server.ca_path, emu, the_clock, server, owns_clock, tmp)
