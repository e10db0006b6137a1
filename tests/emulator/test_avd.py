"""AVD conformance with the real DesktopVirtualizationMgmtClient (api-version 2024-04-03)."""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from test_gallery_support import AVD_API, SUB, wait_for

from emulator.avd import avd_state, open_session
from tests.emulator.conftest import SMALL_SCENARIO

RG = "rg-avd"
POOL = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DesktopVirtualization/hostPools"
)


def scenario(**pool: Any) -> dict[str, Any]:
    sc = copy.deepcopy(SMALL_SCENARIO)
    sc["host_pools"] = [
        {
            "name": "hp1",
            "resource_group": RG,
            "location": "westeurope",
            "max_session_limit": 4,
            "hosts": [{"name_prefix": "avd", "count": 2}],
            **pool,
        }
    ]
    return sc


@pytest.fixture
def env(emulator_factory: Any) -> Any:
    return emulator_factory(scenario())


@pytest.fixture
def ac(env: Any) -> Any:
    return env.avd_client()


def _pool_body(**props: Any) -> dict[str, Any]:
    return {
        "location": "westeurope",
        "tags": {"env": "test"},
        "properties": {
            "hostPoolType": "Pooled",
            "loadBalancerType": "BreadthFirst",
            "preferredAppGroupType": "Desktop",
            **props,
        },
    }


def _err(e: HttpResponseError) -> str:
    return f"{e.status_code} {e}"


def _vm_body(custom_data: str | None, name: str) -> dict[str, Any]:
    os_profile: dict[str, Any] = {
        "computerName": name,
        "adminUsername": "azureuser",
        "adminPassword": "P@ssw0rd-2026!",
    }
    if custom_data is not None:
        os_profile["customData"] = custom_data
    return {
        "location": "westeurope",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
            "storageProfile": {
                "imageReference": {
                    "publisher": "MicrosoftWindowsDesktop",
                    "offer": "windows-11",
                    "sku": "win11-25h2-avd",
                    "version": "latest",
                }
            },
            "osProfile": os_profile,
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [
                    {"name": "nic", "properties": {"primary": True}}
                ],
            },
        },
    }


def _custom_data(token: str, pool_id: str) -> str:
    return base64.b64encode(
        json.dumps({"avdRegistrationToken": token, "hostPool": pool_id}).encode()
    ).decode()


# -- host pools ---------------------------------------------------------------------------------


def test_host_pool_create_get_list_update_delete(env: Any, ac: Any) -> None:
    hp = ac.host_pools.create_or_update(
        RG,
        "hp2",
        _pool_body(
            maxSessionLimit=6,
            vmTemplate=json.dumps({"vmSize": {"id": "Standard_D4s_v5"}}),
            startVMOnConnect=True,
        ),
    )
    assert hp.host_pool_type == "Pooled"
    assert hp.max_session_limit == 6
    assert hp.start_vm_on_connect is True
    assert json.loads(hp.vm_template)["vmSize"]["id"] == "Standard_D4s_v5"
    assert hp.tags == {"env": "test"}
    got = ac.host_pools.get(RG, "hp2")
    assert got.object_id == hp.object_id
    assert got.name == "hp2"
    for i in range(3):
        ac.host_pools.create_or_update(RG, f"hp-extra{i}", _pool_body())
    names = [p.name for p in ac.host_pools.list_by_resource_group(RG)]  # pages of 3
    assert names == ["hp-extra0", "hp-extra1", "hp-extra2", "hp1", "hp2"]
    desc = [
        p.name for p in ac.host_pools.list_by_resource_group(RG, page_size=2, is_descending=True)
    ]
    assert desc == sorted(names, reverse=True)
    assert len(list(ac.host_pools.list())) == 5
    up = ac.host_pools.update(
        RG,
        "hp2",
        {
            "tags": {"env": "prod"},
            "properties": {
                "maxSessionLimit": 10,
                "loadBalancerType": "DepthFirst",
                "description": "pool two",
            },
        },
    )
    assert (up.max_session_limit, up.load_balancer_type, up.description) == (
        10,
        "DepthFirst",
        "pool two",
    )
    assert up.tags == {"env": "prod"}
    ac.host_pools.delete(RG, "hp2")
    with pytest.raises(ResourceNotFoundError):
        ac.host_pools.get(RG, "hp2")
    ac.host_pools.delete(RG, "hp2")  # gone already: no error


