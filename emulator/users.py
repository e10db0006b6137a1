"""Simulated AVD users: logons over the day, sessions, disconnects, reactions to messages.

Each host pool with a ``user_profile`` (:class:`emulator.avd_scenario.UserLoadProfile`) gets a
population of users driven by :meth:`Emulator.schedule` on the shared clock. Every pool keeps
its users' next events in its own queue and has at most ONE item scheduled with the emulator
(its earliest event), so the virtual clock only stops where a user does something; after the
profile's ``days`` (or with ``enabled: false``) nothing is scheduled at all. A host whose VM
stops loses its sessions at that instant (the AVD module follows the compute module's
``vm.power`` listener topic and tells this module), so nothing polls.

New sessions go only to session hosts that are Available, not drained (``allowNewSession``)
and below ``maxSessionLimit``: BreadthFirst picks the host with the fewest sessions, DepthFirst
the fullest one still below the limit, Persistent (Personal pools) the user's assigned host
(Automatic assignment takes a free one). Users on a drained host stay until they log off or are
logged off. With the host pool's ``startVMOnConnect``, a user who finds no host taking new
sessions starts one whose VM is stopped or deallocated (pooled: only when no host is starting
already; personal: the user's assigned host, or a free one with Automatic assignment), waits
for it, and logs on the instant it is Available; after ``retry_minutes`` without one the logon
counts as failed and is tried again. Randomness comes from a generator seeded with the
scenario's seed and the pool id: same seed, same requests, same run.

Recorded per pool (report section ``users``; ``GET /_emulator/users``): logons, failed logons
(no free slot), VMs started on connect, messages per user, forced log-offs, work lost (an
*active* session ended by force or by its host going down), self log-offs after a message, and
capacity over time (hosts accepting sessions, session slots, active and disconnected
sessions), and every connection (:mod:`emulator.connections`: a host whose image is broken fails
them). ``PUT /_emulator/users`` with ``{"enabled": false}`` (optionally ``"hostPool":
name``) turns users off; ``{"enabled": true}`` turns them back on from now.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from emulator.arm import ArmError, Request, Response
from emulator.avd import (
    HOSTPOOLS,
    accepting_hosts,
    avd_state,
    disconnect_session,
    end_session,
    host_status,
    open_session,
    reconnect_session,
    session_hosts_of,
    sessions_of,
)
from emulator.avd_scenario import UserLoadProfile
from emulator.compute import start_vm, vm_runtime
from emulator.connections import connection_failure, record_connection
from emulator.core import Emulator, ScheduledItem
from emulator.events import iso
from emulator.scenario import Scenario

TIMELINE_LIMIT = 5000
USER_REASONS = {"userLogoff", "disconnectTimeout"}
LOST_REASONS = {"adminForcedLogoff", "hostShutdown", "hostDeleted", "hostPoolDeleted"}


@dataclass
class SimUser:
    index: int
    upn: str
    ad_user: str
    session_id: str | None = None
    day: int = 0
    planned_end: datetime | None = None
    disconnect_at: datetime | None = None
    gen: int = 0
    waiting: bool = False  # for a VM started on connect
    logons: int = 0
    failed_logons: int = 0
    messages: int = 0
    forced_logoffs: int = 0
    work_lost: int = 0
    self_logoffs_after_message: int = 0


@dataclass(order=True)
class _Event:
    due: datetime
    seq: int
    user: int = field(compare=False)
    kind: str = field(compare=False)  # logon disconnect end reconnect msglogoff startwait
    gen: int = field(compare=False)


class PoolSim:
    """The users of one host pool and their event queue."""

    def __init__(
        self, emu: Emulator, pool_id: str, profile: UserLoadProfile, seed: int | str
    ) -> None:
        self.emu = emu
        self.pool_id = pool_id
        self.profile = profile
        self.rng = random.Random(f"users:{seed}:{pool_id.lower()}")
        self.enabled = profile.enabled
        start = emu.now()
        self.day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.users = [
            SimUser(
                i,
                f"user{i + 1:03d}@{profile.upn_domain}",
                f"{profile.netbios_domain}\\user{i + 1:03d}",
            )
            for i in range(profile.users)
        ]
        self.by_session: dict[str, int] = {}
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self.item: ScheduledItem | None = None
        self.timeline: list[dict[str, Any]] = []
        self.timeline_dropped = 0
        self.placement_violations: list[str] = []
        self.min_accepting_while_users: int | None = None
        self.vm_starts: list[dict[str, str]] = []
        self.start_failures: list[str] = []

    # -- queue -------------------------------------------------------------------------------
    def push(self, due: datetime, user: SimUser, kind: str) -> None:
        heapq.heappush(self._heap, _Event(due, next(self._seq), user.index, kind, user.gen))

    def _stale(self, ev: _Event) -> bool:
        return ev.gen != self.users[ev.user].gen

    def reschedule(self) -> None:
        while self._heap and self._stale(self._heap[0]):
            heapq.heappop(self._heap)
        if not self.enabled or not self._heap:
            if self.item is not None:
                self.item.cancel()
                self.item = None
            return
        due = self._heap[0].due
        if self.item is not None and not self.item.done and not self.item.cancelled:
            if self.item.due == due:
                return
            self.item.cancel()
        self.item = self.emu.schedule_at(due, self.run, f"users:{self.pool_id}")

    def run(self) -> None:
        """Process every event that is due (called by the emulator's scheduler, locked)."""
        self.item = None
        if not self.enabled:
            return
        now = self.emu.now()
        while self._heap and self._heap[0].due <= now:
            ev = heapq.heappop(self._heap)
            if self._stale(ev):
                continue
            self._handle(self.users[ev.user], ev.kind)
        self.sample()
        self.reschedule()

    # -- planning ----------------------------------------------------------------------------
    def start(self) -> None:
        for u in self.users:
            u.day = 0
            self.plan_day(u)
        self.sample()
        self.reschedule()

    def plan_day(self, u: SimUser) -> None:
        """Draw the user's logon for day ``u.day`` (or later days if that one is over)."""
        p = self.profile
        now = self.emu.now()
        while u.day < p.days:
            base = self.day0 + timedelta(days=u.day)
            logon = base + timedelta(hours=self.rng.uniform(p.logon_start_hour, p.logon_end_hour))
            minutes = max(p.min_session_minutes, self.rng.expovariate(1.0 / p.mean_session_minutes))
            latest = base + timedelta(hours=min(24.0, p.logon_end_hour + p.overtime_hours))
            end = min(logon + timedelta(minutes=minutes), latest)
            disconnects = self.rng.random() < p.disconnect_probability
            frac = self.rng.uniform(0.2, 0.8)
            if end <= now or end <= logon:
                u.day += 1
                continue
            u.gen += 1
            u.waiting = False
            u.planned_end = end
            u.disconnect_at = logon + (end - logon) * frac if disconnects else None
            self.push(max(logon, now), u, "logon")
            return
        u.waiting = False
        u.planned_end = None

    def next_day(self, u: SimUser) -> None:
        u.day += 1
        u.session_id = None
        self.plan_day(u)

    # -- behaviour ---------------------------------------------------------------------------
    def _handle(self, u: SimUser, kind: str) -> None:
        now = self.emu.now()
        if kind in ("logon", "reconnect"):
            if u.session_id is not None and self.emu.store.exists(u.session_id):
                # Back at the desk: reconnect to the session that is still there.
                reconnect_session(self.emu, u.session_id)
                return
            u.session_id = None
            if u.planned_end is None or now >= u.planned_end:
                self.next_day(u)
                return
            host = self.place(u)
            if host is None:
                if self.start_on_connect(u):
                    u.waiting = True
                    self.push(now + timedelta(minutes=self.profile.retry_minutes), u, "startwait")
                    return
                self._logon_failed(u)
                return
            broken = connection_failure(self.emu, host)
            if broken is not None:  # a broken image: the connection fails, the user retries
                record_connection(self.emu, self.pool_id, str(host["id"]), u.upn, "Failed", broken)
                self._logon_failed(u)
                return
            record_connection(self.emu, self.pool_id, str(host["id"]), u.upn, "Connected")
            session = open_session(self.emu, str(host["id"]), u.upn, u.ad_user)
            u.session_id = str(session["id"])
            u.logons += 1
            self.by_session[u.session_id.lower()] = u.index
            if u.disconnect_at is not None and now < u.disconnect_at < u.planned_end:
                self.push(u.disconnect_at, u, "disconnect")
            self.push(u.planned_end, u, "end")
        elif kind == "startwait":
            # The VM started for this user did not become available in time.
            u.waiting = False
            self._logon_failed(u)
        elif kind == "disconnect":
            if u.session_id is not None:
                disconnect_session(self.emu, u.session_id)
        elif kind in ("end", "msglogoff"):
            sid = u.session_id
            if sid is None:
                self.next_day(u)
                return
            doc = self.emu.store.get(sid)
            disconnected = doc is not None and doc["properties"].get("sessionState") == (
                "Disconnected"
            )
            self.by_session.pop(sid.lower(), None)
            u.session_id = None
            if kind == "msglogoff":
                u.self_logoffs_after_message += 1
            end_session(
                self.emu,
                sid,
                "disconnectTimeout" if disconnected and kind == "end" else "userLogoff",
            )
            self.next_day(u)

    def _logon_failed(self, u: SimUser) -> None:
        u.failed_logons += 1
        retry = self.emu.now() + timedelta(minutes=self.profile.retry_minutes)
        if u.planned_end is not None and retry < u.planned_end:
            self.push(retry, u, "logon")
        else:
            self.next_day(u)

    def start_on_connect(self, u: SimUser) -> bool:
        """Start VM on Connect for a user who found no host: True when a host's VM is starting
        for them (started now, or already starting), so the user waits for it."""
        emu = self.emu
        pool = emu.store.get(self.pool_id)
        if pool is None or not pool["properties"].get("startVMOnConnect"):
            return False
        hosts = [
            h
            for h in session_hosts_of(emu, self.pool_id)
            if h["properties"].get("allowNewSession", True)
        ]
        if pool["properties"].get("hostPoolType") == "Personal":
            mine = [
                h
                for h in hosts
                if str(h["properties"].get("assignedUser") or "").lower() == u.upn.lower()
            ]
            automatic = pool["properties"].get("personalDesktopAssignmentType") == "Automatic"
            hosts = mine or (
                [h for h in hosts if not h["properties"].get("assignedUser")] if automatic else []
            )

        def power(h: dict[str, Any]) -> str:
            rt = vm_runtime(emu, str(h["properties"].get("resourceId", "")))
            return rt.power if rt is not None else "deleted"

        if any(power(h) == "starting" for h in hosts):
            return True  # one is on its way: wait for it rather than start another
        for h in sorted(hosts, key=lambda h: str(h["name"]).lower()):
            if power(h) not in ("stopped", "deallocated"):
                continue
            vm_id = str(h["properties"]["resourceId"])
            try:
                started = start_vm(emu, vm_id)
            except ArmError as e:  # e.g. generalized or being deleted: try the next one
                self.start_failures.append(f"{emu.now_iso()} {vm_id}: {e.code}: {e.message}")
                continue
            if started:
                self.vm_starts.append({"time": emu.now_iso(), "vm": vm_id, "user": u.upn})
                return True
        return False

    def on_hosts_changed(self) -> None:
        """A host changed: users waiting for a VM started on connect log on once one takes
        sessions."""
        self.sample()
        waiting = [u for u in self.users if u.waiting]
        if not waiting or not self.enabled or not accepting_hosts(self.emu, self.pool_id):
            return
        now = self.emu.now()
        for u in waiting:
            u.waiting = False
            u.gen += 1  # the wait's time limit no longer applies
            self.push(now, u, "logon")
        self.reschedule()

    def place(self, u: SimUser) -> dict[str, Any] | None:
        emu = self.emu
        pool = emu.store.get(self.pool_id)
        if pool is None:
            return None
        props = pool["properties"]
        accepting = accepting_hosts(emu, self.pool_id)
        chosen: dict[str, Any] | None = None
        if props.get("hostPoolType") == "Personal":
            mine = [
                h
                for h in session_hosts_of(emu, self.pool_id)
                if str(h["properties"].get("assignedUser") or "").lower() == u.upn.lower()
            ]
            if mine:
                chosen = mine[0] if any(h is mine[0] for h in accepting) else None
            elif props.get("personalDesktopAssignmentType", "Automatic") == "Automatic":
                free = [h for h in accepting if not h["properties"].get("assignedUser")]
                if free:
                    chosen = min(free, key=lambda h: str(h["name"]).lower())
                    chosen["properties"]["assignedUser"] = u.upn
        elif accepting:

            def load(h: dict[str, Any]) -> int:
                return len(sessions_of(emu, str(h["id"])))

            if props.get("loadBalancerType") == "DepthFirst":
                chosen = min(accepting, key=lambda h: (-load(h), str(h["name"]).lower()))
            else:
                chosen = min(accepting, key=lambda h: (load(h), str(h["name"]).lower()))
        if chosen is not None and (
            not chosen["properties"].get("allowNewSession", True)
            or host_status(emu, chosen) != "Available"
        ):
            self.placement_violations.append(f"{emu.now_iso()} {u.upn} -> {chosen['name']}")
        return chosen

    def user_of(self, session: dict[str, Any]) -> SimUser | None:
        idx = self.by_session.get(str(session["id"]).lower())
        return self.users[idx] if idx is not None else None

    def on_session_end(self, session: dict[str, Any], reason: str, was_active: bool) -> None:
        u = self.user_of(session)
        if u is None or reason in USER_REASONS:
            return
        self.by_session.pop(str(session["id"]).lower(), None)
        u.session_id = None
        if reason == "adminForcedLogoff":
            u.forced_logoffs += 1
        if was_active and reason in LOST_REASONS:
            u.work_lost += 1
        u.gen += 1  # the planned disconnect / end of that session no longer apply
        now = self.emu.now()
        back = now + timedelta(minutes=self.profile.reconnect_minutes)
        if self.enabled and u.planned_end is not None and back < u.planned_end:
            self.push(back, u, "reconnect")
        elif self.enabled:
            self.next_day(u)
        self.reschedule()

    def on_message(self, session: dict[str, Any], delivered: bool) -> None:
        u = self.user_of(session)
        if u is None:
            return
        u.messages += 1
        if not delivered or not self.enabled:
            return
        if self.rng.random() < self.profile.message_logoff_fraction:
            delay = timedelta(minutes=self.rng.uniform(0.5, self.profile.message_reaction_minutes))
            at = self.emu.now() + delay
            if u.planned_end is None or at < u.planned_end:
                self.push(at, u, "msglogoff")
                self.reschedule()

    def on_disconnect(self, session: dict[str, Any]) -> None:
        u = self.user_of(session)
        if u is None or not self.enabled:
            return
        back = self.emu.now() + timedelta(minutes=self.profile.reconnect_minutes)
        if u.planned_end is not None and back < u.planned_end:
            self.push(back, u, "reconnect")
            self.reschedule()

    # -- capacity ----------------------------------------------------------------------------
    def sample(self) -> None:
        emu = self.emu
        pool = emu.store.get(self.pool_id)
        if pool is None:
            return
        limit = int(pool["properties"].get("maxSessionLimit") or 999999)
        hosts = session_hosts_of(emu, self.pool_id)
        available = accepting = slots = free = active = disconnected = 0
        for h in hosts:
            sessions = sessions_of(emu, str(h["id"]))
            active += sum(1 for s in sessions if s["properties"].get("sessionState") == "Active")
            disconnected += sum(
                1 for s in sessions if s["properties"].get("sessionState") == "Disconnected"
            )
            if host_status(emu, h) != "Available":
                continue
            available += 1
            if h["properties"].get("allowNewSession", True):
                accepting += 1
                slots += limit
                free += max(0, limit - len(sessions))
        point = {
            "hosts": len(hosts),
            "availableHosts": available,
            "acceptingHosts": accepting,
            "sessionSlots": slots,
            "freeSlots": free,
            "activeSessions": active,
            "disconnectedSessions": disconnected,
        }
        if self.timeline and all(self.timeline[-1][k] == v for k, v in point.items()):
            return
        if active + disconnected > 0:
            low = self.min_accepting_while_users
            self.min_accepting_while_users = accepting if low is None else min(low, accepting)
        self.timeline.append({"time": emu.now_iso(), **point})
        if len(self.timeline) > TIMELINE_LIMIT:
            self.timeline_dropped += len(self.timeline) - TIMELINE_LIMIT
            del self.timeline[: len(self.timeline) - TIMELINE_LIMIT]

    # -- control -----------------------------------------------------------------------------
    def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled:
            for u in self.users:
                if u.session_id is None:
                    self.plan_day(u)
        self.reschedule()

    def report(self, timeline_points: int = 50) -> dict[str, Any]:
        users = self.users
        return {
            "hostPool": self.pool_id,
            "enabled": self.enabled,
            "users": len(users),
            "days": self.profile.days,
            "logons": sum(u.logons for u in users),
            "failedLogons": sum(u.failed_logons for u in users),
            "vmStartsOnConnect": list(self.vm_starts),
            "startOnConnectFailures": list(self.start_failures),
            "messagesSent": sum(u.messages for u in users),
            "messagesByUser": {u.upn: u.messages for u in users if u.messages},
            "forcedLogoffs": sum(u.forced_logoffs for u in users),
            "workLost": sum(u.work_lost for u in users),
            "workLostByUser": {u.upn: u.work_lost for u in users if u.work_lost},
            "selfLogoffsAfterMessage": sum(u.self_logoffs_after_message for u in users),
            "usersInSession": sum(1 for u in users if u.session_id is not None),
            "placementViolations": list(self.placement_violations),
            "nextEvent": iso(self.item.due) if self.item is not None else None,
            "capacity": {
                "minAcceptingHostsWhileUsersOn": self.min_accepting_while_users,
                "samples": len(self.timeline) + self.timeline_dropped,
                "timeline": self.timeline[-timeline_points:] if timeline_points else [],
            },
        }


class UsersState:
    """Every pool's simulation (``emu.modules["users"]``); also the AVD module's listener."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.pools: dict[str, PoolSim] = {}

    def _sim(self, session_or_pool_id: str) -> PoolSim | None:
        low = session_or_pool_id.lower()
        for key, sim in self.pools.items():
            if low == key or low.startswith(key + "/"):
                return sim
        return None

    # AvdListener
    def on_message(self, session: dict[str, Any], title: str, body: str, delivered: bool) -> None:
        sim = self._sim(str(session["id"]))
        if sim is not None:
            sim.on_message(session, delivered)

    def on_session_end(self, session: dict[str, Any], reason: str, was_active: bool) -> None:
        sim = self._sim(str(session["id"]))
        if sim is not None:
            sim.on_session_end(session, reason, was_active)

    def on_disconnect(self, session: dict[str, Any]) -> None:
        sim = self._sim(str(session["id"]))
        if sim is not None:
            sim.on_disconnect(session)

    def on_hosts_changed(self, pool_id: str) -> None:
        sim = self._sim(pool_id)
        if sim is not None:
            sim.on_hosts_changed()

    def report(self, timeline_points: int = 50) -> dict[str, Any]:
        return {
            "pools": [sim.report(timeline_points) for sim in self.pools.values()],
            "workLost": sum(sum(u.work_lost for u in s.users) for s in self.pools.values()),
            "placementViolations": sum(len(s.placement_violations) for s in self.pools.values()),
        }


def users_state(emu: Emulator) -> UsersState:
    st = emu.modules.get("users")
    if not isinstance(st, UsersState):
        st = UsersState(emu)
        emu.modules["users"] = st
    return st


def pool_sim(emu: Emulator, pool_id: str) -> PoolSim | None:
    """The simulation of a host pool (by id), or None."""
    return users_state(emu).pools.get(pool_id.rstrip("/").lower())


def start_users(
    emu: Emulator, pool_id: str, profile: UserLoadProfile, seed: int | str | None = None
) -> PoolSim:
    """Start (or restart) simulated users for a host pool from now (under the lock)."""
    st = users_state(emu)
    key = pool_id.rstrip("/").lower()
    old = st.pools.pop(key, None)
    if old is not None:
        old.set_enabled(False)
    sim = PoolSim(emu, pool_id, profile, emu.scenario.seed if seed is None else seed)
    st.pools[key] = sim
    if sim.enabled:
        sim.start()
    else:
        sim.sample()
    return sim


def register(emu: Emulator) -> None:
    state = users_state(emu)
    avd_state(emu).listeners.append(state)

    def reset() -> None:
        for sim in state.pools.values():
            if sim.item is not None:
                sim.item.cancel()
        state.pools.clear()

    def seed(scenario: Scenario) -> None:
        for hp in scenario.host_pools:
            prof = hp.user_profile
            if prof is None:
                continue
            profile = (
                prof
                if isinstance(prof, UserLoadProfile)
                else UserLoadProfile.model_validate(prof.model_dump())
            )
            sub = hp.subscription or scenario.default_subscription
            pid = HOSTPOOLS.format(sub=sub, rg=hp.resource_group) + f"/{hp.name}"
            start_users(emu, pid, profile, scenario.seed)

    emu.add_resetter(reset)
    emu.add_seeder(seed)
    emu.add_report_section("users", lambda: state.report())

    @emu.admin_route("GET", "/_emulator/users")
    def get_users(req: Request) -> Response:
        points = req.query.get("timeline", "50")
        try:
            n = int(points)
        except ValueError:
            raise ArmError(400, "InvalidParameter", "timeline must be an integer.") from None
        return Response(200, state.report(max(0, n)))

    @emu.admin_route("PUT", "/_emulator/users")
    def put_users(req: Request) -> Response:
        body = req.body
        if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
            raise ArmError(
                400,
                "InvalidRequestContent",
                'The body must be {"enabled": true|false, "hostPool": "<name or id>"?}.',
            )
        target = body.get("hostPool")
        touched = []
        for key, sim in state.pools.items():
            if target is not None:
                t = str(target).rstrip("/").lower()
                if key != t and key.rsplit("/", 1)[-1] != t:
                    continue
            sim.set_enabled(bool(body["enabled"]))
            touched.append(sim.pool_id)
        if target is not None and not touched:
            raise ArmError(404, "NotFound", f"No simulated users for host pool {target}.")
        return Response(200, {"enabled": body["enabled"], "hostPools": touched})
