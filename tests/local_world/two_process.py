"""The two-process local world for tests: the devhost and the emulator as real subprocesses.

Wired exactly as ``python3 dev.py up`` wires them (:class:`dev.UpWorld`): virtual time owned by
the devhost (``--virtual-time --await-clock-participant emulator``), the emulator on its clock
(``--clock-url``) with ``--state-dir``, the app's Event Grid subscriptions. Loopback only; every
wait is bounded in real seconds. Logs go to files in the state dir (shown when a test fails).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from dev import ROOT, UpWorld
from shared.names import ENTITY_BUILD_QUEUE, build_instance_id

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
DURABLE = "/runtime/webhooks/durabletask/instances"
_DROPPED = ("DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY", "SYSPREP_SIGNAL_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TwoProcessWorld:
    """Start, kill, restart and query the pair; ``stop()`` ends whatever still runs."""

    def __init__(self, state: Path, *, scenario: Path | None = None) -> None:
        for name in _DROPPED:  # a developer's keys must not change what the test sees
            os.environ.pop(name, None)
        self.up = UpWorld(
            state,
            free_port(),
            free_port(),
            scenario or ROOT / "scenarios" / "default.yaml",
            ROOT / "catalogue" / "images.yaml",
            SUBSCRIPTION,
        )
        self.devhost: subprocess.Popen[bytes] | None = None
        self.emulator: subprocess.Popen[bytes] | None = None
        self._ctx: ssl.SSLContext | None = None
        self._logs: list[Path] = []
        self.devhost_starts = 0

    # -- processes ------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = self.up.state / f"{name}.log"
        self._logs.append(log)
        out = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            return subprocess.Popen(
                cmd, cwd=ROOT, env=self.up.env(), stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            out.close()

    def start_devhost(self) -> None:
        self.devhost_starts += 1
        self.devhost = self._spawn(f"devhost-{self.devhost_starts}", self.up.devhost_command())

    def start_emulator(self) -> None:
        (self.up.emu_dir / "endpoint.json").unlink(missing_ok=True)
        self.emulator = self._spawn("emulator", self.up.emulator_command())
        self._ctx = None

    def start(self, real_timeout: float = 90.0) -> None:
        self.start_emulator()  # first: it waits for the clock owner (any order works)
        self.start_devhost()
        self.wait_ready(real_timeout)
        self.up.subscribe(self.ctx)

    def wait_ready(self, real_timeout: float = 90.0) -> None:
        deadline = time.monotonic() + real_timeout
        while time.monotonic() < deadline:
            for proc in (self.devhost, self.emulator):
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"a process exited ({proc.args}):\n{self.logs()}")
            try:
                self.emulator_get("/_emulator/health")
                self.clock()
                if not self.clock_participants().get("emulator"):
                    raise OSError("the emulator has not joined the clock yet")
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise AssertionError(f"the world did not come up in {real_timeout} s:\n{self.logs()}")

    def kill_devhost(self) -> None:
        assert self.devhost is not None
        self.devhost.kill()  # SIGKILL: no clean-up of any kind
        self.devhost.wait(timeout=20)

    def stop(self) -> None:
        for proc in (self.devhost, self.emulator):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.devhost, self.emulator):
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for log in self._logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {log.name} ---\n{text[-tail:]}")
        return "\n".join(parts)

    # -- HTTP -----------------------------------------------------------------------------------
    @property
    def ctx(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=str(self.up.emu_dir / "ca.pem"))
        return self._ctx

    def _json(
        self, url: str, method: str = "GET", body: Any = None, ctx: ssl.SSLContext | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                return err.code, json.loads(raw) if raw else None
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def emulator_get(self, path: str) -> Any:
        status, body = self._json(f"{self.up.emu_url}{path}", ctx=self.ctx)
        if status != 200:
            raise OSError(f"emulator {path}: {status} {body}")
        return body

    def host_call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self._json(f"{self.up.host_url}{path}", method, body)

    def clock(self) -> datetime:
        status, body = self._json(f"{self.up.host_url}/_clock")
        if status != 200:
            raise OSError(f"/_clock: {status}")
        return datetime.fromisoformat(body["now"])

    def clock_participants(self) -> dict[str, dict[str, Any]]:
        _, body = self._json(f"{self.up.host_url}/_clock")
        return {p["name"]: p for p in body["participants"]}

    def hold_clock(self, name: str, busy: bool, next_due: datetime | None = None) -> None:
        """Join the clock as a remote participant: busy (time holds), or idle with work due at
        ``next_due`` (time never passes it: once there, it stops until the next report)."""
        status, body = self._json(
            f"{self.up.host_url}/_clock/participants/{name}",
            "PUT",
            {
                "busy": 1 if busy else 0,
                "next_due": None if next_due is None else next_due.isoformat(),
            },
        )
        assert status == 200, body

    def release_clock(self, name: str) -> None:
        self.hold_clock(name, busy=False)
        status, body = self._json(f"{self.up.host_url}/_clock/participants/{name}", "DELETE")
        assert status == 200, body

    # -- the app --------------------------------------------------------------------------------
    def status(self, instance_id: str) -> dict[str, Any]:
        code, body = self._json(f"{self.up.host_url}{DURABLE}/{instance_id}")
        return body if code in (200, 202) and isinstance(body, dict) else {}

    def current_build(self, image: str) -> str | None:
        """The build the image's queue entity runs now, else the last one it recorded."""
        code, body = self._json(
            f"{self.up.host_url}/runtime/webhooks/durabletask/entities/{ENTITY_BUILD_QUEUE}/{image}"
        )
        state = body if code == 200 and isinstance(body, dict) else {}
        running = state.get("running") or {}
        if running.get("build_id"):
            return str(running["build_id"])
        done = [r for r in state.get("recent") or [] if r.get("build_id")]
        return str(done[-1]["build_id"]) if done else None

    def build_status(self, build_id: str) -> dict[str, Any]:
        return self.status(build_instance_id(build_id))

    def vm_writes(self) -> dict[str, int]:
        """Successful VM PUTs by VM name, from the emulator's Event Grid log."""
        body = self.emulator_get("/_emulator/events?type=Microsoft.Resources.ResourceWriteSuccess")
        counts: dict[str, int] = {}
        for event in body["value"]:
            data = event.get("data") or {}
            if str(data.get("operationName", "")).lower() != (
                "microsoft.compute/virtualmachines/write"
            ):
                continue
            name = str(event["subject"]).rsplit("/", 1)[-1]
            counts[name] = counts.get(name, 0) + 1
        return counts

    def vm_puts(self) -> int:
        ops = self.emulator_get("/_emulator/metrics")["operations"]
        return int((ops.get("Microsoft.Compute/virtualMachines/write") or {}).get("total", 0))
