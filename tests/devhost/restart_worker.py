"""Runs an engine on a SQLite store for the kill-and-restart test (a script, not a test).

``python restart_worker.py DB LOG start ID SPEC_JSON`` starts an orchestration and waits for it;
``python restart_worker.py DB LOG resume ID`` only resumes what the store holds and waits.
Prints the final status as JSON on stdout. The test kills the first run with SIGKILL.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))
sys.path.insert(0, str(HERE.parent.parent))

from engine_harness import index_for  # noqa: E402

from devhost.clock import RealClock  # noqa: E402
from devhost.engine import Engine  # noqa: E402
from devhost.store import SqliteStore  # noqa: E402


def main(argv: list[str]) -> int:
    db, log, mode, instance_id = argv[:4]
    os.environ["DEVHOST_RESTART_LOG"] = log
    clock = RealClock()
    engine = Engine(index_for("engine_restart_app"), SqliteStore(db), clock, activity_workers=3)
    engine.start()
    if mode == "start":
        engine.start_new("restart_flow", instance_id, json.loads(argv[4]))
    print("ready", flush=True)
    status = engine.wait_for(instance_id, real_timeout=60)
    print(json.dumps(status), flush=True)
    engine.stop()
    engine.store.close()
    clock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