def test_host_pool_with_session_hosts_needs_force_to_delete(env: Any, ac: Any) -> None:
    with pytest.raises(HttpResponseError) as err:
        ac.host_pools.delete(RG, "hp1")
    assert err.value.status_code == 400
    assert "force" in str(err.value)
    ac.host_pools.delete(RG, "hp1", force=True)
    with pytest.raises(ResourceNotFoundError):
        ac.host_pools.get(RG, "hp1")
    with env.emu.lock:
        assert not env.emu.store.list(f"{POOL}/hp1")


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        ({"hostPoolType": "Personal"}, "Persistent"),
        ({"loadBalancerType": "Persistent"}, "Personal"),
        ({"loadBalancerType": "RoundRobin"}, "loadBalancerType"),
        ({"hostPoolType": None}, "hostPoolType"),
        ({"maxSessionLimit": 0}, "maxSessionLimit"),
        ({"preferredAppGroupType": "Everything"}, "preferredAppGroupType"),
        ({"startVMOnConnect": "yes"}, "startVMOnConnect"),
        ({"registrationInfo": {"registrationTokenOperation": "Update"}}, "expirationTime"),
    ],
)
def test_bad_host_pool_requests_are_400(env: Any, props: dict[str, Any], fragment: str) -> None:
    body = _pool_body(**props)
    body["properties"] = {k: v for k, v in body["properties"].items() if v is not None}
    status, _, resp = env.http("PUT", f"{POOL}/bad?api-version={AVD_API}", body)
    assert status == 400, resp
    assert fragment in resp["error"]["message"] + str(resp["error"].get("target"))


# -- registration tokens ------------------------------------------------------------------------


def test_registration_token_rules(env: Any, ac: Any) -> None:
    now = env.clock.now()

    def info(expiry: Any, op: str = "Update") -> dict[str, Any]:
        return {
            "properties": {
                "registrationInfo": {
                    "expirationTime": expiry.isoformat() if expiry else None,
                    "registrationTokenOperation": op,
                }
            }
        }

    for bad in (timedelta(minutes=30), timedelta(days=31), timedelta(hours=-2)):
        with pytest.raises(HttpResponseError) as err:
            ac.host_pools.update(RG, "hp1", info(now + bad))
        assert err.value.status_code == 400, _err(err.value)
        assert "between 1 hour and 30 days" in str(err.value)
    up = ac.host_pools.update(RG, "hp1", info(now + timedelta(hours=2)))
    token = up.registration_info.token
    assert token
    assert token.count(".") == 2  # JWT-shaped
    assert ac.host_pools.get(RG, "hp1").registration_info.token is None  # GET hides it
    got = ac.host_pools.retrieve_registration_token(RG, "hp1")
    assert got.token == token
    assert got.expiration_time == now + timedelta(hours=2)
    listed = ac.host_pools.list_registration_tokens(RG, "hp1")
    assert [t.token for t in listed.value] == [token]
    # 30 days is the maximum and is accepted; a new token replaces the old one.
    up = ac.host_pools.update(RG, "hp1", info(now + timedelta(days=30)))
    assert up.registration_info.token != token
    # None leaves it alone; Delete removes it.
    same = ac.host_pools.update(
        RG, "hp1", {"properties": {"registrationInfo": {"registrationTokenOperation": "None"}}}
    )
    assert same.registration_info.token == up.registration_info.token
    ac.host_pools.update(RG, "hp1", info(None, "Delete"))
    assert ac.host_pools.retrieve_registration_token(RG, "hp1").token is None
    assert ac.host_pools.list_registration_tokens(RG, "hp1").value == []


def _token(ac: Any, env: Any, hours: float = 2) -> tuple[str, str]:
    expiry = env.clock.now() + timedelta(hours=hours)
    hp = ac.host_pools.update(
        RG,
        "hp1",
        {
            "properties": {
                "registrationInfo": {
                    "expirationTime": expiry.isoformat(),
                    "registrationTokenOperation": "Update",
                }
            }
        },
    )
    return hp.registration_info.token, hp.id


