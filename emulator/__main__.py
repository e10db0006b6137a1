"""Command line: run the emulator as its own process.

``python -m emulator --port 8443 --scenario scenarios/default.yaml [--virtual-time]
[--ca-dir DIR] [--clock-url URL] [--state-dir DIR] [--latency-scale F]``

Prints the URL and the CA bundle path, and writes them to ``<state-dir>/endpoint.json``
(``{"url", "ca_path", "pid", "virtual"}``) with the bundle at ``<ca-dir>/ca.pem`` (``ca-dir``
defaults to the state dir, ``.emulator`` without one) so other processes can find the emulator.
Time: a real clock by default, a virtual one with ``--virtual-time``, or the devhost's shared
clock with ``--clock-url`` (its base URL or its ``/_clock`` URL; the emulator waits for it and
survives its restarts: ``devhost.remote_clock.RemoteClock``). Stops cleanly on Ctrl-C / SIGTERM.

With ``--state-dir`` the emulator keeps its Azure state across its own restarts, as Azurite
keeps storage: resources (and what the emulator keeps beside them), builds, event
subscriptions and the event log, the marketplace as published, saved atomically to
``<state-dir>/azure-state.pickle`` within half a second of a change and on exit, and restored
over the scenario at start (the scenario still gives faults, latencies and throttling). Its own
virtual time (``--virtual-time``) is kept in ``<state-dir>/clock.json`` and resumes, never
earlier. Work in flight when it stopped (an operation, a run command) does not resume: such a
resource is ``Failed`` afterwards, and a VM half way through a power change ends it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from devhost.clock import BaseClock, ClockFile, RealClock, VirtualClock
from emulator import start
from emulator.core import Emulator, EmulatorOptions, Metrics
from emulator.scenario import ScenarioError, load_scenario
from emulator.store import read_snapshot, write_snapshot

log = logging.getLogger("emulator")

STATE_FILE = "azure-state.pickle"
CLOCK_FILE = "clock.json"
# Module state worth keeping (plain data); the others hold live simulations rebuilt by the scenario.
KEPT_MODULES = ("marketplace", "compute.ip")
_IN_FLIGHT = {"creating", "updating", "accepted", "inprogress", "running", "migrating"}
_POWER_ENDS = {"starting": "running", "stopping": "stopped", "deallocating": "deallocated"}


def _remote_clock(url: str) -> BaseClock:
    try:
        from devhost.remote_clock import RemoteClock
    except ImportError as e:  # pragma: no cover - the devhost ships it
        raise SystemExit(f"--clock-url needs devhost.remote_clock.RemoteClock: {e}") from e
    clock: BaseClock = RemoteClock(url)
    return clock


class StateKeeper:
    """Keeps an emulator's Azure state in a file: restored at start, saved when it changed."""

    def __init__(self, emu: Emulator, path: Path, interval: float = 0.5) -> None:
        self.emu = emu
        self.path = path
        self.interval = interval
        self._last: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.saves = 0

    def _signature(self) -> tuple[Any, ...]:
        emu = self.emu
        return (
            sum(emu.metrics.requests.values()),
            emu.now(),
            len(emu.store),
            len(emu.events.log),
            len(emu.schedule_errors),
        )

    def capture(self) -> dict[str, Any]:
        emu = self.emu
        with emu.lock:
            subs = [
                {
                    k: v
                    for k, v in s.items()
                    if k not in ("provisioningState", "delivered", "failedAttempts")
                }
                for s in emu.events.subscriptions()
            ]
            return {
                "store": emu.store.export(),
                "seeded_ids": sorted(emu.seeded_ids),
                "builds": dict(emu.builds),
                "modules": {k: emu.modules[k] for k in KEPT_MODULES if k in emu.modules},
                "subscriptions": subs,
                "events": list(emu.events.log),
                "metrics": emu.metrics,
                "rng": emu.rng.getstate(),
                "id_rng": emu._id_rng.getstate(),
                "now": emu.now().isoformat(),
            }

    def save(self) -> None:
        signature = self._signature()
        write_snapshot(self.path, self.capture())
        self._last = signature
        self.saves += 1

    def restore(self) -> int:
        """Put a saved state over the freshly loaded scenario; how many resources it holds."""
        state = read_snapshot(self.path)
        if state is None:
            return 0
        emu = self.emu
        with emu.lock:
            emu.store.restore(state["store"])
            emu.seeded_ids.clear()
            emu.seeded_ids.update(state.get("seeded_ids") or [])
            emu.builds.clear()
            emu.builds.update(state.get("builds") or {})
            emu.modules.update(state.get("modules") or {})
            emu.events.reset()
            for spec in state.get("subscriptions") or []:
                emu.events.subscribe(spec)
            emu.events.log.extend(state.get("events") or [])
            if isinstance(state.get("metrics"), Metrics):
                emu.metrics = state["metrics"]
            if state.get("rng") is not None:
                emu.rng.setstate(state["rng"])
            if state.get("id_rng") is not None:
                emu._id_rng.setstate(state["id_rng"])
            _settle_interrupted(emu)
        emu.participant.notify()
        self._last = self._signature()
        return len(emu.store)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="emulator-state", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self._signature() != self._last:
                    self.save()
            except Exception:  # a failed save must not stop the emulator; the next one retries
                log.exception("saving the emulator state to %s failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.save()


def _settle_interrupted(emu: Emulator) -> None:
    """Work that was in flight when the emulator stopped cannot finish: say so in the state."""
    for doc in emu.store.all():
        props = doc.get("properties")
        if isinstance(props, dict):
            state = str(props.get("provisioningState", "")).lower()
            if state == "deleting":
                emu.store.delete(str(doc["id"]))
                continue
            if state in _IN_FLIGHT:
                props["provisioningState"] = "Failed"
        runtime = emu.store.meta(str(doc["id"])).get("vm")
        power = getattr(runtime, "power", None)
        if power in _POWER_ENDS:
            runtime.power = _POWER_ENDS[power]  # type: ignore[union-attr]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8443, help="HTTPS port on 127.0.0.1 (0: any)")
    p.add_argument("--scenario", type=Path, default=None, help="scenario YAML/JSON file")
    time_group = p.add_mutually_exclusive_group()
    time_group.add_argument("--virtual-time", action="store_true", help="own a virtual clock")
    time_group.add_argument("--clock-url", default=None, help="share the devhost's clock")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep Azure state (and virtual time) here across restarts; endpoint.json goes "
        "here too (default: .emulator, state not kept)",
    )
    p.add_argument("--ca-dir", type=Path, default=None, help="where ca.pem goes (state dir)")
    p.add_argument("--latency-scale", type=float, default=None, help="multiply all latencies")
    p.add_argument(
        "--retry-after",
        choices=["auto", "seconds", "milliseconds"],
        default="auto",
        help="how Retry-After reaches clients (see emulator/README.md)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as e:
        print(str(e), file=sys.stderr)
        return 2
    if args.latency_scale is not None:
        if args.latency_scale <= 0:
            print("--latency-scale must be positive", file=sys.stderr)
            return 2
        scenario = scenario.model_copy(update={"latency_scale": args.latency_scale})
    keep_state = args.state_dir is not None
    state_dir: Path = args.state_dir if keep_state else Path(".emulator")
    state_dir.mkdir(parents=True, exist_ok=True)
    clock: BaseClock
    if args.clock_url:
        try:
            clock = _remote_clock(args.clock_url)
        except ValueError as e:
            print(f"--clock-url: {e}", file=sys.stderr)
            return 2
    elif args.virtual_time:
        durable = ClockFile(state_dir / CLOCK_FILE) if keep_state else None
        clock = VirtualClock(scenario.start_time, state=durable)
    else:
        clock = RealClock()
    # Time holds still until this emulator serves (its CA written, its state restored): a clock
    # owner that awaits "emulator" must not let the app's timers run against a half-started one.
    starting = clock.participant("emulator-starting", lambda: None)
    starting.enter()
    ca_dir: Path = args.ca_dir or state_dir
    if keep_state:
        from emulator import server

        server.KEEP_CA = True  # clients trusting ca.pem keep trusting a restarted emulator
    running = start(
        scenario,
        clock=clock,
        port=args.port,
        ca_dir=ca_dir,
        options=EmulatorOptions(retry_after=args.retry_after),
    )
    keeper: StateKeeper | None = None
    if keep_state:
        keeper = StateKeeper(running.emu, state_dir / STATE_FILE)
        try:
            restored = keeper.restore()
        except (OSError, ValueError, KeyError) as e:
            running.stop()
            starting.close()
            clock.close()
            print(f"cannot restore {keeper.path}: {e}", file=sys.stderr)
            return 2
        if restored:
            print(f"Restored {restored} resources from {keeper.path}")
        keeper.start()
    endpoint = {
        "url": running.url,
        "ca_path": str(running.ca_path.resolve()),
        "pid": os.getpid(),
        "virtual": clock.virtual,
        "scenario": scenario.name,
        "subscriptions": list(scenario.subscription_ids),
    }
    # Atomically: whoever waits for the file never reads it half written.
    partial = state_dir / "endpoint.json.tmp"
    partial.write_text(json.dumps(endpoint, indent=2) + "\n")
    partial.replace(state_dir / "endpoint.json")
    starting.leave()
    starting.close()
    print(f"Azure emulator listening on {running.url}")
    print(f"CA bundle: {endpoint['ca_path']}")
    print(f"Endpoint file: {(state_dir / 'endpoint.json').resolve()}")
    sys.stdout.flush()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
        if keeper is not None:
            keeper.stop()
        clock.close()
        (state_dir / "endpoint.json").unlink(missing_ok=True)
        log.info("emulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
