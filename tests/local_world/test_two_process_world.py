"""The two-process local world as a user runs it: ``python3 dev.py up``, restarts of either
process, an app that does nothing against an Azure that is not up yet. Real subprocesses on
loopback; every wait bounded in real seconds."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.compute import ComputeManagementClient

from dev import ROOT
from tests.emulator.conftest import FAST_CLIENT, StaticCredential
from tests.local_world.two_process import SUBSCRIPTION, TwoProcessWorld, free_port

pytestmark = pytest.mark.slow


def _until(what: str, probe: Any, real_timeout: float = 60.0, logs: Any = None) -> Any:
    deadline = time.monotonic() + real_timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {real_timeout} s\n{logs() if logs else ''}")


def test_dev_py_up_starts_the_pair_wired_and_stops_both(tmp_path: Path) -> None:
    world = TwoProcessWorld(tmp_path / "unused")  # for its HTTP helpers only
    state = tmp_path / "up"
    world.up.state = state
    world.up.emu_dir = state / "emulator"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "dev.py"),
                "up",
                "--state-dir",
                str(state),
                "--devhost-port",
                str(world.up.devhost_port),
                "--emulator-port",
                str(world.up.emulator_port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _until("local world up", lambda: "local world up" in log.read_text(), 120, log.read_text)
        text = log.read_text()
        assert f"AZURE_ARM_ENDPOINT={world.up.emu_url}" in text
        assert f"AZURE_CA_BUNDLE={state / 'emulator' / 'ca.pem'}" in text
        assert f"AZURE_SUBSCRIPTION_ID={SUBSCRIPTION}" in text
        # One clock: the emulator is a participant of the devhost's virtual time.
        clock = world.host_call("GET", "/_clock")[1]
        assert clock["virtual"] is True
        assert "emulator" in {p["name"] for p in clock["participants"]}
        # Event Grid: the app's functions are subscribed at the devhost's webhook.
        subs = {s["name"]: s for s in world.emulator_get("/_emulator/eventSubscriptions")["value"]}
        for function in ("on_marketplace_image_published", "on_sysprep_signal"):
            assert subs[function]["endpoint"] == (
                f"{world.up.host_url}/runtime/webhooks/eventgrid?functionName={function}"
            )
        status = world.host_call("GET", "/admin/host/status")[1]
        assert status["clock"]["virtual"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    with pytest.raises(OSError, match=r"refused|Errno"):
        world.host_call("GET", "/_clock")  # both stopped: nothing listens
    with pytest.raises(OSError, match=r"refused|Errno"):
        world.emulator_get("/_emulator/health")


def test_time_holds_until_the_emulator_joins_so_an_idle_app_calls_nothing(
    tmp_path: Path,
) -> None:
    world = TwoProcessWorld(tmp_path / "world")
    try:
        world.start_devhost()  # the devhost first, its Azure not up yet
        held = _until("the devhost's clock", lambda: world.host_call("GET", "/_clock")[1])
        assert held["awaiting"] == ["emulator"]
        functions = world.host_call("GET", "/admin/functions")[1]
        timers = {f["name"]: f for f in functions if f["trigger"] == "timerTrigger"}
        assert timers
        assert all(not t.get("firings") for t in timers.values()), timers
        assert world.clock() == datetime.fromisoformat(held["now"])  # no timer ran: no jump

        world.start_emulator()
        world.wait_ready()
        _until("time to move", lambda: world.clock() > datetime.fromisoformat(held["now"]))
        assert world.host_call("GET", "/_clock")[1]["awaiting"] == []
    finally:
        world.stop()


def test_the_clock_never_goes_backwards_across_devhost_restarts(tmp_path: Path) -> None:
    world = TwoProcessWorld(tmp_path / "world")
    try:
        world.start()
        seen: list[datetime] = []
        for stop in (signal.SIGTERM, signal.SIGKILL):
            start = world.clock()
            _until("time to move", lambda at=start: world.clock() > at)
            before = world.clock()
            assert world.devhost is not None
            world.devhost.send_signal(stop)
            world.devhost.wait(timeout=30)
            emulator_alone = datetime.fromisoformat(world.emulator_get("/_emulator/health")["now"])
            world.start_devhost()
            world.wait_ready()
            after = world.clock()
            assert after >= before, (stop, after, before)
            # The emulator's scheduler survived and follows the restarted owner's time.
            _until(
                "the emulator's time to move on",
                lambda alone=emulator_alone: (
                    datetime.fromisoformat(world.emulator_get("/_emulator/health")["now"]) > alone
                ),
            )
            seen += [before, after]
        assert seen == sorted(seen)
        assert world.emulator is not None
        assert world.emulator.poll() is None
    finally:
        world.stop()


def _emulator(state: Path, port: int) -> subprocess.Popen[bytes]:
    (state / "endpoint.json").unlink(missing_ok=True)  # a killed one leaves its file behind
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--port",
            str(port),
            "--virtual-time",
            "--scenario",
            str(ROOT / "scenarios" / "default.yaml"),
            "--state-dir",
            str(state),
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _gallery_exists(client: ComputeManagementClient, name: str) -> bool:
    return any(g.name == name for g in client.galleries.list_by_resource_group("rg-image-factory"))


def test_the_emulator_keeps_its_azure_state_across_its_restarts(tmp_path: Path) -> None:
    state = tmp_path / "emulator"
    port = free_port()
    url = f"https://127.0.0.1:{port}"

    def client() -> ComputeManagementClient:
        _until("the emulator", lambda: (state / "endpoint.json").exists())
        return ComputeManagementClient(
            StaticCredential(),
            SUBSCRIPTION,
            base_url=url,
            connection_verify=str(state / "ca.pem"),
            **FAST_CLIENT,
        )

    def health() -> datetime:
        ctx = ssl.create_default_context(cafile=str(state / "ca.pem"))
        import json
        import urllib.request

        with urllib.request.urlopen(f"{url}/_emulator/health", context=ctx, timeout=10) as r:
            return datetime.fromisoformat(json.loads(r.read())["now"])

    proc = _emulator(state, port)
    try:
        c = client()
        c.galleries.begin_create_or_update(
            "rg-image-factory", "gal_kept_sigterm", {"location": "westeurope"}
        ).result()
        ca = (state / "ca.pem").read_bytes()
        before = health()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

        proc = _emulator(state, port)
        c = client()
        assert _gallery_exists(c, "gal_kept_sigterm")
        assert (state / "ca.pem").read_bytes() == ca  # clients keep trusting it
        assert health() >= before  # its own virtual time resumes, never earlier
        saved = (state / "azure-state.pickle").stat().st_mtime_ns
        c.galleries.begin_create_or_update(
            "rg-image-factory", "gal_kept_sigkill", {"location": "westeurope"}
        ).result()
        _until(
            "the state to be saved",
            lambda: (state / "azure-state.pickle").stat().st_mtime_ns > saved,
        )
        proc.kill()  # no chance to save on the way out
        proc.wait(timeout=30)

        proc = _emulator(state, port)
        c = client()
        assert _gallery_exists(c, "gal_kept_sigterm")
        assert _gallery_exists(c, "gal_kept_sigkill")
        # Seeded resources are still there, once each.
        vms = [vm.name for vm in c.virtual_machines.list("rg-avd-dev")]
        assert vms == ["avd-dev-0"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
