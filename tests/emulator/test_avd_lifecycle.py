"""AVD follows the VMs through the compute module's listener topics, at the virtual instant
things happen and without any AVD request: session host status, agent registration (custom
data, run commands installing the agent), ownership of API-created hosts, and simulated users
with Start VM on Connect."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timedelta
from typing import Any

from test_gallery_support import SUB, make_vm, run_to, settle

from emulator.avd import _host_rt, avd_state, issue_registration_token, open_session, sessions_of
from emulator.compute import guest_of, vm_runtime
from tests.emulator.conftest import SMALL_SCENARIO, vm_body

RG = "rg-avd"
POOL = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DesktopVirtualization"
    "/hostPools/hp1"
)
VMS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines"
DAY = datetime.fromisoformat("2026-01-05T00:00:00+00:00")
FIXED = {
    "vm.create": {"mean": "3m", "jitter": 0},
    "vm.start": {"mean": "1m", "jitter": 0},
    "vm.deallocate": {"mean": "90s", "jitter": 0},
    "vm.delete": {"mean": "1m", "jitter": 0},
    "avd.host.register": {"mean": "5m", "jitter": 0},
    "runcommand.dispatch": {"mean": "30s", "jitter": 0},
    "guest.msi_install": {"mean": "1m", "jitter": 0},
}


def scenario(hosts: list[dict[str, Any]] | None = None, **pool: Any) -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["latency"] = dict(FIXED)
    sc["host_pools"] = [
        {
            "name": "hp1",
            "resource_group": RG,
            "location": "westeurope",
            "max_session_limit": 4,
            "hosts": hosts if hosts is not None else [{"name_prefix": "avd", "count": 2}],
            **pool,
        }
    ]
    return sc


def paused(emulator_factory: Any, sc: dict[str, Any]) -> Any:
    env = emulator_factory(sc)
    env.clock.pause()
    return env


def avd_requests(env: Any) -> int:
    ops = env.emu.metrics.requests
    return sum(n for op, n in ops.items() if "desktopvirtualization" in op.lower())


def pending_labels(env: Any) -> list[str]:
    with env.emu.lock:
        return [p["label"] for p in env.emu.pending()]


def token(env: Any, hours: float = 2) -> str:
    with env.emu.lock:
        return issue_registration_token(env.emu, POOL, env.clock.now() + timedelta(hours=hours))


def host_runtime(env: Any, name: str) -> Any:
    rt = _host_rt(env.emu, f"{POOL}/sessionHosts/{name}")
    assert rt is not None, f"{name} is not a session host"
    return rt


# -- status ---------------------------------------------------------------------------------------


def test_host_goes_shutdown_the_instant_its_vm_deallocates(emulator_factory: Any) -> None:
    env = paused(emulator_factory, scenario())
    cc = env.compute_client()
    with env.emu.lock:
        open_session(env.emu, f"{POOL}/sessionHosts/avd-0", "ann@contoso.com", "CONTOSO\\ann")
    t0 = env.clock.now()
    cc.virtual_machines.begin_deallocate(RG, "avd-0", polling=False)
    with env.emu.lock:
        rt = host_runtime(env, "avd-0")
        assert vm_runtime(env.emu, rt.vm_id).power == "deallocating"  # type: ignore[union-attr]
        assert (rt.status, rt.status_since) == ("Shutdown", t0)
        assert sessions_of(env.emu, f"{POOL}/sessionHosts/avd-0") == []  # lost with the host
        assert avd_state(env.emu).stats.lost_to_shutdown_active == 1
    run_to(env, t0 + timedelta(minutes=5))
    with env.emu.lock:
        rt = host_runtime(env, "avd-0")
        assert vm_runtime(env.emu, rt.vm_id).power == "deallocated"  # type: ignore[union-attr]
        assert (rt.status, rt.status_since) == ("Shutdown", t0)
        assert host_runtime(env, "avd-1").status == "Available"
    # Deleted: Unavailable the instant the VM is gone.
    cc.virtual_machines.begin_delete(RG, "avd-1", polling=False)
    run_to(env, t0 + timedelta(minutes=10))
    with env.emu.lock:
        rt = host_runtime(env, "avd-1")
        assert (rt.status, rt.status_since) == ("Unavailable", t0 + timedelta(minutes=6))
        statuses = [
            (datetime.fromisoformat(e["time"]), e["host"].rsplit("/", 1)[-1], e["new"])
            for e in avd_state(env.emu).log
            if e["kind"] == "hostStatus" and e["old"]
        ]
    assert statuses == [
        (t0, "avd-0", "Shutdown"),
        (t0 + timedelta(minutes=6), "avd-1", "Unavailable"),
    ]
    assert avd_requests(env) == 0  # nobody asked AVD: the hooks did it
    assert pending_labels(env) == []  # and nothing polls


# -- registration ---------------------------------------------------------------------------------


def _custom_data(tok: str) -> str:
    return base64.b64encode(json.dumps({"avdRegistrationToken": tok, "hostPool": POOL}).encode())


def test_vm_with_a_valid_token_registers_exactly_the_agent_delay_after_boot(
    emulator_factory: Any,
) -> None:
    env = paused(emulator_factory, scenario())
    cc = env.compute_client()
    body = vm_body()
    body["properties"]["osProfile"]["customData"] = _custom_data(token(env)).decode()
    t0 = env.clock.now()
    cc.virtual_machines.begin_create_or_update(RG, "avd-7", body, polling=False)
    run_to(env, t0 + timedelta(minutes=7, seconds=59))
    with env.emu.lock:
        assert not env.emu.store.exists(f"{POOL}/sessionHosts/build")  # not yet
    run_to(env, t0 + timedelta(minutes=20))
    with env.emu.lock:
        rt = host_runtime(env, "build")  # the session host is named after the computer name
        assert rt.vm_id.lower() == f"{VMS}/avd-7".lower()
        # booted at +3 min (vm.create), registered avd.host.register (5 min) after that
        assert rt.registered_at == t0 + timedelta(minutes=8)
        assert rt.status == "Available"
        assert avd_state(env.emu).stats.registrations == 3  # 2 seeded + this one
    assert avd_requests(env) == 0
    assert pending_labels(env) == []


def test_installing_the_agent_by_run_command_registers_the_host(emulator_factory: Any) -> None:
    env = paused(emulator_factory, scenario())
    cc = env.compute_client()
    tok = token(env)
    vm_id = make_vm(env, "avd-5", rg=RG)
    heard: list[datetime] = []
    env.emu.add_listener("vm.guest", lambda vm, kind: heard.append(env.clock.now()))
    t0 = env.clock.now()
    cc.virtual_machines.begin_run_command(
        RG,
        "avd-5",
        {
            "commandId": "RunPowerShellScript",
            "script": [
                "msiexec /i C:\\AVD\\Microsoft.RDInfra.RDAgent.Installer-x64-1.0.10673.1000.msi "
                f"/quiet REGISTRATIONTOKEN={tok}",
                "msiexec /i C:\\AVD\\Microsoft.RDInfra.RDAgentBootLoader.Installer-x64.msi /quiet",
            ],
        },
        polling=False,
    )
    run_to(env, t0 + timedelta(minutes=20))
    installed = t0 + timedelta(seconds=30 + 60)  # dispatch, then the agent's install
    assert heard[:1] == [installed]
    with env.emu.lock:
        rt = host_runtime(env, "avd-5")
        assert rt.vm_id.lower() == vm_id.lower()
        assert rt.registered_at == installed + timedelta(minutes=5)
        guest = guest_of(env.emu, vm_id)
        assert guest is not None
        assert "Microsoft.RDInfra.RDAgent" in guest.apps
        assert tok not in "\n".join(guest.history)  # never kept in the clear
    assert avd_requests(env) == 0


def test_register_command_with_a_replaced_token_is_rejected(emulator_factory: Any) -> None:
    env = paused(emulator_factory, scenario())
    old = token(env)
    token(env)  # replaces it
    make_vm(env, "avd-6", rg=RG)
    t0 = env.clock.now()
    env.compute_client().virtual_machines.begin_run_command(
        RG,
        "avd-6",
        {"commandId": "RunPowerShellScript", "script": [f"Register-AVDSessionHost -Token {old}"]},
        polling=False,
    )
    run_to(env, t0 + timedelta(minutes=20))
    with env.emu.lock:
        rejected = list(avd_state(env.emu).rejected)
        assert not env.emu.store.exists(f"{POOL}/sessionHosts/avd-6")
    assert [r["reason"] for r in rejected] == ["InvalidRegistrationToken: the token was replaced"]
    assert old not in json.dumps(env.emu.report())


# -- ownership ------------------------------------------------------------------------------------


def test_api_created_session_hosts_are_owned_by_their_pool_not_orphans(
    emulator_factory: Any,
) -> None:
    env = paused(emulator_factory, scenario())
    cc = env.compute_client()
    body = vm_body(nic_delete="Detach", disk_delete="Detach")
    body["properties"]["osProfile"]["customData"] = _custom_data(token(env)).decode()
    t0 = env.clock.now()
    cc.virtual_machines.begin_create_or_update(RG, "avd-8", body, polling=False)

    def untracked() -> list[str]:
        return sorted(o["type"] for o in env.emu.report()["orphans"] if o["reason"] == "untracked")

    run_to(env, t0 + timedelta(minutes=4))  # booted, not registered yet: nobody owns it
    assert untracked() == [
        "Microsoft.Compute/disks",
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Network/networkInterfaces",
    ]
    run_to(env, t0 + timedelta(minutes=10))  # a session host of hp1 now, with disk and NIC
    assert untracked() == []
    env.avd_client().session_hosts.delete(RG, "hp1", "build")
    assert len(untracked()) == 3  # no longer a session host: leftovers again


# -- simulated users: Start VM on Connect ---------------------------------------------------------


def users_scenario(start_on_connect: bool) -> dict[str, Any]:
    return scenario(
        hosts=[{"name_prefix": "avd", "count": 2, "power": "deallocated"}],
        max_session_limit=2,
        start_vm_on_connect=start_on_connect,
        user_profile={
            "users": 3,
            "logon_start_hour": 7,
            "logon_end_hour": 8,
            "mean_session_minutes": 600,
            "disconnect_probability": 0,
        },
    )


def test_start_vm_on_connect_starts_a_host_and_the_user_logs_on_when_it_is_up(
    emulator_factory: Any,
) -> None:
    env = paused(emulator_factory, users_scenario(True))
    run_to(env, DAY + timedelta(hours=9))
    rep = env.emu.report()["users"]["pools"][0]
    assert rep["logons"] == 3
    assert rep["failedLogons"] == 0
    assert rep["placementViolations"] == []
    starts = rep["vmStartsOnConnect"]
    # Two sessions fit on one host: the second host starts only when the first is full.
    assert [s["vm"].rsplit("/", 1)[-1] for s in starts] == ["avd-0", "avd-1"]
    with env.emu.lock:
        sessions = {
            name: sessions_of(env.emu, f"{POOL}/sessionHosts/{name}") for name in ("avd-0", "avd-1")
        }
        assert [vm_runtime(env.emu, f"{VMS}/avd-{i}").power for i in (0, 1)] == [  # type: ignore[union-attr]
            "running",
            "running",
        ]
    assert [len(sessions["avd-0"]), len(sessions["avd-1"])] == [2, 1]
    # The user who started a host logged on the instant it was up (vm.start: 1 min).
    for start in starts:
        host = start["vm"].rsplit("/", 1)[-1]
        up = datetime.fromisoformat(start["time"]) + timedelta(minutes=1)
        created = sorted(
            datetime.fromisoformat(s["properties"]["createTime"]) for s in sessions[host]
        )
        assert created[0] == up
        mine = [s for s in sessions[host] if s["properties"]["userPrincipalName"] == start["user"]]
        assert [datetime.fromisoformat(s["properties"]["createTime"]) for s in mine] == [up]
    first_logon = datetime.fromisoformat(starts[0]["time"])
    assert DAY + timedelta(hours=7) <= first_logon < DAY + timedelta(hours=8)


def test_without_start_vm_on_connect_users_find_no_host(emulator_factory: Any) -> None:
    env = paused(emulator_factory, users_scenario(False))
    run_to(env, DAY + timedelta(hours=9))
    settle(env)
    rep = env.emu.report()["users"]["pools"][0]
    assert rep["logons"] == 0
    assert rep["failedLogons"] >= 3
    assert rep["vmStartsOnConnect"] == []
    with env.emu.lock:
        assert [vm_runtime(env.emu, f"{VMS}/avd-{i}").power for i in (0, 1)] == [  # type: ignore[union-attr]
            "deallocated",
            "deallocated",
        ]
