"""``python -m emulator``: starts, publishes its endpoint, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_serves_and_stops(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            "0",
            "--virtual-time",
            "--scenario",
            str(REPO / "scenarios" / "default.yaml"),
            "--state-dir",
            str(state),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint_file = state / "endpoint.json"
        deadline = time.monotonic() + 30
        while not endpoint_file.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.05)
        endpoint = json.loads(endpoint_file.read_text())
        assert endpoint["virtual"] is True
        ctx = ssl.create_default_context(cafile=endpoint["ca_path"])
        with urllib.request.urlopen(endpoint["url"] + "/_emulator/health", context=ctx) as r:
            assert json.loads(r.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Azure emulator listening on https://127.0.0.1:" in out
    assert not (state / "endpoint.json").exists()


def test_cli_refuses_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: nope\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            "0",
            "--scenario",
            str(bad),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "seed:" in result.stderr
