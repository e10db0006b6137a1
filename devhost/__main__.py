"""``python -m devhost``: run the Functions app on the local host until Ctrl+C.

    python -m devhost [--app function_app:app] [--port 7071]
                      [--store .devhost/state.sqlite | :memory:] [--virtual-time]
                      [--start-time ISO] [--await-clock-participant NAME ...]
                      [--activity-workers N] [--app-dir DIR] [--log-level INFO]
                      [--public-url https://host[:port]]

Settings: ``local.settings.json`` ``Values`` are put into the environment unless the environment
already has them (as ``func start`` does), before the app is imported. See docs/devhost.md.

With ``--virtual-time`` and a SQLite store, the virtual clock is durable: its last instant (and
the other processes sharing it through ``/_clock``) are kept in ``<store>.clock.json`` beside the
store, so a restarted devhost resumes from that instant, never earlier, and waits for those
processes to come back before time moves. ``--await-clock-participant emulator`` holds virtual
time still until the emulator (``python -m emulator --clock-url ...``) has joined, so an app whose
Azure is not up yet does not race through hours of timers against nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType

from devhost.clock import BaseClock, ClockFile, make_clock
from devhost.functions import HTTP, load_app
from devhost.host import DevHost, apply_local_settings

log = logging.getLogger("devhost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Run an Azure Functions (Python v2 + Durable) app on the local devhost.",
    )
    parser.add_argument(
        "--app", default="function_app:app", help="module:attribute of the app (function_app:app)"
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        help="the app's folder: host.json, local.settings.json, import path (default: .)",
    )
    parser.add_argument(
        "--port", type=int, default=7071, help="port on 127.0.0.1 (default 7071; 0: any free)"
    )
    parser.add_argument(
        "--store",
        default=".devhost/state.sqlite",
        help="durable state: a SQLite file (relative to --app-dir) or :memory:",
    )
    parser.add_argument(
        "--virtual-time",
        action="store_true",
        help="run on a virtual clock that jumps to the next due timer when everything is idle",
    )
    parser.add_argument(
        "--start-time",
        default=None,
        help="virtual time's first instant (ISO 8601 with offset) when no saved instant exists",
    )
    parser.add_argument(
        "--await-clock-participant",
        action="append",
        default=[],
        metavar="NAME",
        help="virtual time holds still until this remote participant joins /_clock "
        "(the emulator's is 'emulator'); repeatable",
    )
    parser.add_argument(
        "--activity-workers", type=int, default=8, help="activities run at once (default 8)"
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="base of every URL handed out (check-status URLs, Location headers); default: "
        "DEVHOST_PUBLIC_URL, else http://127.0.0.1:<port>. The client's Host header is never used",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def _fail(message: str) -> int:
    print(f"devhost: {message}", file=sys.stderr, flush=True)
    return 2


def clock_file_for(store: str) -> Path | None:
    """Where a durable virtual clock lives: beside the SQLite store (None for ``:memory:``)."""
    if store == ":memory:":
        return None
    path = Path(store)
    return path.with_name(f"{path.stem}.clock.json")


def make_host_clock(
    virtual: bool, store: str, start: datetime | None, awaited: list[str]
) -> BaseClock:
    """The devhost's clock: real, or virtual and durable beside the store."""
    if not virtual:
        return make_clock(False)
    where = clock_file_for(store)
    state = ClockFile(where) if where is not None else None
    clock = make_clock(True, start, state)
    for name in awaited:
        clock.expect(name)
    return clock


def _start_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"--start-time must carry a UTC offset (Z), got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not 0 <= args.port <= 65535:
        return _fail(f"--port {args.port} is not a port number")
    if args.activity_workers < 1:
        return _fail("--activity-workers must be at least 1")
    app_dir = Path(args.app_dir).resolve()
    if not app_dir.is_dir():
        return _fail(f"--app-dir {app_dir} is not a folder")
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    try:
        applied = apply_local_settings(app_dir)
    except ValueError as exc:
        return _fail(str(exc))
    if applied:
        log.info("local.settings.json: %d setting(s) applied", len(applied))
    try:
        app = load_app(args.app)
    except Exception as exc:
        log.exception("could not load %s", args.app)
        return _fail(f"could not load the app {args.app!r}: {type(exc).__name__}: {exc}")
    store = args.store
    if store != ":memory:" and not Path(store).is_absolute():
        store = str(app_dir / store)
    if args.await_clock_participant and not args.virtual_time:
        return _fail("--await-clock-participant needs --virtual-time")
    try:
        clock = make_host_clock(
            args.virtual_time, store, _start_time(args.start_time), args.await_clock_participant
        )
    except ValueError as exc:
        return _fail(str(exc))
    try:
        host = DevHost(
            app,
            app_dir=app_dir,
            store=store,
            clock=clock,
            port=args.port,
            activity_workers=args.activity_workers,
            public_url=args.public_url,
        )
    except OSError as exc:
        clock.close()
        return _fail(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}")
    except ValueError as exc:
        clock.close()
        return _fail(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host.start()
    try:
        print(
            f"devhost listening on {host.url} (task hub {host.task_hub}, "
            f"{'virtual' if host.clock.virtual else 'real'} time, "
            f"now {host.clock.now():%Y-%m-%dT%H:%M:%SZ})",
            flush=True,
        )
        if host.public_url != host.url:
            print(f"  URLs handed out are built from {host.public_url}", flush=True)
        waiting = host.clock.expected()
        if waiting:
            print(f"  clock held until {', '.join(waiting)} join {host.url}/_clock", flush=True)
        for item in host.functions_listing():
            if item["trigger"] == HTTP and "invokeUrlTemplate" in item:
                methods = ",".join(item["methods"])
                print(f"  {item['name']}: [{methods}] {item['invokeUrlTemplate']}", flush=True)
            elif "error" in item:
                print(f"  {item['name']}: NOT RUNNING: {item['error']}", flush=True)
            else:
                print(f"  {item['name']}: {item['trigger']}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("devhost stopping", flush=True)
        host.stop()
        clock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
