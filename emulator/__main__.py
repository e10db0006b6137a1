"""Command line: run the emulator as its own process.

``python -m emulator --port 8443 --scenario scenarios/default.yaml [--virtual-time]
[--ca-dir DIR] [--clock-url URL] [--state-dir .emulator] [--latency-scale F]``

Prints the URL and the CA bundle path, and writes them to ``<state-dir>/endpoint.json``
(``{"url", "ca_path", "pid", "virtual"}``) with the bundle at ``<ca-dir>/ca.pem`` (``ca-dir``
defaults to the state dir) so other processes can find the emulator. Time: a real clock by
default, a virtual one with ``--virtual-time``, or the devhost's shared clock with
``--clock-url`` (``devhost.remote_clock.RemoteClock``). Stops cleanly on Ctrl-C / SIGTERM.
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

from devhost.clock import BaseClock, RealClock, VirtualClock
from emulator import start
from emulator.core import EmulatorOptions
from emulator.scenario import ScenarioError, load_scenario

log = logging.getLogger("emulator")


def _remote_clock(url: str) -> BaseClock:
    try:
        from devhost.remote_clock import RemoteClock
    except ImportError as e:  # pragma: no cover - the devhost ships it
        raise SystemExit(f"--clock-url needs devhost.remote_clock.RemoteClock: {e}") from e
    clock: BaseClock = RemoteClock(url)
    return clock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8443, help="HTTPS port on 127.0.0.1 (0: any)")
    p.add_argument("--scenario", type=Path, default=None, help="scenario YAML/JSON file")
    time_group = p.add_mutually_exclusive_group()
    time_group.add_argument("--virtual-time", action="store_true", help="own a virtual clock")
    time_group.add_argument("--clock-url", default=None, help="share the devhost's clock")
    p.add_argument("--state-dir", type=Path, default=Path(".emulator"))
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
    if args.clock_url:
        clock = _remote_clock(args.clock_url)
    elif args.virtual_time:
        clock = VirtualClock(scenario.start_time)
    else:
        clock = RealClock()
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_dir: Path = args.ca_dir or state_dir
    running = start(
        scenario,
        clock=clock,
        port=args.port,
        ca_dir=ca_dir,
        options=EmulatorOptions(retry_after=args.retry_after),
    )
    endpoint = {
        "url": running.url,
        "ca_path": str(running.ca_path.resolve()),
        "pid": os.getpid(),
        "virtual": clock.virtual,
        "scenario": scenario.name,
    }
    # Atomically: whoever waits for the file never reads it half written.
    partial = state_dir / "endpoint.json.tmp"
    partial.write_text(json.dumps(endpoint, indent=2) + "\n")
    partial.replace(state_dir / "endpoint.json")
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
        clock.close()
        (state_dir / "endpoint.json").unlink(missing_ok=True)
        log.info("emulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
