"""Azure Virtual Desktop: host pools, registration tokens, session hosts and user sessions.

Serves ``HostPoolsOperations``, ``SessionHostsOperations`` and ``UserSessionsOperations`` of
azure-mgmt-desktopvirtualization 2.0 (api-version 2024-04-03). Host pools and their
registration tokens (``registrationInfo`` with ``registrationTokenOperation`` Update / Delete /
None; an expiry between 1 hour and 30 days from now), session hosts with drain mode
(``allowNewSession``), status derived from their VM (running: Available; stopped or
deallocated: Shutdown; gone: Unavailable; a ``session_host_needs_assistance`` flag fault:
NeedsAssistance), and user sessions with messages, disconnects and log-offs (a forced log-off of
an *active* session is work lost).

Session hosts register themselves: a VM whose ``osProfile.customData`` is base64 JSON
``{"avdRegistrationToken": "<token>", "hostPool": "<host pool id>"}``, or whose guest registry
holds the token at ``HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent`` ``RegistrationToken`` (as the AVD
agent installer writes it), registers ``avd.host.register`` after it booted (or after a run
command wrote the token into a running VM), if the token is still valid then. An expired,
replaced or unknown token: the host never registers (listed in the report).

Everything follows the compute module's listener topics, at the virtual instant things happen:
``vm.power`` (a VM booted: its registration is scheduled; a VM stopping, stopped, deallocating,
deallocated, starting or deleted: its session host's status changes and its sessions are lost)
and ``vm.guest`` (a run-command step may have written the agent's token). Nothing polls; AVD
requests additionally reconcile (:func:`sync`) in case a test changed state in-process.

Public helpers (used by :mod:`emulator.users` and the lead): :func:`avd_state`, :func:`sync`,
:func:`host_status`, :func:`accepting_hosts`, :func:`sessions_of`, :func:`open_session`,
:func:`end_session`, :func:`disconnect_session`, :func:`reconnect_session`,
:func:`issue_registration_token`, :func:`register_vm`, :func:`session_host_image`.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from emulator.arm import (
    ArmError,
    Request,
    Response,
    bad_request,
    check_name,
    merge_patch,
    resource_not_found,
)
from emulator.core import Emulator
from emulator.events import iso
from emulator.scenario import Scenario

HP_TYPE = "Microsoft.DesktopVirtualization/hostpools"
SH_TYPE = "Microsoft.DesktopVirtualization/hostpools/sessionhosts"
US_TYPE = "Microsoft.DesktopVirtualization/hostpools/sessionhosts/usersessions"
VM_TYPE = "Microsoft.Compute/virtualMachines"

HOSTPOOLS_SUB = "/subscriptions/{sub}/providers/Microsoft.DesktopVirtualization/hostPools"
HOSTPOOLS = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DesktopVirtualization/hostPools"
)
HOSTPOOL = HOSTPOOLS + "/{hostPool}"
SESSION_HOSTS = HOSTPOOL + "/sessionHosts"
SESSION_HOST = SESSION_HOSTS + "/{sessionHost}"
POOL_SESSIONS = HOSTPOOL + "/userSessions"
USER_SESSIONS = SESSION_HOST + "/userSessions"
USER_SESSION = USER_SESSIONS + "/{userSessionId}"

API_VERSIONS = {
    "2021-07-12",
    "2022-02-10-preview",
    "2022-09-09",
    "2023-09-05",
    "2024-04-03",
    "2024-04-08-preview",
    "2024-08-08-preview",
    "2025-03-01-preview",
}
AGENT_VERSION = "1.0.10673.1000"
SXS_VERSION = "rdp-sxs250626000"
TOKEN_MIN = timedelta(hours=1)
TOKEN_MAX = timedelta(days=30)
TOKEN_SLACK = timedelta(minutes=5)  # clock skew between a client and the service
MAX_SESSION_LIMIT = 999999
AGENT_KEY = "HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent"

HOST_POOL_TYPES = {"personal": "Personal", "pooled": "Pooled", "byodesktop": "BYODesktop"}
UDP_SETTINGS = {"default": "Default", "enabled": "Enabled", "disabled": "Disabled"}
MANAGEMENT_TYPES = {"automated": "Automated", "standard": "Standard"}
LOAD_BALANCERS = {
    "breadthfirst": "BreadthFirst",
    "depthfirst": "DepthFirst",
    "persistent": "Persistent",
}
APP_GROUP_TYPES = {"none": "None", "desktop": "Desktop", "railapplications": "RailApplications"}
ASSIGNMENT_TYPES = {"automatic": "Automatic", "direct": "Direct"}
TOKEN_OPERATIONS = {"update": "Update", "delete": "Delete", "none": "None"}
NOT_RUNNING = {"stopped", "deallocated", "stopping", "deallocating"}


# -- private state ------------------------------------------------------------------------------


@dataclass
class TokenInfo:
    token: str
    host_pool_id: str
    created: datetime
    expires: datetime
    revoked: str = ""  # "" | "deleted" | "replaced" | "hostPoolDeleted"


@dataclass
class PoolRuntime:
    token: str | None = None
    expires: datetime | None = None
    operation: str = "None"


@dataclass
class HostRuntime:
    vm_id: str
    registered_at: datetime
    status: str
    status_since: datetime
    last_heartbeat: datetime
    next_session: int = 1
    needs_assistance: bool = False
    image_reference: dict[str, Any] | None = None


@dataclass
class SessionRuntime:
    upn: str
    created: datetime
    state_since: datetime
    messages: list[dict[str, str]] = field(default_factory=list)
    ending: bool = False


@dataclass
class VmRegistration:
    token: str
    source: str  # customData | registry
    state: str  # scheduled | registered | rejected
    due: datetime | None = None
    reason: str = ""
    host_id: str = ""


class AvdListener(Protocol):
    """What the simulated users (or a test) hear from the AVD module."""

    def on_message(self, session: dict[str, Any], title: str, body: str, delivered: bool) -> None:
        """A message was sent to a session (``delivered``: the session was active)."""

    def on_session_end(self, session: dict[str, Any], reason: str, was_active: bool) -> None:
        """A session ended (reasons: adminLogoff, adminForcedLogoff, userLogoff,
        disconnectTimeout, hostShutdown, hostDeleted, hostPoolDeleted)."""

    def on_disconnect(self, session: dict[str, Any]) -> None:
        """A session was disconnected by an administrator."""

    def on_hosts_changed(self, pool_id: str) -> None:
        """A session host registered, changed status or drain mode, or was deleted."""


@dataclass
class AvdStats:
    messages: int = 0
    messages_undelivered: int = 0
    disconnects: int = 0
    logoffs: int = 0
    forced_logoffs_active: int = 0
    forced_logoffs_disconnected: int = 0
    lost_to_shutdown_active: int = 0
    lost_to_shutdown_disconnected: int = 0
    registrations: int = 0
    messages_by_user: dict[str, int] = field(default_factory=dict)

    @property
    def work_lost(self) -> int:
        return self.forced_logoffs_active + self.lost_to_shutdown_active


class AvdState:
    """Tokens, statistics and listeners of one emulator's AVD world (``emu.modules["avd"]``)."""

    def __init__(self) -> None:
        self.tokens: dict[str, TokenInfo] = {}
        self.stats = AvdStats()
        self.listeners: list[AvdListener] = []
        self.rejected: list[dict[str, str]] = []
        self.log: list[dict[str, Any]] = []

    def record(self, emu: Emulator, kind: str, **data: Any) -> None:
        self.log.append({"time": emu.now_iso(), "kind": kind, **data})
        if len(self.log) > 2000:
            del self.log[:-2000]


def avd_state(emu: Emulator) -> AvdState:
    st = emu.modules.get("avd")
    if not isinstance(st, AvdState):
        st = AvdState()
        emu.modules["avd"] = st
    return st


def _listeners(emu: Emulator) -> list[AvdListener]:
    return list(avd_state(emu).listeners)


# -- small helpers ------------------------------------------------------------------------------


