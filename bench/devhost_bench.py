"""Benchmark of the devhost orchestration engine (a script, not a test).

Scenarios, each with a MemoryStore and a SqliteStore, each in a fresh subprocess (so the peak
RSS is the scenario's own):

* ``fanout``: 1,000 orchestrations, each fanning out 10 activities;
* ``suborch``: one orchestration fanning out 1,000 sub-orchestrations (one activity each);
* ``overhead``: one orchestration fanning out 2,000 no-op activities, against calling the
  same activity function 2,000 times directly: the engine's cost per activity call.

Prints a markdown table; ``--write`` also puts it into docs/performance.md under
"## Devhost engine" (other sections are kept). Run from the repo root:

    PYTHONPATH=. .venv/bin/python bench/devhost_bench.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devhost.clock import VirtualClock  # noqa: E402
from devhost.engine import Engine  # noqa: E402
from devhost.functions import index_app  # noqa: E402
from devhost.store import MemoryStore, SqliteStore, Store  # noqa: E402

COMMAND = "PYTHONPATH=. .venv/bin/python bench/devhost_bench.py --write"
HEADING = "## Devhost engine"

bp = df.Blueprint()


@bp.activity_trigger(input_name="value")
def bench_work(value: int) -> int:
    return value + 1


@bp.activity_trigger(input_name="value")
def bench_noop(value: int) -> int:
    return value


@bp.orchestration_trigger(context_name="context")
def bench_fan(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    results = yield context.task_all([context.call_activity("bench_work", i) for i in range(count)])
    return sum(results)


@bp.orchestration_trigger(context_name="context")
def bench_child(context: df.DurableOrchestrationContext) -> Any:
    return (yield context.call_activity("bench_work", context.get_input()))


@bp.orchestration_trigger(context_name="context")
def bench_parent(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    tasks = [context.call_sub_orchestrator("bench_child", i) for i in range(count)]
    results = yield context.task_all(tasks)
    return sum(results)


@bp.orchestration_trigger(context_name="context")
def bench_overhead(context: df.DurableOrchestrationContext) -> Any:
    count = int(context.get_input())
    results = yield context.task_all([context.call_activity("bench_noop", i) for i in range(count)])
    return len(results)


def _engine(store_kind: str, tmp: Path) -> Engine:
    app = df.DFApp()
    app.register_functions(bp)
    store: Store = MemoryStore() if store_kind == "memory" else SqliteStore(tmp / "bench.sqlite")
    clock = VirtualClock(datetime(2025, 1, 1, tzinfo=UTC))
    return Engine(index_app(app), store, clock, activity_workers=8, name="bench")


def run_scenario(scenario: str, store_kind: str) -> dict[str, Any]:
    """Run one scenario in this process; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = _engine(store_kind, Path(tmp))
        engine.start()
        try:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            if scenario == "fanout":
                ids = [engine.start_new("bench_fan", f"fan-{n}", 10) for n in range(1000)]
                engine.wait_idle(600)
                outputs = [(engine.get_status(i) or {}).get("output") for i in ids]
                assert outputs == [55] * 1000, outputs[:3]
                activities = 10_000
            elif scenario == "suborch":
                iid = engine.start_new("bench_parent", "parent", 1000)
                status = engine.wait_for(iid, 600)
                assert status["output"] == sum(range(1, 1001)), status
                activities = 1000
            elif scenario == "overhead":
                iid = engine.start_new("bench_overhead", "overhead", 2000)
                assert engine.wait_for(iid, 600)["output"] == 2000
                activities = 2000
            else:
                raise ValueError(f"unknown scenario {scenario!r}")
            engine.wait_idle(600)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
        finally:
            engine.stop()
            engine.store.close()
            engine.clock.close()
    figures: dict[str, Any] = {
        "scenario": scenario,
        "store": store_kind,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "episodes": engine.episodes,
        "episodes_per_s": engine.episodes / wall,
        "activities": activities,
        "per_activity_ms": 1000 * wall / activities,
    }
    if scenario == "overhead":
        function = engine.index.get("bench_noop").user_function
        started = time.perf_counter()
        for i in range(activities):
            function(i)
        direct = time.perf_counter() - started
        figures["direct_per_call_ms"] = 1000 * direct / activities
        figures["overhead_per_activity_ms"] = 1000 * (wall - direct) / activities
    return figures


def _in_subprocess(scenario: str, store_kind: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, __file__, "--one", scenario, store_kind],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{store_kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


LABELS = {
    "fanout": "1,000 orchestrations x 10 activities",
    "suborch": "1 orchestration x 1,000 sub-orchestrations",
    "overhead": "1 orchestration x 2,000 no-op activities",
}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | store | wall (s) | CPU (s) | peak RSS (MB) | episodes | episodes/s | "
        "wall ms per unit |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {LABELS[r['scenario']]} | {r['store']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} | {r['episodes']} | {r['episodes_per_s']:.0f} | "
            f"{r['per_activity_ms']:.3f} |"
        )
    overhead = [r for r in results if r["scenario"] == "overhead"]
    for r in overhead:
        lines.append("")
        lines.append(
            f"Engine overhead per activity call ({r['store']}): "
            f"{r['overhead_per_activity_ms']:.3f} ms wall, "
            f"{1000 * r['cpu_s'] / r['activities']:.3f} ms CPU (end-to-end through the engine "
            f"vs {r['direct_per_call_ms'] * 1000:.2f} µs calling the function directly)."
        )
    return "\n".join(lines)


def write_doc(text: str) -> Path:
    path = ROOT / "docs" / "performance.md"
    body = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    section = f"{HEADING}\n\n{text}\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(body):
        body = pattern.sub(section + "\n", body, count=1)
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(body.rstrip("\n") + "\n", encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("SCENARIO", "STORE"), help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument("--scenarios", default="fanout,suborch,overhead")
    parser.add_argument("--stores", default="memory,sqlite")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_scenario(*args.one)))
        return 0
    results = []
    for scenario in args.scenarios.split(","):
        for store_kind in args.stores.split(","):
            result = _in_subprocess(scenario, store_kind)
            print(
                f"{scenario}/{store_kind}: {result['wall_s']:.2f} s wall, "
                f"{result['episodes']} episodes",
                file=sys.stderr,
            )
            results.append(result)
    machine = f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on this machine (Python {machine}) with\n"
        f"`{COMMAND}`.\nEach scenario runs in its own process with a virtual clock and 8 activity "
        "workers; wall and CPU time cover the first start to the last completion; a unit is an "
        "activity call (a sub-orchestration with its activity in the second scenario). Targets: "
        "each scenario under 30 s with SQLite; under 1 ms of engine time per activity call. "
        f"Load average when it finished: {load} (other jobs share the machine: CPU time is the "
        "steadier figure).\n\n" + table(results)
    )
    print(text)
    if args.write:
        print(f"wrote {write_doc(text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
