"""``python -m devhost`` as a subprocess: settings, serving a test app, state across restarts."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps_http"
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(APPS))
import devhost_testkit as kit  # noqa: E402


def environment(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DEVHOST_") and k not in ("TASKHUB_NAME", "PYTHONPATH")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
    env["DEVHOST_ALLOW_ANONYMOUS"] = "true"  # the sample apps take no principal (docs/api.md)
    env.update(extra)
    return env


@contextmanager
def devhost_process(
    app_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    command = [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), "--port", "0", *args]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
    reader.start()
    seen: list[str] = []
    url = ""
    try:
        while not url:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError(f"devhost did not start: {''.join(seen)}") from None
            seen.append(line)
            if line.startswith("devhost listening on "):
                url = line.split()[3]
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "http": {"routePrefix": "api"},
                    "durableTask": {"hubName": "%TASKHUB_NAME%"},
                },
            }
        )
    )
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"DEVHOST_FUNCTION_KEY": "local-key", "TASKHUB_NAME": "FromLocalFile"},
            }
        )
    )
    return tmp_path


def test_serves_the_app_with_settings_from_local_settings_and_env(app_dir: Path) -> None:
    store = app_dir / "state" / "devhost.sqlite"
    env = environment(TASKHUB_NAME="FromEnvironment")
    with devhost_process(
        app_dir, "--app", "devhost_http_app:app", "--store", str(store), env=env
    ) as (
        url,
        proc,
    ):
        assert kit.call("GET", f"{url}/api/hello/cli").text == "hello cli"
        # DEVHOST_FUNCTION_KEY came from local.settings.json: function-level routes want it.
        assert kit.call("GET", f"{url}/api/items/1").status == 401
        assert kit.call("GET", f"{url}/api/items/1?code=local-key").status == 200
        # The environment wins over local.settings.json (TASKHUB_NAME).
        status = kit.call("GET", f"{url}/admin/host/status?code=local-key").json()
        assert status["taskHub"] == "FromEnvironment"
        # A durable round trip: the check-status URLs carry the key.
        started = kit.call("POST", f"{url}/api/orchestrators/greet_orchestrator", '["CLI"]')
        assert started.status == 202
        links = started.json()
        assert "code=local-key" in links["statusQueryGetUri"]
        done = kit.wait_status(links["statusQueryGetUri"])
        assert done["output"] == ["Hello CLI!"]
        assert (
            kit.call("GET", links["statusQueryGetUri"].replace("&code=local-key", "")).status == 401
        )
    assert proc.returncode == 0
    assert store.is_file()


def test_state_survives_a_restart(app_dir: Path) -> None:
    store = str(app_dir / "restart.sqlite")
    args = ("--app", "devhost_http_app:app", "--store", store)
    with devhost_process(app_dir, *args) as (url, _):
        links = kit.call(
            "POST", f"{url}/api/orchestrators/approval_orchestrator", '{"n": 1}'
        ).json()
        kit.wait_status(links["statusQueryGetUri"], ("Running",))
        instance_id = links["id"]
    with devhost_process(app_dir, *args) as (url, _):
        status_url = f"{url}/runtime/webhooks/durabletask/instances/{instance_id}?code=local-key"
        assert kit.wait_status(status_url, ("Running",))["input"] == {"n": 1}
        raised = kit.call(
            "POST",
            f"{url}/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/approve?code=local-key",
            '"yes"',
            {"Content-Type": "application/json"},
        )
        assert raised.status == 202
        assert kit.wait_status(status_url)["output"] == {"input": {"n": 1}, "approval": "yes"}


def test_a_bad_app_spec_fails_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devhost",
            "--app",
            "no_such_module:app",
            "--app-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "could not load the app 'no_such_module:app'" in result.stderr


def test_bad_arguments_fail_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devhost", "--port", "70000", "--app-dir", str(tmp_path)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--port 70000" in result.stderr
    (tmp_path / "local.settings.json").write_text("{not json")
    broken = subprocess.run(
        [sys.executable, "-m", "devhost", "--app-dir", str(tmp_path)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert broken.returncode == 2
    assert "local.settings.json: not valid JSON" in broken.stderr


def test_a_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "devhost",
                "--app",
                "devhost_http_app:app",
                "--app-dir",
                str(tmp_path),
                "--port",
                str(port),
                "--store",
                ":memory:",
            ],
            cwd=ROOT,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