def _norm_region(name: str) -> str:
    return "".join(str(name).split()).lower()


def _pick(value: Any, allowed: dict[str, str], target: str) -> str:
    found = allowed.get(str(value).lower()) if isinstance(value, str) else None
    if found is None:
        raise bad_request(
            f"The value '{value}' of property '{target}' is invalid. Allowed values are "
            f"{', '.join(sorted(allowed.values()))}.",
            target=target,
        )
    return found


def _bool(value: Any, target: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"The property '{target}' must be true or false.", target=target)
    return value


def _str(value: Any, target: str, max_len: int = 512) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise bad_request(
            f"The property '{target}' must be a string of at most {max_len} characters.",
            target=target,
        )
    return value


def _tags(body: dict[str, Any]) -> dict[str, str]:
    raw = body.get("tags")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise bad_request("The tags must be an object of string values.", target="tags")
    return {str(k): str(v) for k, v in raw.items()}


def _parse_time(value: Any, target: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"The property '{target}' must be an ISO 8601 date-time.", target=target)
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad_request(
            f"The value '{value}' of property '{target}' is not a valid ISO 8601 date-time.",
            target=target,
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _system_data(emu: Emulator) -> dict[str, Any]:
    now = emu.now_iso()
    return {
        "createdBy": "emulator",
        "createdByType": "Application",
        "createdAt": now,
        "lastModifiedBy": "emulator",
        "lastModifiedByType": "Application",
        "lastModifiedAt": now,
    }


def _touch(emu: Emulator, doc: dict[str, Any]) -> None:
    sd = doc.setdefault("systemData", _system_data(emu))
    sd["lastModifiedAt"] = emu.now_iso()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_token(emu: Emulator, pool_doc: dict[str, Any], expires: datetime) -> str:
    """A JWT-shaped registration token (as the AVD broker issues them; never verified)."""
    header = {"alg": "RS256", "kid": emu.new_id().replace("-", "")[:40], "typ": "JWT"}
    payload = {
        "RegistrationId": emu.new_id(),
        "BrokerURI": "https://rdbroker-g-eu-r0.wvd.microsoft.com/",
        "GlobalBrokerURI": "https://rdbroker.wvd.microsoft.com/",
        "HostPoolId": pool_doc["properties"]["objectId"],
        "HostPoolName": pool_doc["name"],
        "nbf": int(emu.now().timestamp()),
        "exp": int(expires.timestamp()),
        "iss": "RDInfraTokenManager",
        "aud": "RDmi",
    }
    sig = bytes.fromhex("".join(emu.new_id().replace("-", "") for _ in range(8)))
    return ".".join(
        [
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
            _b64url(sig),
        ]
    )


def _pool_rt(emu: Emulator, pool_id: str) -> PoolRuntime:
    meta = emu.store.meta(pool_id)
    rt = meta.get("avd")
    if not isinstance(rt, PoolRuntime):
        rt = PoolRuntime()
        meta["avd"] = rt
    return rt


def _host_rt(emu: Emulator, host_id: str) -> HostRuntime | None:
    rt = emu.store.meta(host_id).get("avd")
    return rt if isinstance(rt, HostRuntime) else None


def _session_rt(emu: Emulator, session_id: str) -> SessionRuntime | None:
    rt = emu.store.meta(session_id).get("avd")
    return rt if isinstance(rt, SessionRuntime) else None


def _pool_of(host_or_session_id: str) -> str:
    parts = host_or_session_id.split("/")
    low = [p.lower() for p in parts]
    i = low.index("hostpools")
    return "/".join(parts[: i + 2])


def _registration_info(rt: PoolRuntime, with_token: bool) -> dict[str, Any]:
    return {
        "expirationTime": iso(rt.expires) if rt.expires else None,
        "token": rt.token if with_token else None,
        "registrationTokenOperation": rt.operation,
    }


def issue_registration_token(emu: Emulator, pool_id: str, expires: datetime) -> str:
    """Issue (replace) a host pool's registration token valid until ``expires`` (no checks)."""
    st = avd_state(emu)
    doc = emu.store.get(pool_id)
    if doc is None:
        raise resource_not_found(pool_id)
    rt = _pool_rt(emu, pool_id)
    if rt.token and rt.token in st.tokens:
        st.tokens[rt.token].revoked = "replaced"
    token = _new_token(emu, doc, expires)
    st.tokens[token] = TokenInfo(token, str(doc["id"]), emu.now(), expires)
    rt.token, rt.expires, rt.operation = token, expires, "Update"
    doc["properties"]["registrationInfo"] = _registration_info(rt, False)
    return token


def _delete_token(emu: Emulator, pool_id: str, reason: str = "deleted") -> None:
    st = avd_state(emu)
    rt = _pool_rt(emu, pool_id)
    if rt.token and rt.token in st.tokens:
        st.tokens[rt.token].revoked = reason
    rt.token, rt.expires, rt.operation = None, None, "Delete"
    doc = emu.store.get(pool_id)
    if doc is not None:
        doc["properties"]["registrationInfo"] = _registration_info(rt, False)


# -- session hosts: status, registration ---------------------------------------------------------


def _vm_power(emu: Emulator, vm_id: str) -> str | None:
    from emulator.compute import vm_runtime

    vm = emu.store.get(vm_id)
    if vm is None:
        return None
    rt = vm_runtime(emu, vm_id)
    if str(vm.get("properties", {}).get("provisioningState")) in ("Creating",):
        return "starting"
    return rt.power if rt is not None else "running"


def host_status(emu: Emulator, host: dict[str, Any]) -> str:
    """The session host's status now, from its VM (see the module docstring)."""
    rt = _host_rt(emu, str(host["id"]))
    if rt is None:
        return "Unavailable"
    power = _vm_power(emu, rt.vm_id)
    if power is None:
        return "Unavailable"
    if power in NOT_RUNNING:
        return "Shutdown"
    if power != "running":
        return "Unavailable"
    if rt.needs_assistance:
        return "NeedsAssistance"
    return "Available"


def sessions_of(emu: Emulator, host_id: str) -> list[dict[str, Any]]:
    return emu.store.list(host_id + "/userSessions", US_TYPE)


def session_hosts_of(emu: Emulator, pool_id: str) -> list[dict[str, Any]]:
    return emu.store.list(pool_id + "/sessionHosts", SH_TYPE)


def accepting_hosts(emu: Emulator, pool_id: str) -> list[dict[str, Any]]:
    """Hosts that take new sessions: Available, not drained and below maxSessionLimit."""
    pool = emu.store.get(pool_id)
    if pool is None:
        return []
    limit = int(pool["properties"].get("maxSessionLimit") or MAX_SESSION_LIMIT)
    out = []
    for h in session_hosts_of(emu, pool_id):
        if not h["properties"].get("allowNewSession", True):
            continue
        if host_status(emu, h) != "Available":
            continue
        if len(sessions_of(emu, str(h["id"]))) >= limit:
            continue
        out.append(h)
    return out


def session_host_image(emu: Emulator, host_id: str) -> dict[str, Any] | None:
    """The image reference of the VM behind a session host (as at registration)."""
    rt = _host_rt(emu, host_id)
    return copy.deepcopy(rt.image_reference) if rt else None


def _registration_request(emu: Emulator, vm: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(token, source, host pool hint) a VM carries, or None."""
    from emulator.compute import guest_of

    custom = (vm.get("properties", {}).get("osProfile") or {}).get("customData")
    if isinstance(custom, str) and custom.strip():
        try:
            data = json.loads(base64.b64decode(custom, validate=False).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("avdRegistrationToken"), str):
            hint = data.get("hostPool")
            return (
                data["avdRegistrationToken"].strip(),
                "customData",
                (str(hint) if isinstance(hint, str) and hint else None),
            )
    guest = guest_of(emu, str(vm["id"]))
    if guest is not None:
        entry = guest.get_registry(AGENT_KEY, "RegistrationToken")
        if entry is not None and str(entry.get("data", "")).strip():
            return str(entry["data"]).strip(), "registry", None
    return None


def _consider(emu: Emulator, vm_id: str) -> None:
    """Schedule the agent's registration of a booted VM that carries a (new) token."""
    vm = emu.store.get(vm_id)
    if vm is None:
        return
    req = _registration_request(emu, vm)
    if req is None:
        return
    token, source, _hint = req
    meta = emu.store.meta(vm_id)
    reg = meta.get("avd")
    if isinstance(reg, VmRegistration) and reg.token == token:
        return
    if str(vm.get("properties", {}).get("provisioningState")) not in ("Succeeded", "Updating"):
        return  # being created (it boots later), failed or being deleted
    if _vm_power(emu, vm_id) != "running":
        return  # the agent starts with the VM: "running" brings it back here
    due = emu.now() + emu.latency.get("avd.host.register")
    meta["avd"] = VmRegistration(token, source, "scheduled", due)
    emu.schedule_at(
        due, functools.partial(_register_due, emu, vm_id, token), f"avd:register:{vm_id}"
    )


def _refresh_hosts_of_vm(emu: Emulator, vm_id: str) -> None:
    """Bring the session host(s) backed by a VM up to date and tell the listeners."""
    low = vm_id.lower()
    changed: set[str] = set()
    for host in emu.store.list("/subscriptions", SH_TYPE):
        rt = _host_rt(emu, str(host["id"]))
        if rt is not None and rt.vm_id.lower() == low and _refresh_host(emu, host):
            changed.add(_pool_of(str(host["id"])))
    for pool_id in sorted(changed):
        for listener in _listeners(emu):
            listener.on_hosts_changed(pool_id)


def _on_vm_power(emu: Emulator, vm_id: str, power: str) -> None:
    """The ``vm.power`` listener: registrations start at boot, host statuses follow."""
    if power == "running":
        _consider(emu, vm_id)
    _refresh_hosts_of_vm(emu, vm_id)


def _reject(emu: Emulator, vm_id: str, reg: VmRegistration, reason: str) -> None:
    reg.state = "rejected"
    reg.reason = reason
    st = avd_state(emu)
    st.rejected.append({"vm": vm_id, "time": emu.now_iso(), "reason": reason})
    st.record(emu, "registrationRejected", vm=vm_id, reason=reason)


def _register_due(emu: Emulator, vm_id: str, token: str) -> None:
    reg = emu.store.meta(vm_id).get("avd") if emu.store.exists(vm_id) else None
    if not isinstance(reg, VmRegistration) or reg.token != token or reg.state != "scheduled":
        return
    if _vm_power(emu, vm_id) != "running":
        # Not up (any more): the agent registers once the VM runs again.
        emu.store.meta(vm_id).pop("avd", None)
        return
    vm = emu.store.get(vm_id)
    assert vm is not None
    req = _registration_request(emu, vm)
    hint = req[2] if req else None
    info = avd_state(emu).tokens.get(token)
    if info is None:
        _reject(emu, vm_id, reg, "InvalidRegistrationToken: the token is not a host pool token")
        return
    if info.revoked:
        _reject(emu, vm_id, reg, f"InvalidRegistrationToken: the token was {info.revoked}")
        return
    if info.expires <= emu.now():
        _reject(
            emu,
            vm_id,
            reg,
            f"ExpiredRegistrationToken: the token expired at {iso(info.expires)}",
        )
        return
    if hint and hint.rstrip("/").lower() != info.host_pool_id.lower():
        _reject(
            emu,
            vm_id,
            reg,
            f"InvalidRegistrationToken: the token belongs to {info.host_pool_id}, not {hint}",
        )
        return
    pool = emu.store.get(info.host_pool_id)
    if pool is None:
        _reject(emu, vm_id, reg, "HostPoolNotFound: the token's host pool no longer exists")
        return
    if emu.faults.flag("host_never_registers", vm=str(vm["name"]), host_pool=str(pool["name"])):
        reg.state = "lost"  # the agent never reaches the service: no host, no error in ARM
        avd_state(emu).record(emu, "registrationLost", vm=vm_id)
        return
    try:
        host = register_vm(emu, str(pool["id"]), vm_id)
    except ValueError as e:
        _reject(emu, vm_id, reg, str(e))
        return
    reg.state = "registered"
    reg.host_id = str(host["id"])


def register_vm(
    emu: Emulator, pool_id: str, vm_id: str, *, allow_new_session: bool = True
) -> dict[str, Any]:
    """Make a VM a session host of a pool now (registration and seeding; under the lock).

    Raises ValueError when the VM is a session host elsewhere or its name is taken.
    """
    from emulator.compute import guest_of

    pool = emu.store.get(pool_id)
    vm = emu.store.get(vm_id)
    if pool is None or vm is None:
        raise ValueError(f"NotFound: {pool_id if pool is None else vm_id} does not exist")
    vm_id = str(vm["id"])
    for h in emu.store.list("/subscriptions", SH_TYPE):
        if str(h["properties"].get("resourceId", "")).lower() == vm_id.lower():
            if _pool_of(str(h["id"])).lower() == str(pool["id"]).lower():
                return h
            raise ValueError(
                f"AlreadyRegistered: the VM is already session host {h['name']} of another pool"
            )
    computer = str((vm["properties"].get("osProfile") or {}).get("computerName") or vm["name"])
    suffix = emu.store.meta(str(pool["id"])).get("domain_suffix")
    host_name = f"{computer}.{suffix}" if suffix else computer
    host_id = f"{pool['id']}/sessionHosts/{host_name}"
    if emu.store.exists(host_id):
        raise ValueError(f"DuplicateSessionHost: a session host named {host_name} already exists")
    guest = guest_of(emu, vm_id)
    now = emu.now()
    doc = {
        "id": host_id,
        "name": f"{pool['name']}/{host_name}",
        "type": SH_TYPE,
        "systemData": _system_data(emu),
        "properties": {
            "objectId": emu.new_id(),
            "agentVersion": AGENT_VERSION,
            "allowNewSession": allow_new_session,
            "virtualMachineId": str(vm["properties"].get("vmId") or emu.new_id()),
            "resourceId": vm_id,
            "assignedUser": None,
            "friendlyName": "",
            "osVersion": guest.os_version if guest else "10.0.26100",
            "sxSStackVersion": SXS_VERSION,
            "updateState": "Succeeded",
            "lastUpdateTime": iso(now),
            "updateErrorMessage": "",
        },
    }
    emu.store.put(host_id, doc)
    needs = emu.faults.flag(
        "session_host_needs_assistance",
        host=host_name,
        host_pool=str(pool["name"]),
        vm=str(vm["name"]),
    )
    image = vm["properties"].get("storageProfile", {}).get("imageReference")
    emu.store.meta(host_id)["avd"] = HostRuntime(
        vm_id=vm_id,
        registered_at=now,
        status="",
        status_since=now,
        last_heartbeat=now,
        needs_assistance=needs,
        image_reference=copy.deepcopy(image) if isinstance(image, dict) else None,
    )
    st = avd_state(emu)
    st.stats.registrations += 1
    st.record(emu, "registered", host=host_id, vm=vm_id)
    _refresh_host(emu, doc)
    for listener in _listeners(emu):
        listener.on_hosts_changed(str(pool["id"]))
    return doc


def _refresh_host(emu: Emulator, host: dict[str, Any]) -> bool:
    """Track a host's status; a host that went down loses its sessions. True if it changed."""
    rt = _host_rt(emu, str(host["id"]))
    if rt is None:
        return False
    status = host_status(emu, host)
    now = emu.now()
    if status in ("Available", "NeedsAssistance") or rt.status in ("Available", "NeedsAssistance"):
        rt.last_heartbeat = now  # the agent reports until the moment its host goes down
    if status == rt.status:
        return False
    old = rt.status
    rt.status = status
    rt.status_since = now
    avd_state(emu).record(emu, "hostStatus", host=str(host["id"]), old=old, new=status)
    if status in ("Shutdown", "Unavailable"):
        for s in sessions_of(emu, str(host["id"])):
            _finish_session(emu, s, "hostShutdown")
    return True


def sync(emu: Emulator) -> None:
    """Reconcile AVD with the VMs: registrations, host statuses, lost sessions.

    The ``vm.power`` / ``vm.guest`` listeners keep AVD current as things happen; this catches
    state changed in-process without them (tests, demos). Called on every AVD request."""
    for vm in emu.store.list("/subscriptions", VM_TYPE):
        _consider(emu, str(vm["id"]))
    changed: set[str] = set()
    for host in emu.store.list("/subscriptions", SH_TYPE):
        if _refresh_host(emu, host):
            changed.add(_pool_of(str(host["id"])))
    for pool_id in sorted(changed):
        for listener in _listeners(emu):
            listener.on_hosts_changed(pool_id)


# -- user sessions ------------------------------------------------------------------------------


def open_session(emu: Emulator, host_id: str, upn: str, ad_user: str) -> dict[str, Any]:
    """A new Active desktop session for ``upn`` on a session host (no placement checks)."""
    host = emu.store.get(host_id)
    rt = _host_rt(emu, host_id)
    if host is None or rt is None:
        raise resource_not_found(host_id)
    n = rt.next_session
    rt.next_session += 1
    sid = f"{host['id']}/userSessions/{n}"
    doc = {
        "id": sid,
        "name": f"{host['name']}/{n}",
        "type": US_TYPE,
        "systemData": _system_data(emu),
        "properties": {
            "objectId": emu.new_id(),
            "userPrincipalName": upn,
            "applicationType": "Desktop",
            "sessionState": "Active",
            "activeDirectoryUserName": ad_user,
            "createTime": emu.now_iso(),
        },
    }
    emu.store.put(sid, doc)
    emu.store.meta(sid)["avd"] = SessionRuntime(upn, emu.now(), emu.now())
    return doc


def _finish_session(emu: Emulator, session: dict[str, Any], reason: str) -> None:
    """End a session: statistics, listeners, and its removal (LogOff takes a moment)."""
    sid = str(session["id"])
    rt = _session_rt(emu, sid)
    if rt is not None and rt.ending:
        return
    if rt is not None:
        rt.ending = True
    was_active = session["properties"].get("sessionState") == "Active"
    st = avd_state(emu)
    stats = st.stats
    if reason == "adminForcedLogoff":
        if was_active:
            stats.forced_logoffs_active += 1
        else:
            stats.forced_logoffs_disconnected += 1
    elif reason in ("hostShutdown", "hostDeleted", "hostPoolDeleted"):
        if was_active:
            stats.lost_to_shutdown_active += 1
        else:
            stats.lost_to_shutdown_disconnected += 1
    else:
        stats.logoffs += 1
    st.record(
        emu,
        "sessionEnd",
        session=sid,
        user=session["properties"].get("userPrincipalName"),
        reason=reason,
        wasActive=was_active,
    )
    snapshot = copy.deepcopy(session)
    if reason in ("hostShutdown", "hostDeleted", "hostPoolDeleted"):
        emu.store.delete(sid)
    else:
        session["properties"]["sessionState"] = "LogOff"

        def gone() -> None:
            emu.store.delete(sid)
            pool_id = _pool_of(sid)
            for listener in _listeners(emu):
                listener.on_hosts_changed(pool_id)

        emu.schedule(emu.latency.get("avd.session.logoff"), gone, f"avd:logoff:{sid}")
    for listener in _listeners(emu):
        listener.on_session_end(snapshot, reason, was_active)


def end_session(emu: Emulator, session_id: str, reason: str = "userLogoff") -> None:
    """End a session (a user logging off, or a disconnected-session time limit)."""
    doc = emu.store.get(session_id)
    if doc is not None:
        _finish_session(emu, doc, reason)


def disconnect_session(emu: Emulator, session_id: str) -> bool:
    """Active -> Disconnected (a user closing the client). False if not active."""
    doc = emu.store.get(session_id)
    rt = _session_rt(emu, session_id)
    if doc is None or doc["properties"].get("sessionState") != "Active":
        return False
    doc["properties"]["sessionState"] = "Disconnected"
    if rt is not None:
        rt.state_since = emu.now()
    return True


def reconnect_session(emu: Emulator, session_id: str) -> bool:
    """Disconnected -> Active (the user is back). False if the session is gone or ending."""
    doc = emu.store.get(session_id)
    rt = _session_rt(emu, session_id)
    if doc is None or doc["properties"].get("sessionState") != "Disconnected":
        return False
    if rt is not None and rt.ending:
        return False
    doc["properties"]["sessionState"] = "Active"
    if rt is not None:
        rt.state_since = emu.now()
    return True


# -- views --------------------------------------------------------------------------------------


def _pool_view(emu: Emulator, doc: dict[str, Any], with_token: bool) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["properties"]["registrationInfo"] = _registration_info(
        _pool_rt(emu, str(doc["id"])), with_token
    )
    return out


def _host_view(emu: Emulator, doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    rt = _host_rt(emu, str(doc["id"]))
    props = out["properties"]
    sessions = sessions_of(emu, str(doc["id"]))
    status = host_status(emu, doc)
    props["status"] = status
    props["sessions"] = len(sessions)
    props["activeSessions"] = sum(
        1 for s in sessions if s["properties"].get("sessionState") == "Active"
    )
    props["disconnectedSessions"] = sum(
        1 for s in sessions if s["properties"].get("sessionState") == "Disconnected"
    )
    props["pendingSessions"] = 0
    heartbeat = emu.now() if status in ("Available", "NeedsAssistance") else None
    if rt is not None:
        props["lastHeartBeat"] = iso(heartbeat or rt.last_heartbeat)
        props["statusTimestamp"] = iso(rt.status_since)
    checks = [
        ("DomainJoinedCheck", "HealthCheckSucceeded", "SessionHost healthy: joined to the domain"),
        ("DomainTrustCheck", "HealthCheckSucceeded", "SessionHost healthy: domain trust intact"),
        ("SxSStackListenerCheck", "HealthCheckSucceeded", "SessionHost healthy: listener ready"),
    ]
    if status == "NeedsAssistance":
        checks.append(
            ("FSLogixHealthCheck", "HealthCheckFailed", "FSLogix profile container not healthy")
        )
    props["sessionHostHealthCheckResults"] = [
        {
            "healthCheckName": name,
            "healthCheckResult": result,
            "additionalFailureDetails": {
                "message": message,
                "errorCode": 0 if result == "HealthCheckSucceeded" else 1,
                "lastHealthCheckDateTime": emu.now_iso(),
            },
        }
        for name, result, message in checks
    ]
    return out


# -- paging (AVD style: pageSize, isDescending, initialSkip) -------------------------------------


def _avd_page(emu: Emulator, req: Request, items: list[dict[str, Any]]) -> Response:
    q = req.query

    def _int(name: str, default: int, lo: int, hi: int) -> int:
        raw = q.get(name.lower())
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(
                f"The query parameter '{name}' must be an integer.", target=name
            ) from None
        if not lo <= value <= hi:
            raise bad_request(
                f"The query parameter '{name}' must be between {lo} and {hi}.", target=name
            )
        return value

    size = _int("pageSize", emu.page_size, 1, 1000)
    skip = _int("initialSkip", 0, 0, 10**9)
    desc = str(q.get("isdescending", "false")).lower() == "true"
    ordered = sorted(items, key=lambda d: str(d.get("name", "")).lower(), reverse=desc)
    page = ordered[skip : skip + size]
    body: dict[str, Any] = {"value": page}
    if skip + size < len(ordered):
        params = {
            "api-version": req.api_version,
            "pageSize": str(size),
            "isDescending": "true" if desc else "false",
            "initialSkip": str(skip + size),
        }
        if q.get("$filter"):
            params["$filter"] = q["$filter"]
        body["nextLink"] = f"{emu.base_url}{req.path}?{urllib.parse.urlencode(params)}"
    else:
        body["nextLink"] = None
    return Response(200, body)


_FILTER_TERM = re.compile(
    r"^\s*(userprincipalname|sessionstate|state)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE
)


def _session_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """``userPrincipalName eq 'x' and sessionState eq 'Active'`` (the terms AVD supports)."""
    terms: list[tuple[str, str]] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _FILTER_TERM.match(part)
        if not m:
            raise bad_request(
                f"The $filter '{text}' is invalid. Supported: userPrincipalName eq '<upn>' and "
                "sessionState eq '<Active|Disconnected|LogOff>', joined with 'and'.",
                code="InvalidFilter",
                target="$filter",
            )
        key = "userPrincipalName" if m.group(1).lower() == "userprincipalname" else "sessionState"
        terms.append((key, m.group(2).lower()))

    def match(doc: dict[str, Any]) -> bool:
        props = doc["properties"]
        return all(str(props.get(k, "")).lower() == v for k, v in terms)

    return match


# -- registration of routes ---------------------------------------------------------------------


def register(emu: Emulator) -> None:
    def reset() -> None:
        old = avd_state(emu)
        fresh = AvdState()
        fresh.listeners = old.listeners  # listeners are modules, not scenario state
        emu.modules["avd"] = fresh

    emu.add_resetter(reset)

    def pool_id_of(req: Request) -> str:
        return HOSTPOOL.format(**req.params)

    def pool_or_404(req: Request) -> dict[str, Any]:
        pid = pool_id_of(req)
        doc = emu.store.get(pid)
        if doc is None:
            raise resource_not_found(pid)
        return doc

    def host_or_404(req: Request) -> dict[str, Any]:
        pool_or_404(req)
        hid = SESSION_HOST.format(**req.params)
        doc = emu.store.get(hid)
        if doc is None:
            raise resource_not_found(hid)
        return doc

    def session_or_404(req: Request) -> dict[str, Any]:
        host_or_404(req)
        sid = USER_SESSION.format(**req.params)
        doc = emu.store.get(sid)
        if doc is None:
            raise resource_not_found(sid)
        return doc

    def changed(pool_id: str) -> None:
        for listener in _listeners(emu):
            listener.on_hosts_changed(pool_id)

    # -- host pool properties ----------------------------------------------------------------
    def apply_pool_props(
        doc: dict[str, Any], props: dict[str, Any], creating: bool
    ) -> dict[str, Any] | None:
        """Validate and write host pool properties; returns registrationInfo to apply."""
        out = doc["properties"]
        target = "properties."
        if creating or "hostPoolType" in props:
            hpt = _pick(props.get("hostPoolType"), HOST_POOL_TYPES, target + "hostPoolType")
            if not creating and hpt != out.get("hostPoolType"):
                raise bad_request(
                    f"The host pool type cannot be changed from '{out.get('hostPoolType')}' to "
                    f"'{hpt}'.",
                    code="PropertyChangeNotAllowed",
                    target=target + "hostPoolType",
                )
            out["hostPoolType"] = hpt
        if creating or "loadBalancerType" in props:
            out["loadBalancerType"] = _pick(
                props.get("loadBalancerType"), LOAD_BALANCERS, target + "loadBalancerType"
            )
        if creating or "preferredAppGroupType" in props:
            out["preferredAppGroupType"] = _pick(
                props.get("preferredAppGroupType"),
                APP_GROUP_TYPES,
                target + "preferredAppGroupType",
            )
        if props.get("personalDesktopAssignmentType") is not None:
            out["personalDesktopAssignmentType"] = _pick(
                props["personalDesktopAssignmentType"],
                ASSIGNMENT_TYPES,
                target + "personalDesktopAssignmentType",
            )
        if props.get("maxSessionLimit") is not None:
            msl = props["maxSessionLimit"]
            if (
                isinstance(msl, bool)
                or not isinstance(msl, int)
                or not 1 <= msl <= MAX_SESSION_LIMIT
            ):
                raise bad_request(
                    f"maxSessionLimit must be an integer between 1 and {MAX_SESSION_LIMIT}; got "
                    f"{msl!r}.",
                    target=target + "maxSessionLimit",
                )
            out["maxSessionLimit"] = msl
        for key in (
            "friendlyName",
            "description",
            "customRdpProperty",
            "ssoadfsAuthority",
            "ssoClientId",
            "ssoClientSecretKeyVaultPath",
            "ssoSecretType",
            "ring",
        ):
            if key in props:
                if key == "ring":
                    if props[key] is not None and (
                        isinstance(props[key], bool) or not isinstance(props[key], int)
                    ):
                        raise bad_request("ring must be an integer.", target=target + key)
                    out[key] = props[key]
                else:
                    out[key] = _str(props[key], target + key, 10000)
        if "vmTemplate" in props:
            vt = props["vmTemplate"]
            if vt is not None and not isinstance(vt, str):
                raise bad_request(
                    "vmTemplate must be a string (JSON text).", target=target + "vmTemplate"
                )
            out["vmTemplate"] = vt
        for key in ("startVMOnConnect", "validationEnvironment"):
            if props.get(key) is not None:
                out[key] = _bool(props[key], target + key)
        if props.get("publicNetworkAccess") is not None:
            out["publicNetworkAccess"] = _pick(
                props["publicNetworkAccess"],
                {
                    "enabled": "Enabled",
                    "disabled": "Disabled",
                    "enabledforsessionhostsonly": "EnabledForSessionHostsOnly",
                    "enabledforclientsonly": "EnabledForClientsOnly",
                },
                target + "publicNetworkAccess",
            )
        if props.get("agentUpdate") is not None:
            if not isinstance(props["agentUpdate"], dict):
                raise bad_request("agentUpdate must be an object.", target=target + "agentUpdate")
            # PUT replaces it; PATCH merges it (ARM merge patch)
            base = {} if creating else copy.deepcopy(out.get("agentUpdate") or {})
            out["agentUpdate"] = merge_patch(base, props["agentUpdate"])
        # Newer (preview) api-versions' transport and management fields, kept as sent.
        for key in ("managedPrivateUDP", "directUDP", "publicUDP", "relayUDP"):
            if props.get(key) is not None:
                out[key] = _pick(props[key], UDP_SETTINGS, target + key)
        if props.get("managementType") is not None:
            kind = _pick(props["managementType"], MANAGEMENT_TYPES, target + "managementType")
            if not creating and out.get("managementType", "Standard") != kind:
                raise bad_request(
                    "The management type of a host pool cannot be changed.",
                    code="PropertyChangeNotAllowed",
                    target=target + "managementType",
                )
            out["managementType"] = kind
        hpt = out.get("hostPoolType")
        lb = out.get("loadBalancerType")
        if hpt == "Personal" and lb != "Persistent":
            raise bad_request(
                "A Personal host pool must use loadBalancerType 'Persistent'.",
                target=target + "loadBalancerType",
            )
        if hpt != "Personal" and lb == "Persistent":
            raise bad_request(
                f"loadBalancerType 'Persistent' is only valid for Personal host pools; this "
                f"host pool is '{hpt}'.",
                target=target + "loadBalancerType",
            )
        if hpt == "Personal":
            out.setdefault("personalDesktopAssignmentType", "Automatic")
        ri = props.get("registrationInfo")
        if ri is not None and not isinstance(ri, dict):
            raise bad_request(
                "registrationInfo must be an object.", target=target + "registrationInfo"
            )
        return ri

    def validate_registration(ri: dict[str, Any] | None) -> tuple[str, datetime | None]:
        """(operation, expiry) after checking the expiry rules (1 hour .. 30 days)."""
        if ri is None:
            return "None", None
        target = "properties.registrationInfo"
        raw_op = ri.get("registrationTokenOperation")
        expiry_raw = ri.get("expirationTime")
        if raw_op is None:
            op = "Update" if expiry_raw is not None else "None"
        else:
            op = _pick(raw_op, TOKEN_OPERATIONS, target + ".registrationTokenOperation")
        if op != "Update":
            return op, None
        if expiry_raw is None:
            raise bad_request(
                "registrationInfo.expirationTime is required when registrationTokenOperation is "
                "'Update'.",
                target=target + ".expirationTime",
            )
        expires = _parse_time(expiry_raw, target + ".expirationTime")
        now = emu.now()
        if expires < now + TOKEN_MIN - TOKEN_SLACK or expires > now + TOKEN_MAX + TOKEN_SLACK:
            raise bad_request(
                f"The registration token expiration time '{expiry_raw}' is invalid: it must be "
                f"between 1 hour and 30 days from now (now is {emu.now_iso()}).",
                code="InvalidRegistrationTokenExpiration",
                target=target + ".expirationTime",
            )
        return op, expires

    def apply_registration(pool_id: str, op: str, expires: datetime | None) -> None:
        if op == "Update" and expires is not None:
            issue_registration_token(emu, pool_id, expires)
        elif op == "Delete":
            _delete_token(emu, pool_id)

    # -- host pools -----------------------------------------------------------------------------
    hp_op = "Microsoft.DesktopVirtualization/hostpools"

    @emu.route("PUT", HOSTPOOL, op=f"{hp_op}/write", api_versions=API_VERSIONS)
    def put_pool(req: Request) -> Response:
        sync(emu)
        name = req.params["hostPool"]
        check_name(
            name,
            kind=HP_TYPE,
            pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*",
            max_length=64,
            min_length=3,
            rule="The host pool name must be 3-64 characters of letters, numbers, '.', '-' and "
            "'_', starting with a letter or number.",
        )
        body = req.json_object()
        loc = body.get("location")
        props = body.get("properties")
        pid = pool_id_of(req)
        existing = emu.store.get(pid)
        if existing is None and (not isinstance(loc, str) or not loc.strip()):
            raise ArmError(
                400, "LocationRequired", "The location property is required for this definition."
            )
        if not isinstance(props, dict):
            raise bad_request(
                "Required property 'properties' is missing (null).", target="properties"
            )
        tags = _tags(body)
        if existing is not None:
            if isinstance(loc, str) and _norm_region(loc) != _norm_region(
                str(existing.get("location"))
            ):
                raise ArmError(
                    409,
                    "InvalidResourceLocation",
                    f"The resource '{name}' already exists in location "
                    f"'{existing.get('location')}' in resource group '{req.params['rg']}'. A "
                    f"resource with the same name cannot be created in location '{loc}'. Please "
                    "select a new resource name.",
                )
            trial = copy.deepcopy(existing)
            ri = apply_pool_props(trial, props, creating=False)
            op, expires = validate_registration(ri)
            existing["properties"] = trial["properties"]
            existing["tags"] = tags
            _touch(emu, existing)
            apply_registration(pid, op, expires)
            changed(pid)
            avd_state(emu).record(emu, "hostPoolWrite", hostPool=pid)
            return Response(200, _pool_view(emu, existing, True))
        doc: dict[str, Any] = {
            "id": pid,
            "name": name,
            "type": HP_TYPE,
            "location": _norm_region(str(loc)),
            "tags": tags,
            "systemData": _system_data(emu),
            "kind": body.get("kind"),
            "properties": {
                "objectId": emu.new_id(),
                "friendlyName": None,
                "description": None,
                "customRdpProperty": None,
                "maxSessionLimit": MAX_SESSION_LIMIT,
                "validationEnvironment": False,
                "ring": None,
                "vmTemplate": None,
                "applicationGroupReferences": [],
                "appAttachPackageReferences": [],
                "ssoadfsAuthority": None,
                "ssoClientId": None,
                "ssoClientSecretKeyVaultPath": None,
                "ssoSecretType": None,
                "startVMOnConnect": False,
                "cloudPcResource": False,
                "publicNetworkAccess": "Enabled",
                "agentUpdate": {
                    "type": "Default",
                    "useSessionHostLocalTime": False,
                    "maintenanceWindowTimeZone": None,
                    "maintenanceWindows": [],
                },
            },
        }
        ri = apply_pool_props(doc, props, creating=True)
        op, expires = validate_registration(ri)
        doc["properties"].setdefault("personalDesktopAssignmentType", None)
        emu.store.put(pid, doc)
        _pool_rt(emu, pid)
        apply_registration(pid, op, expires)
        avd_state(emu).record(emu, "hostPoolWrite", hostPool=pid)
        emu.events.resource_write(pid, operation_name=req.op)
        return Response(201, _pool_view(emu, doc, True))

    @emu.route("PATCH", HOSTPOOL, op=f"{hp_op}/write", api_versions=API_VERSIONS)
    def patch_pool(req: Request) -> Response:
        sync(emu)
        doc = pool_or_404(req)
        body = req.json_object()
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise bad_request("properties must be an object.", target="properties")
        trial = copy.deepcopy(doc)
        ri = apply_pool_props(trial, props, creating=False)
        op, expires = validate_registration(ri)
        doc["properties"] = trial["properties"]
        if "tags" in body:
            doc["tags"] = _tags(body)
        _touch(emu, doc)
        apply_registration(str(doc["id"]), op, expires)
        changed(str(doc["id"]))
        emu.events.resource_write(str(doc["id"]), operation_name=req.op)
        return Response(200, _pool_view(emu, doc, True))

    @emu.route("GET", HOSTPOOL, op=f"{hp_op}/read", api_versions=API_VERSIONS)
    def get_pool(req: Request) -> Response:
        sync(emu)
        return Response(200, _pool_view(emu, pool_or_404(req), False))

    @emu.route("GET", HOSTPOOLS, op=f"{hp_op}/read", api_versions=API_VERSIONS)
    def list_pools(req: Request) -> Response:
        sync(emu)
        prefix = f"/subscriptions/{req.params['sub']}/resourceGroups/{req.params['rg']}"
        items = [_pool_view(emu, d, False) for d in emu.store.list(prefix, HP_TYPE)]
        return _avd_page(emu, req, items)

    @emu.route("GET", HOSTPOOLS_SUB, op=f"{hp_op}/read", api_versions=API_VERSIONS)
    def list_pools_sub(req: Request) -> Response:
        sync(emu)
        items = [
            _pool_view(emu, d, False)
            for d in emu.store.list(f"/subscriptions/{req.params['sub']}", HP_TYPE)
        ]
        return _avd_page(emu, req, items)

    @emu.route("DELETE", HOSTPOOL, op=f"{hp_op}/delete", api_versions=API_VERSIONS)
    def delete_pool(req: Request) -> Response:
        sync(emu)
        pid = pool_id_of(req)
        doc = emu.store.get(pid)
        if doc is None:
            return Response(204)
        force = req.query.get("force", "").lower() == "true"
        hosts = session_hosts_of(emu, pid)
        if hosts and not force:
            raise bad_request(
                f"The host pool '{doc['name']}' has {len(hosts)} session host(s). Remove the "
                "session hosts first, or delete with force=true.",
                code="HostPoolHasSessionHosts",
            )
        for h in hosts:
            for s in sessions_of(emu, str(h["id"])):
                _finish_session(emu, s, "hostPoolDeleted")
            _drop_host(str(h["id"]))
        _delete_token(emu, pid, "hostPoolDeleted")
        emu.store.delete(pid)
        avd_state(emu).record(emu, "hostPoolDeleted", hostPool=pid)
        emu.events.resource_delete(pid, operation_name=req.op)
        changed(pid)
        return Response(200)

    def _drop_host(host_id: str) -> None:
        for s in emu.store.list(host_id + "/userSessions", US_TYPE):
            emu.store.delete(str(s["id"]))
        emu.store.delete(host_id)

    @emu.route(
        "POST",
        HOSTPOOL + "/retrieveRegistrationToken",
        op=f"{hp_op}/retrieveRegistrationToken/action",
        api_versions=API_VERSIONS,
    )
    def retrieve_token(req: Request) -> Response:
        sync(emu)
        doc = pool_or_404(req)
        return Response(200, _registration_info(_pool_rt(emu, str(doc["id"])), True))

    @emu.route(
        "POST",
        HOSTPOOL + "/listRegistrationTokens",
        op=f"{hp_op}/listRegistrationTokens/action",
        api_versions=API_VERSIONS,
    )
    def list_tokens(req: Request) -> Response:
        sync(emu)
        doc = pool_or_404(req)
        rt = _pool_rt(emu, str(doc["id"]))
        value = []
        if rt.token:
            value.append(
                {"expirationTime": iso(rt.expires) if rt.expires else None, "token": rt.token}
            )
        return Response(200, {"value": value, "nextLink": None})

    # -- session hosts ----------------------------------------------------------------------------
    sh_op = "Microsoft.DesktopVirtualization/hostpools/sessionhosts"

    @emu.route("GET", SESSION_HOSTS, op=f"{sh_op}/read", api_versions=API_VERSIONS)
    def list_hosts(req: Request) -> Response:
        sync(emu)
        doc = pool_or_404(req)
        items = [_host_view(emu, h) for h in session_hosts_of(emu, str(doc["id"]))]
        return _avd_page(emu, req, items)

    @emu.route("GET", SESSION_HOST, op=f"{sh_op}/read", api_versions=API_VERSIONS)
    def get_host(req: Request) -> Response:
        sync(emu)
        return Response(200, _host_view(emu, host_or_404(req)))

    @emu.route("PATCH", SESSION_HOST, op=f"{sh_op}/write", api_versions=API_VERSIONS)
    def patch_host(req: Request) -> Response:
        sync(emu)
        doc = host_or_404(req)
        pool = pool_or_404(req)
        body = req.body if req.body is not None else {}
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object.", target="sessionHost")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise bad_request("properties must be an object.", target="properties")
        target = "properties."
        allow = None
        if props.get("allowNewSession") is not None:
            allow = _bool(props["allowNewSession"], target + "allowNewSession")
        assigned = doc["properties"].get("assignedUser")
        if "assignedUser" in props:
            value = _str(props["assignedUser"], target + "assignedUser", 256)
            if value and pool["properties"].get("hostPoolType") != "Personal":
                raise bad_request(
                    "assignedUser can only be set on session hosts of a Personal host pool.",
                    target=target + "assignedUser",
                )
            if value and assigned and value.lower() != str(assigned).lower():
                force = req.query.get("force", "").lower() == "true"
                if not force:
                    raise bad_request(
                        f"The session host is already assigned to '{assigned}'; reassigning "
                        "needs force=true.",
                        code="SessionHostAlreadyAssigned",
                        target=target + "assignedUser",
                    )
            assigned = value or None
        friendly = doc["properties"].get("friendlyName")
        if "friendlyName" in props:
            friendly = _str(props["friendlyName"], target + "friendlyName", 256) or ""
        if allow is not None:
            doc["properties"]["allowNewSession"] = allow
        doc["properties"]["assignedUser"] = assigned
        doc["properties"]["friendlyName"] = friendly
        _touch(emu, doc)
        avd_state(emu).record(
            emu,
            "sessionHostUpdate",
            host=str(doc["id"]),
            allowNewSession=doc["properties"]["allowNewSession"],
        )
        changed(str(pool["id"]))
        return Response(200, _host_view(emu, doc))

    @emu.route("DELETE", SESSION_HOST, op=f"{sh_op}/delete", api_versions=API_VERSIONS)
    def delete_host(req: Request) -> Response:
        sync(emu)
        pool = pool_or_404(req)
        hid = SESSION_HOST.format(**req.params)
        doc = emu.store.get(hid)
        if doc is None:
            return Response(204)
        force = req.query.get("force", "").lower() == "true"
        sessions = [
            s
            for s in sessions_of(emu, hid)
            if s["properties"].get("sessionState") in ("Active", "Disconnected")
        ]
        if sessions and not force:
            raise bad_request(
                f"The session host '{doc['name']}' has {len(sessions)} user session(s). Log the "
                "users off first, or delete with force=true.",
                code="SessionHostHasUserSessions",
            )
        for s in sessions_of(emu, hid):
            _finish_session(emu, s, "hostDeleted")
        _drop_host(hid)
        avd_state(emu).record(emu, "sessionHostDeleted", host=hid)
        changed(str(pool["id"]))
        return Response(200)

    # -- user sessions ----------------------------------------------------------------------------
    us_op = "Microsoft.DesktopVirtualization/hostpools/sessionhosts/usersessions"

    @emu.route("GET", POOL_SESSIONS, op=f"{us_op}/read", api_versions=API_VERSIONS)
    def list_pool_sessions(req: Request) -> Response:
        sync(emu)
        doc = pool_or_404(req)
        items = [
            copy.deepcopy(s)
            for h in session_hosts_of(emu, str(doc["id"]))
            for s in sessions_of(emu, str(h["id"]))
        ]
        flt = req.query.get("$filter")
        if flt:
            match = _session_filter(flt)
            items = [s for s in items if match(s)]
        return _avd_page(emu, req, items)

    @emu.route("GET", USER_SESSIONS, op=f"{us_op}/read", api_versions=API_VERSIONS)
    def list_host_sessions(req: Request) -> Response:
        sync(emu)
        doc = host_or_404(req)
        items = [copy.deepcopy(s) for s in sessions_of(emu, str(doc["id"]))]
        return _avd_page(emu, req, items)

    @emu.route("GET", USER_SESSION, op=f"{us_op}/read", api_versions=API_VERSIONS)
    def get_session(req: Request) -> Response:
        sync(emu)
        return Response(200, copy.deepcopy(session_or_404(req)))

    @emu.route("DELETE", USER_SESSION, op=f"{us_op}/delete", api_versions=API_VERSIONS)
    def logoff(req: Request) -> Response:
        sync(emu)
        host_or_404(req)
        sid = USER_SESSION.format(**req.params)
        doc = emu.store.get(sid)
        if doc is None:
            return Response(204)
        state = doc["properties"].get("sessionState")
        force = req.query.get("force", "").lower() == "true"
        if state == "LogOff":
            return Response(200)
        if state == "Active" and not force:
            raise bad_request(
                f"The user session '{doc['name']}' of "
                f"'{doc['properties'].get('userPrincipalName')}' is active. Send the user a "
                "message and wait, or log the user off with force=true (unsaved work is lost).",
                code="UserSessionIsActive",
            )
        _finish_session(emu, doc, "adminForcedLogoff" if force else "adminLogoff")
        changed(_pool_of(sid))
        return Response(200)

    @emu.route(
        "POST",
        USER_SESSION + "/disconnect",
        op=f"{us_op}/disconnect/action",
        api_versions=API_VERSIONS,
    )
    def disconnect(req: Request) -> Response:
        sync(emu)
        doc = session_or_404(req)
        if disconnect_session(emu, str(doc["id"])):
            avd_state(emu).stats.disconnects += 1
            avd_state(emu).record(emu, "disconnect", session=str(doc["id"]))
            snapshot = copy.deepcopy(doc)
            for listener in _listeners(emu):
                listener.on_disconnect(snapshot)
            changed(_pool_of(str(doc["id"])))
        return Response(200)

    @emu.route(
        "POST",
        USER_SESSION + "/sendMessage",
        op=f"{us_op}/sendMessage/action",
        api_versions=API_VERSIONS,
    )
    def send_message(req: Request) -> Response:
        sync(emu)
        doc = session_or_404(req)
        body = req.body if req.body is not None else {}
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object.", target="sendMessage")
        title = _str(body.get("messageTitle"), "messageTitle", 1024) or ""
        text = _str(body.get("messageBody"), "messageBody", 10000) or ""
        delivered = doc["properties"].get("sessionState") == "Active"
        rt = _session_rt(emu, str(doc["id"]))
        if rt is not None:
            rt.messages.append({"time": emu.now_iso(), "title": title, "body": text})
        upn = str(doc["properties"].get("userPrincipalName"))
        avd_state(emu).stats.messages += 1
        if not delivered:
            avd_state(emu).stats.messages_undelivered += 1
        avd_state(emu).stats.messages_by_user[upn] = (
            avd_state(emu).stats.messages_by_user.get(upn, 0) + 1
        )
        avd_state(emu).record(emu, "message", session=str(doc["id"]), user=upn, delivered=delivered)
        snapshot = copy.deepcopy(doc)
        for listener in _listeners(emu):
            listener.on_message(snapshot, title, text, delivered)
        return Response(200)

    # -- seeding, ownership, report ------------------------------------------------------------
    emu.add_listener("vm.power", lambda vm_id, power: _on_vm_power(emu, vm_id, power))
    emu.add_listener("vm.guest", lambda vm_id, _kind: _consider(emu, vm_id))
    emu.add_seeder(lambda scenario: _seed(emu, scenario))
    emu.add_owner_rule(lambda r: _owner_of(emu, r))
    emu.add_report_section("avd", lambda: avd_report(emu))


def _owner_of(emu: Emulator, resource: dict[str, Any]) -> str | None:
    """Session host VMs (and their disks and NICs) belong to their host pool."""
    rtype = str(resource.get("type", "")).lower()
    rid = str(resource.get("id", ""))
    if rtype == VM_TYPE.lower():
        vm_id = rid
    elif rtype == "microsoft.compute/disks":
        vm_id = str(resource.get("managedBy") or "")
    elif rtype == "microsoft.network/networkinterfaces":
        vm_id = str((resource.get("properties", {}).get("virtualMachine") or {}).get("id") or "")
    else:
        return None
    if not vm_id:
        return None
    for h in emu.store.list("/subscriptions", SH_TYPE):
        if str(h["properties"].get("resourceId", "")).lower() == vm_id.lower():
            return _pool_of(str(h["id"]))
    return None


def _image_reference(spec_ref: Any, scenario: Scenario, where: str) -> dict[str, Any]:
    if isinstance(spec_ref, dict):
        return dict(spec_ref)
    if isinstance(spec_ref, str) and spec_ref.startswith("/"):
        return {"id": spec_ref}
    if isinstance(spec_ref, str):
        parts = spec_ref.split(":")
        if len(parts) != 4:
            raise ValueError(
                f"scenario is invalid: {where}.image_reference must be "
                "publisher:offer:sku:version, a gallery image (version) id or an imageReference "
                "object"
            )
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
    if not scenario.marketplace:
        raise ValueError(
            f"scenario is invalid: {where}.image_reference is required when the scenario has no "
            "marketplace images"
        )
    m = scenario.marketplace[0]
    return {"publisher": m.publisher, "offer": m.offer, "sku": m.sku, "version": "latest"}


def _seed(emu: Emulator, scenario: Scenario) -> None:
    from emulator.compute import seed_vm, set_power

    for pi, hp in enumerate(scenario.host_pools):
        sub = hp.subscription or scenario.default_subscription
        pid = HOSTPOOLS.format(sub=sub, rg=hp.resource_group) + f"/{hp.name}"
        extra = hp.model_extra or {}
        props: dict[str, Any] = {
            "objectId": emu.new_id(),
            "friendlyName": getattr(hp, "friendly_name", None),
            "description": getattr(hp, "description", None),
            "hostPoolType": hp.host_pool_type,
            "personalDesktopAssignmentType": getattr(hp, "personal_desktop_assignment_type", None)
            if hp.host_pool_type == "Personal"
            else None,
            "customRdpProperty": None,
            "maxSessionLimit": hp.max_session_limit,
            "loadBalancerType": hp.load_balancer_type,
            "validationEnvironment": False,
            "ring": None,
            "vmTemplate": json.dumps(hp.vm_template) if hp.vm_template is not None else None,
            "applicationGroupReferences": [],
            "appAttachPackageReferences": [],
            "ssoadfsAuthority": None,
            "ssoClientId": None,
            "ssoClientSecretKeyVaultPath": None,
            "ssoSecretType": None,
            "preferredAppGroupType": getattr(hp, "preferred_app_group_type", "Desktop"),
            "startVMOnConnect": bool(getattr(hp, "start_vm_on_connect", False)),
            "cloudPcResource": False,
            "publicNetworkAccess": "Enabled",
            "agentUpdate": {
                "type": "Default",
                "useSessionHostLocalTime": False,
                "maintenanceWindowTimeZone": None,
                "maintenanceWindows": [],
            },
        }
        doc = {
            "id": pid,
            "name": hp.name,
            "type": HP_TYPE,
            "location": _norm_region(hp.location),
            "tags": dict(getattr(hp, "tags", None) or extra.get("tags") or {}),
            "systemData": _system_data(emu),
            "properties": props,
        }
        emu.store.put(pid, doc)
        rt = _pool_rt(emu, pid)
        props["registrationInfo"] = _registration_info(rt, False)
        suffix = getattr(hp, "domain_suffix", None)
        if suffix:
            emu.store.meta(pid)["domain_suffix"] = suffix
        hours = getattr(hp, "registration_token_hours", None)
        if hours:
            issue_registration_token(emu, pid, emu.now() + timedelta(hours=float(hours)))
        for hi, hs in enumerate(hp.hosts):
            where = f"host_pools.{pi}.hosts.{hi}"
            ref = _image_reference(hs.image_reference, scenario, where)
            start = int(getattr(hs, "start_index", 0))
            for i in range(start, start + hs.count):
                vm_name = f"{hs.name_prefix}-{i}"
                try:
                    vm = seed_vm(
                        emu,
                        subscription=sub,
                        resource_group=hp.resource_group,
                        name=vm_name,
                        location=hp.location,
                        image_reference=ref,
                        vm_size=hs.vm_size,
                        security_type=getattr(hs, "security_type", "TrustedLaunch"),
                    )
                except ArmError as e:
                    raise ValueError(
                        f"scenario is invalid: {where}: cannot create VM {vm_name}: {e.message}"
                    ) from None
                if getattr(hs, "power", "running") == "deallocated":
                    set_power(emu, str(vm["id"]), "deallocated")
                register_vm(
                    emu,
                    pid,
                    str(vm["id"]),
                    allow_new_session=bool(getattr(hs, "allow_new_session", True)),
                )


def avd_report(emu: Emulator) -> dict[str, Any]:
    """Host pools with host statuses and sessions; messages, log-offs, work lost, registrations."""
    st = avd_state(emu)
    pools = []
    for pool in emu.store.list("/subscriptions", HP_TYPE):
        hosts = []
        for h in session_hosts_of(emu, str(pool["id"])):
            sessions = sessions_of(emu, str(h["id"]))
            hosts.append(
                {
                    "name": h["name"],
                    "status": host_status(emu, h),
                    "allowNewSession": h["properties"].get("allowNewSession"),
                    "sessions": len(sessions),
                    "active": sum(
                        1 for s in sessions if s["properties"].get("sessionState") == "Active"
                    ),
                    "vm": h["properties"].get("resourceId"),
                    "image": session_host_image(emu, str(h["id"])),
                }
            )
        pools.append({"id": pool["id"], "sessionHosts": hosts})
    s = st.stats
    return {
        "hostPools": pools,
        "messagesSent": s.messages,
        "messagesUndelivered": s.messages_undelivered,
        "messagesByUser": dict(sorted(s.messages_by_user.items())),
        "disconnects": s.disconnects,
        "logoffs": s.logoffs,
        "forcedLogoffsActive": s.forced_logoffs_active,
        "forcedLogoffsDisconnected": s.forced_logoffs_disconnected,
        "sessionsLostToHostShutdownActive": s.lost_to_shutdown_active,
        "sessionsLostToHostShutdownDisconnected": s.lost_to_shutdown_disconnected,
        "workLost": s.work_lost,
        "registrations": s.registrations,
        "registrationsRejected": list(st.rejected),
    }