def test_vm_with_a_valid_token_registers_itself(env: Any, ac: Any) -> None:
    cc = env.compute_client()
    token, pool_id = _token(ac, env)
    boots: list[Any] = []

    def on_power(vm_id: str, power: str) -> None:
        if power == "running":
            boots.append(env.clock.now())

    env.emu.add_listener("vm.power", on_power)
    vm = cc.virtual_machines.begin_create_or_update(
        RG, "avd-7", _vm_body(_custom_data(token, pool_id), "avd-7")
    ).result()

    found = None
    for _ in range(2000):
        found = [h for h in ac.session_hosts.list(RG, "hp1") if h.name == "hp1/avd-7"]
        if found:
            break
    assert found, "the VM never registered"
    host = ac.session_hosts.get(RG, "hp1", "avd-7")
    assert host.resource_id.lower() == vm.id.lower()
    assert host.virtual_machine_id == vm.vm_id
    assert host.status == "Available"
    assert host.allow_new_session is True
    assert host.sessions == 0
    assert host.os_version.startswith("10.0.26200")
    assert host.agent_version
    assert host.update_state == "Succeeded"
    assert host.last_heart_beat is not None
    with env.emu.lock:
        from emulator.avd import _host_rt, session_host_image

        registered = _host_rt(env.emu, host.id).registered_at  # type: ignore[union-attr]
        assert len(boots) == 1
        assert registered - boots[0] >= timedelta(minutes=4)  # the agent's delay, 5 min +-20 %
        image = session_host_image(env.emu, host.id)
        assert image is not None
        assert image["sku"] == "win11-25h2-avd"


def test_vm_with_a_wrong_or_replaced_token_never_registers(env: Any, ac: Any) -> None:
    cc = env.compute_client()
    old, pool_id = _token(ac, env)
    _token(ac, env)  # replaces `old`
    cc.virtual_machines.begin_create_or_update(
        RG, "avd-8", _vm_body(_custom_data(old, pool_id), "avd-8")
    ).result()
    cc.virtual_machines.begin_create_or_update(
        RG, "avd-9", _vm_body(_custom_data("not-a-token", pool_id), "avd-9")
    ).result()

    def rejected() -> list[dict[str, str]]:
        list(ac.session_hosts.list(RG, "hp1"))  # any AVD call lets the emulator look
        with env.emu.lock:
            return list(avd_state(env.emu).rejected)

    for _ in range(2000):
        if len(rejected()) == 2:
            break
    reasons = sorted(r["reason"] for r in rejected())
    assert len(reasons) == 2
    assert "not a host pool token" in reasons[0]
    assert "replaced" in reasons[1]
    assert sorted(h.name for h in ac.session_hosts.list(RG, "hp1")) == ["hp1/avd-0", "hp1/avd-1"]


def test_token_that_expires_before_the_agent_registers_is_refused(emulator_factory: Any) -> None:
    sc = scenario()
    sc["latency"] = {"avd.host.register": {"mean": "3h", "jitter": 0}}
    env = emulator_factory(sc)
    ac = env.avd_client()
    cc = env.compute_client()
    token, pool_id = _token(ac, env, hours=1.5)
    cc.virtual_machines.begin_create_or_update(
        RG, "avd-5", _vm_body(_custom_data(token, pool_id), "avd-5")
    ).result()
    list(ac.session_hosts.list(RG, "hp1"))
    reason = wait_for(env, lambda: avd_state(env.emu).rejected, what="the registration attempt")[0][
        "reason"
    ]
    assert reason.startswith("ExpiredRegistrationToken")


def test_registration_through_the_agent_registry_value(env: Any, ac: Any) -> None:
    from test_gallery_support import make_vm

    from emulator.compute import guest_of

    token, _ = _token(ac, env)
    vm_id = make_vm(env, "avd-6", rg=RG)
    with env.emu.lock:
        guest = guest_of(env.emu, vm_id)
        assert guest is not None
        guest.set_registry(
            "HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent", "RegistrationToken", "REG_SZ", token
        )
    list(ac.session_hosts.list(RG, "hp1"))
    for _ in range(2000):
        if any(h.name == "hp1/avd-6" for h in ac.session_hosts.list(RG, "hp1")):
            break
    assert ac.session_hosts.get(RG, "hp1", "avd-6").status == "Available"


# -- session hosts ------------------------------------------------------------------------------


def test_session_host_status_follows_the_vm(env: Any, ac: Any) -> None:
    cc = env.compute_client()
    hosts = list(ac.session_hosts.list(RG, "hp1"))
    assert [h.status for h in hosts] == ["Available", "Available"]
    cc.virtual_machines.begin_deallocate(RG, "avd-0").result()
    assert ac.session_hosts.get(RG, "hp1", "avd-0").status == "Shutdown"
    cc.virtual_machines.begin_start(RG, "avd-0").result()
    assert ac.session_hosts.get(RG, "hp1", "avd-0").status == "Available"
    cc.virtual_machines.begin_delete(RG, "avd-1").result()
    assert ac.session_hosts.get(RG, "hp1", "avd-1").status == "Unavailable"


