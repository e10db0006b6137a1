"""Simulated AVD users: placement, drain mode, messages, work lost, capacity, determinism."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest
from test_gallery_support import SUB, run_to

from emulator.avd import _host_rt, avd_state, sessions_of
from emulator.users import pool_sim
from tests.emulator.conftest import SMALL_SCENARIO

RG = "rg-avd"
POOL_ID = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DesktopVirtualization"
    "/hostPools/hp1"
)
DAY = datetime.fromisoformat("2026-01-05T00:00:00+00:00")


def scenario(
    *,
    hosts: list[dict[str, Any]] | None = None,
    seed: int = 7,
    **profile: Any,
) -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["seed"] = seed
    prof = {
        "users": 10,
        "logon_start_hour": 7,
        "logon_end_hour": 10,
        "mean_session_minutes": 150,
        "disconnect_probability": 0.2,
        **profile,
    }
    pool: dict[str, Any] = {
        "name": "hp1",
        "resource_group": RG,
        "location": "westeurope",
        "max_session_limit": 4,
        "hosts": hosts or [{"name_prefix": "avd", "count": 3}],
        "user_profile": prof,
    }
    for key in ("load_balancer_type", "host_pool_type", "max_session_limit"):
        if key in profile:
            pool[key] = prof.pop(key)
    sc["host_pools"] = [pool]
    return sc


def paused(emulator_factory: Any, sc: dict[str, Any]) -> Any:
    env = emulator_factory(sc)
    env.clock.pause()
    return env


def at(hour: float) -> datetime:
    return DAY + timedelta(hours=hour)


def sessions_by_host(env: Any) -> dict[str, list[dict[str, Any]]]:
    with env.emu.lock:
        hosts = env.emu.store.list(
            POOL_ID + "/sessionHosts", "Microsoft.DesktopVirtualization/hostpools/sessionhosts"
        )
        return {h["name"].split("/")[-1]: sessions_of(env.emu, h["id"]) for h in hosts}


def ended_on(env: Any, host: str) -> list[dict[str, Any]]:
    with env.emu.lock:
        return [
            e
            for e in avd_state(env.emu).log
            if e["kind"] == "sessionEnd" and f"/sessionHosts/{host}/" in e["session"]
        ]


def users_report(env: Any) -> dict[str, Any]:
    return env.emu.report()["users"]["pools"][0]


def test_users_never_land_on_drained_hosts_and_drained_users_stay(emulator_factory: Any) -> None:
    sc = scenario(
        hosts=[
            {"name_prefix": "avd", "count": 2},
            {"name_prefix": "drained", "count": 1, "allow_new_session": False},
        ],
        users=8,
        logon_start_hour=7,
        logon_end_hour=9,
        mean_session_minutes=240,
    )
    env = paused(emulator_factory, sc)
    ac = env.avd_client()
    run_to(env, at(9.5))
    before = sessions_by_host(env)
    assert before["drained-0"] == []
    on_avd0 = {s["id"] for s in before["avd-0"]}
    assert on_avd0, before
    host_id = f"{POOL_ID}/sessionHosts/avd-0"
    with env.emu.lock:
        counter = _host_rt(env.emu, host_id).next_session  # type: ignore[union-attr]
    ac.session_hosts.update(
        RG, "hp1", "avd-0", session_host={"properties": {"allowNewSession": False}}
    )
    run_to(env, at(16))
    # Nobody was ever placed on a drained host ...
    assert ended_on(env, "drained-0") == []
    assert sessions_by_host(env)["drained-0"] == []
    # ... the users already on avd-0 stayed until they logged off by themselves ...
    ends = {e["session"]: e["reason"] for e in ended_on(env, "avd-0")}
    assert on_avd0 <= set(ends)
    assert {ends[s] for s in on_avd0} <= {"userLogoff", "disconnectTimeout"}
    # ... and no new session went to avd-0 after it was drained.
    with env.emu.lock:
        assert _host_rt(env.emu, host_id).next_session == counter  # type: ignore[union-attr]
    assert sessions_by_host(env)["avd-0"] == []
    rep = users_report(env)
    assert rep["placementViolations"] == []
    assert rep["logons"] >= 8
    assert rep["workLost"] == 0


def test_message_self_logoff_then_forced_logoff_counts_work_lost(emulator_factory: Any) -> None:
    sc = scenario(
        users=12,
        logon_start_hour=7,
        logon_end_hour=8,
        mean_session_minutes=600,
        disconnect_probability=0.3,
        message_logoff_fraction=0.5,
        message_reaction_minutes=10,
        max_session_limit=6,
    )
    env = paused(emulator_factory, sc)
    ac = env.avd_client()
    run_to(env, at(9))
    sessions = list(ac.user_sessions.list_by_host_pool(RG, "hp1"))
    active = [s for s in sessions if s.session_state == "Active"]
    assert len(active) >= 4, [s.session_state for s in sessions]
    for s in sessions:
        _, host, sid = s.name.split("/")
        ac.user_sessions.send_message(
            RG,
            "hp1",
            host,
            sid,
            send_message={
                "messageTitle": "Maintenance",
                "messageBody": "Please save your work and log off",
            },
        )
    run_to(env, at(9) + timedelta(minutes=11))
    rep = users_report(env)
    assert rep["messagesSent"] == len(sessions)
    assert sum(rep["messagesByUser"].values()) == len(sessions)
    self_off = rep["selfLogoffsAfterMessage"]
    assert 0 < self_off < len(active)  # about half of the active users, none of the absent ones
    remaining = list(ac.user_sessions.list_by_host_pool(RG, "hp1"))
    still_active = [s for s in remaining if s.session_state == "Active"]
    disconnected = [s for s in remaining if s.session_state == "Disconnected"]
    assert still_active
    for s in remaining:
        _, host, sid = s.name.split("/")
        ac.user_sessions.delete(RG, "hp1", host, sid, force=True)
    rep = users_report(env)
    assert rep["forcedLogoffs"] == len(remaining)
    assert rep["workLost"] == len(still_active)  # disconnected sessions lose nothing
    avd = env.emu.report()["avd"]
    assert avd["forcedLogoffsActive"] == len(still_active)
    assert avd["forcedLogoffsDisconnected"] == len(disconnected)
    assert avd["workLost"] == len(still_active)
    # The users come back a few minutes later.
    logons = rep["logons"]
    run_to(env, at(9) + timedelta(minutes=30))
    assert users_report(env)["logons"] >= logons + len(remaining) - 1


def test_same_seed_same_run_other_seed_other_run(emulator_factory: Any) -> None:
    def run(seed: int) -> dict[str, Any]:
        env = paused(emulator_factory, scenario(seed=seed, users=15, disconnect_probability=0.3))
        run_to(env, at(14))
        rep = users_report(env)
        rep.pop("nextEvent")
        return rep

    a, b, c = run(11), run(11), run(12)
    assert a == b
    assert a["capacity"]["timeline"] != c["capacity"]["timeline"]


def test_users_stop_after_their_days_and_can_be_turned_off(emulator_factory: Any) -> None:
    env = paused(emulator_factory, scenario(users=5, days=1))
    with env.emu.lock:
        assert any(p["label"].startswith("users:") for p in env.emu.pending())
    run_to(env, at(30))
    with env.emu.lock:
        assert env.emu.pending() == []  # nothing keeps the clock busy
        sim = pool_sim(env.emu, POOL_ID)
        assert sim is not None
        assert sim.item is None
    assert users_report(env)["usersInSession"] == 0

    env2 = paused(emulator_factory, scenario(users=5, enabled=False))
    with env2.emu.lock:
        assert not any(p["label"].startswith("users:") for p in env2.emu.pending())
    env3 = paused(emulator_factory, scenario(users=5))
    status, body = env3.admin("PUT", "users", {"enabled": False, "hostPool": "hp1"})
    assert status == 200
    assert body["hostPools"] == [POOL_ID]
    with env3.emu.lock:
        assert not any(p["label"].startswith("users:") for p in env3.emu.pending())
    status, _ = env3.admin("PUT", "users", {"enabled": True})
    assert status == 200
    with env3.emu.lock:
        assert any(p["label"].startswith("users:") for p in env3.emu.pending())
    status, body = env3.admin("PUT", "users", {"enabled": "yes"})
    assert status == 400
    status, body = env3.admin("GET", "users?timeline=0")
    assert status == 200
    assert body["pools"][0]["capacity"]["timeline"] == []


def test_capacity_drops_when_a_host_shuts_down_and_users_move(emulator_factory: Any) -> None:
    env = paused(
        emulator_factory, scenario(users=8, mean_session_minutes=600, disconnect_probability=0)
    )
    cc = env.compute_client()
    run_to(env, at(10.5))
    lost = len(sessions_by_host(env)["avd-0"])
    assert lost > 0
    cc.virtual_machines.begin_power_off(RG, "avd-0", polling=False)
    run_to(env, at(11))
    rep = users_report(env)
    timeline = rep["capacity"]["timeline"]
    assert timeline[-1]["acceptingHosts"] == 2
    assert timeline[-1]["sessionSlots"] == 8
    assert any(p["acceptingHosts"] == 3 for p in timeline)
    assert rep["workLost"] == lost  # active sessions on a host that went down
    assert sessions_by_host(env)["avd-0"] == []
    # The users who lost their session logged on again, on the remaining hosts.
    with env.emu.lock:
        sim = pool_sim(env.emu, POOL_ID)
        assert sim is not None
        hit = [u for u in sim.users if u.work_lost]
        assert len(hit) == lost
        now = env.clock.now()
        assert all(u.session_id or (u.planned_end and u.planned_end <= now) for u in hit)
        assert all("/avd-0/" not in (u.session_id or "") for u in hit)
    assert rep["capacity"]["minAcceptingHostsWhileUsersOn"] == 2


@pytest.mark.parametrize(
    ("balancer", "expected"),
    [("DepthFirst", [3, 2, 0]), ("BreadthFirst", [2, 2, 1])],
)
def test_load_balancing(emulator_factory: Any, balancer: str, expected: list[int]) -> None:
    env = paused(
        emulator_factory,
        scenario(
            users=5,
            logon_start_hour=7,
            logon_end_hour=7.5,
            mean_session_minutes=900,
            disconnect_probability=0,
            load_balancer_type=balancer,
            max_session_limit=3,
        ),
    )
    run_to(env, at(8))
    counts = [len(v) for _, v in sorted(sessions_by_host(env).items())]
    assert sorted(counts, reverse=True) == expected


def test_personal_pool_assigns_one_host_per_user(emulator_factory: Any) -> None:
    env = paused(
        emulator_factory,
        scenario(
            users=4,
            host_pool_type="Personal",
            load_balancer_type="Persistent",
            mean_session_minutes=900,
            disconnect_probability=0,
            retry_minutes=30,
        ),
    )
    ac = env.avd_client()
    run_to(env, at(10.5))
    hosts = list(ac.session_hosts.list(RG, "hp1"))
    assigned = [h.assigned_user for h in hosts]
    assert all(assigned)
    assert len(set(assigned)) == 3
    assert all(h.sessions == 1 for h in hosts)
    assert users_report(env)["failedLogons"] >= 1  # the fourth user finds no desktop