def test_drain_mode_and_deleting_hosts_with_sessions(env: Any, ac: Any) -> None:
    host = ac.session_hosts.update(
        RG, "hp1", "avd-0", session_host={"properties": {"allowNewSession": False}}
    )
    assert host.allow_new_session is False
    assert ac.session_hosts.get(RG, "hp1", "avd-0").allow_new_session is False
    with env.emu.lock:
        open_session(env.emu, host.id, "ann@contoso.com", "CONTOSO\\ann")
    with pytest.raises(HttpResponseError) as err:
        ac.session_hosts.delete(RG, "hp1", "avd-0")
    assert err.value.status_code == 400
    assert "force" in str(err.value)
    ac.session_hosts.delete(RG, "hp1", "avd-0", force=True)
    with pytest.raises(ResourceNotFoundError):
        ac.session_hosts.get(RG, "hp1", "avd-0")
    with env.emu.lock:
        assert avd_state(env.emu).stats.work_lost == 1  # the active session went with it
    # assignedUser is for Personal pools only
    with pytest.raises(HttpResponseError) as err:
        ac.session_hosts.update(
            RG, "hp1", "avd-1", session_host={"properties": {"assignedUser": "x@y"}}
        )
    assert err.value.status_code == 400


def test_needs_assistance_fault(emulator_factory: Any) -> None:
    sc = scenario()
    sc["faults"] = [
        {"type": "flag", "kind": "session_host_needs_assistance", "match": {"host": "avd-1"}}
    ]
    env = emulator_factory(sc)
    ac = env.avd_client()
    statuses = {h.name: h.status for h in ac.session_hosts.list(RG, "hp1")}
    assert statuses == {"hp1/avd-0": "Available", "hp1/avd-1": "NeedsAssistance"}
    failed = [
        r.health_check_name
        for r in ac.session_hosts.get(RG, "hp1", "avd-1").session_host_health_check_results
        if r.health_check_result == "HealthCheckFailed"
    ]
    assert failed


# -- user sessions ------------------------------------------------------------------------------


def _sessions(env: Any, n: int) -> list[str]:
    ids = []
    with env.emu.lock:
        for i in range(n):
            host = f"{POOL}/hp1/sessionHosts/avd-{i % 2}"
            doc = open_session(env.emu, host, f"user{i}@contoso.com", f"CONTOSO\\user{i}")
            ids.append(str(doc["id"]))
    return ids


def test_user_sessions_list_get_filter_and_paging(env: Any, ac: Any) -> None:
    _sessions(env, 5)
    on0 = list(ac.user_sessions.list(RG, "hp1", "avd-0"))
    assert [s.name for s in on0] == ["hp1/avd-0/1", "hp1/avd-0/2", "hp1/avd-0/3"]
    pool = list(ac.user_sessions.list_by_host_pool(RG, "hp1", page_size=2))
    assert len(pool) == 5
    one = ac.user_sessions.get(RG, "hp1", "avd-1", "1")
    assert one.user_principal_name == "user1@contoso.com"
    assert one.session_state == "Active"
    assert one.application_type == "Desktop"
    assert one.active_directory_user_name == "CONTOSO\\user1"
    assert one.create_time is not None
    filtered = list(
        ac.user_sessions.list_by_host_pool(
            RG,
            "hp1",
            filter="userPrincipalName eq 'user3@contoso.com' and sessionState eq 'Active'",
        )
    )
    assert [s.name for s in filtered] == ["hp1/avd-1/2"]
    assert ac.session_hosts.get(RG, "hp1", "avd-0").sessions == 3
    with pytest.raises(HttpResponseError) as err:
        list(
            ac.user_sessions.list_by_host_pool(
                RG, "hp1", filter="startswith(userPrincipalName,'u')"
            )
        )
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        ac.user_sessions.get(RG, "hp1", "avd-1", "99")


def test_message_disconnect_and_logoff_count_work_lost_only_for_active_sessions(
    env: Any, ac: Any
) -> None:
    _sessions(env, 3)
    ac.user_sessions.send_message(
        RG,
        "hp1",
        "avd-0",
        "1",
        send_message={"messageTitle": "Maintenance", "messageBody": "Please save your work"},
    )
    ac.user_sessions.send_message(
        RG,
        "hp1",
        "avd-0",
        "1",
        send_message={"messageTitle": "Reminder", "messageBody": "5 minutes"},
    )
    ac.user_sessions.disconnect(RG, "hp1", "avd-1", "1")
    assert ac.user_sessions.get(RG, "hp1", "avd-1", "1").session_state == "Disconnected"
    # An active session is not logged off without force.
    with pytest.raises(HttpResponseError) as err:
        ac.user_sessions.delete(RG, "hp1", "avd-0", "1")
    assert err.value.status_code == 400
    assert "force" in str(err.value)
    env.clock.pause()  # to see the LogOff state before the session is gone
    ac.user_sessions.delete(RG, "hp1", "avd-1", "1")  # disconnected: fine, nothing lost
    ac.user_sessions.delete(RG, "hp1", "avd-0", "1", force=True)  # active: work lost
    report = env.emu.report()["avd"]
    assert report["messagesSent"] == 2
    assert report["messagesByUser"] == {"user0@contoso.com": 2}
    assert report["disconnects"] == 1
    assert report["forcedLogoffsActive"] == 1
    assert report["workLost"] == 1
    assert report["logoffs"] == 1
    # Logging off takes a moment, then the sessions are gone.
    assert ac.user_sessions.get(RG, "hp1", "avd-0", "1").session_state == "LogOff"
    env.clock.resume()
    wait_for(
        env,
        lambda: not env.emu.store.exists(f"{POOL}/hp1/sessionHosts/avd-0/userSessions/1"),
        what="logoff",
    )
    names = sorted(s.name for s in ac.user_sessions.list_by_host_pool(RG, "hp1"))
    assert names == ["hp1/avd-0/2"]


def test_sessions_are_lost_when_their_host_shuts_down(env: Any, ac: Any) -> None:
    _sessions(env, 4)
    with env.emu.lock:
        env.emu.store.get(f"{POOL}/hp1/sessionHosts/avd-0/userSessions/2")["properties"][
            "sessionState"
        ] = "Disconnected"  # type: ignore[index]
    env.compute_client().virtual_machines.begin_power_off(RG, "avd-0").result()
    assert ac.session_hosts.get(RG, "hp1", "avd-0").sessions == 0
    report = env.emu.report()["avd"]
    assert report["sessionsLostToHostShutdownActive"] == 1
    assert report["sessionsLostToHostShutdownDisconnected"] == 1
    assert report["workLost"] == 1


def test_unknown_resources_and_bad_bodies(env: Any) -> None:
    base = f"{POOL}/hp1"
    status, _, body = env.http("GET", f"{POOL}/nope?api-version={AVD_API}")
    assert status == 404
    assert body["error"]["code"] == "ResourceNotFound"
    status, _, body = env.http("GET", f"{base}/sessionHosts/nope?api-version={AVD_API}")
    assert status == 404
    status, _, body = env.http(
        "PATCH",
        f"{base}/sessionHosts/avd-0?api-version={AVD_API}",
        {"properties": {"allowNewSession": "no"}},
    )
    assert status == 400
    assert "allowNewSession" in body["error"]["message"]
    status, _, body = env.http("GET", f"{base}/sessionHosts?api-version={AVD_API}&pageSize=abc")
    assert status == 400
    status, _, body = env.http("POST", f"{base}/retrieveRegistrationToken?api-version=2019-01-01")
    assert status == 400
    assert body["error"]["code"] == "InvalidApiVersionParameter"


def test_registration_by_run_command_writing_the_agent_key(env: Any, ac: Any) -> None:
    from test_gallery_support import make_vm

    token, _ = _token(ac, env)
    make_vm(env, "avd-4", rg=RG)
    cc = env.compute_client()
    result = cc.virtual_machines.begin_run_command(
        RG,
        "avd-4",
        {
            "commandId": "RunPowerShellScript",
            "script": [
                "reg add HKLM\\SOFTWARE\\Microsoft\\RDInfraAgent /v RegistrationToken "
                f"/t REG_SZ /d {token} /f"
            ],
        },
    ).result()
    assert result.value[0].code.startswith("ComponentStatus/StdOut")
    for _ in range(2000):
        if any(h.name == "hp1/avd-4" for h in ac.session_hosts.list(RG, "hp1")):
            break
    assert ac.session_hosts.get(RG, "hp1", "avd-4").status == "Available"
