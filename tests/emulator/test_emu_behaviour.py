"""Throttling, injected faults, Event Grid delivery, scenarios and determinism."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from emulator.scenario import ScenarioError, load_scenario, validate_scenario

SUB = "00000000-0000-0000-0000-000000000001"
VM_PATH = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines"
REPO = Path(__file__).resolve().parents[2]


# -- a local webhook ---------------------------------------------------------------------------


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.options: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_OPTIONS(self) -> None:
                receiver.options.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", "eventgrid.azure.net")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = b""
                if headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = body[0]["data"]["validationCode"]
                    answer = json.dumps({"validationResponse": code}).encode()
                    status = 200
                else:
                    receiver.posts.append((headers, body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def await_posts(env: Any, receiver: Receiver, count: int, rounds: int = 500) -> None:
    """Let host time run until ``count`` events were posted: Event Grid delivers seconds after
    an operation ends (emulator/events.py), so "idle now" is not "delivered"."""
    for _ in range(rounds):
        env.wait_idle()
        if len(receiver.posts) >= count:
            return
        env.clock.wait_until(None, real_timeout=0.02)
    raise AssertionError(f"{len(receiver.posts)} of {count} events delivered")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- throttling --------------------------------------------------------------------------------


def test_reads_are_throttled_with_retry_after_and_recover(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("t1", client=c)
    s, _ = emulator_env.admin(
        "PUT", "throttling", {"arm_reads": {"capacity": 3, "refill_per_second": 0.05}}
    )
    assert s == 200
    strict = emulator_env.compute_client(retry_total=0)
    emulator_env.clock.pause()  # no refill between the calls
    try:
        for _ in range(3):
            strict.virtual_machines.get("rg", "t1")
        with pytest.raises(HttpResponseError) as e:
            strict.virtual_machines.get("rg", "t1")
    finally:
        emulator_env.clock.resume()
    assert e.value.status_code == 429
    assert e.value.error.code == "TooManyRequests"
    headers = {k.lower(): v for k, v in e.value.response.headers.items()}
    assert int(headers["x-ms-emulator-retry-after"]) >= 1  # host-time seconds
    assert headers["retry-after-ms"] == "20"  # what the SDK sleeps in real time
    assert headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    # The SDK's retry policy waits; virtual time refills the bucket meanwhile.
    assert c.virtual_machines.get("rg", "t1").name == "t1"
    assert emulator_env.emu.metrics.throttled >= 1
    s, metrics = emulator_env.admin("GET", "metrics")
    assert metrics["throttled"] >= 1


def test_per_vm_put_bucket_and_seconds_style_retry_after(
    emulator_factory: Any, make_vm_body: Any
) -> None:
    env = emulator_factory(retry_after="seconds")
    s, _ = env.admin(
        "PUT", "throttling", {"vm_put_per_vm": {"capacity": 1, "refill_per_second": 4 / 60}}
    )
    assert s == 200
    path = f"{VM_PATH}/p1?api-version=2026-04-01"
    env.clock.pause()  # hold host time still, or the bucket refills while the VM is created
    try:
        assert env.http("PUT", path, make_vm_body())[0] == 201
        status, headers, body = env.http("PUT", path, make_vm_body())
    finally:
        env.clock.resume()
    assert status == 429
    assert body["error"]["code"] == "OperationNotAllowed"
    assert body["error"]["details"][0]["target"] == "PutVMPerVM"
    assert headers["retry-after"] == "15"
    assert "Microsoft.Compute/PutVMPerVM;0" in headers["x-ms-ratelimit-remaining-resource"]


# -- faults ------------------------------------------------------------------------------------


def test_transient_500_and_503_are_retried_by_the_sdk(emulator_env: Any) -> None:
    c = emulator_env.compute_client()
    emulator_env.create_vm("f1", client=c)
    emulator_env.emu.faults.add(
        {"type": "http", "op": "Microsoft.Compute/virtualMachines/read", "status": 503, "count": 1}
    )
    emulator_env.emu.faults.add(
        {"type": "http", "op": "Microsoft.Compute/virtualMachines/read", "status": 500, "count": 1}
    )
    before = emulator_env.emu.metrics.statuses["Microsoft.Compute/virtualMachines/read"]["200"]
    assert c.virtual_machines.get("rg", "f1").name == "f1"
    statuses = emulator_env.emu.metrics.statuses["Microsoft.Compute/virtualMachines/read"]
    assert (statuses["503"], statuses["500"], statuses["200"] - before) == (1, 1, 1)


def test_lro_failures_surface_as_http_response_errors(emulator_env: Any, make_vm_body: Any) -> None:
    c = emulator_env.compute_client()
    s, _ = emulator_env.admin(
        "POST",
        "faults",
        {
            "type": "lro_failure",
            "op": "Microsoft.Compute/virtualMachines/write",
            "resource": "*/virtualMachines/doomed",
            "code": "AllocationFailed",
            "message": "Allocation failed. We do not have sufficient capacity.",
        },
    )
    assert s == 201
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "doomed", make_vm_body()).result()
    assert "AllocationFailed" in str(e.value)
    assert c.virtual_machines.get("rg", "doomed").properties.provisioning_state == "Failed"
    emulator_env.emu.faults.add(
        {"type": "flag", "kind": "vm_provisioning_failure", "match": {"vm": "late*"}}
    )
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update("rg", "late-1", make_vm_body()).result()
    assert "OSProvisioningTimedOut" in str(e.value)
    assert (
        c.virtual_machines.begin_create_or_update("rg", "fine-1", make_vm_body())
        .result()
        .properties.provisioning_state
        == "Succeeded"
    )


def test_fault_rules_are_deterministic_per_seed() -> None:
    from emulator.faults import FaultInjector

    def run(seed: int) -> list[bool]:
        f = FaultInjector(seed)
        f.add({"type": "flag", "kind": "x", "probability": 0.5})
        return [f.flag("x") for _ in range(50)]

    assert run(1) == run(1)
    assert run(1) != run(2)


# -- events ------------------------------------------------------------------------------------


def test_resource_events_are_delivered_in_event_grid_schema(
    emulator_env: Any, receiver: Receiver
) -> None:
    s, _ = emulator_env.admin(
        "POST",
        "eventSubscriptions",
        {
            "name": "factory",
            "endpoint": receiver.url,
            "includedEventTypes": [
                "Microsoft.Resources.ResourceActionSuccess",
                "Microsoft.Resources.ResourceWriteSuccess",
            ],
            "subjectBeginsWith": f"{VM_PATH}/e1",
            "validationHandshake": True,
        },
    )
    assert s == 201
    c = emulator_env.compute_client()
    emulator_env.create_vm("e1", client=c)
    emulator_env.create_vm("other", client=c)
    c.virtual_machines.begin_deallocate("rg", "e1").result()
    await_posts(emulator_env, receiver, 2)
    types = [body[0]["eventType"] for _, body in receiver.posts]
    assert types == [
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Resources.ResourceActionSuccess",
    ]
    headers, body = receiver.posts[1]
    assert headers["aeg-event-type"] == "Notification"
    event = EventGridEvent.from_dict(body[0])
    assert event.subject == f"{VM_PATH}/e1"
    assert event.topic == f"/subscriptions/{SUB}"
    assert event.data["operationName"] == "Microsoft.Compute/virtualMachines/deallocate/action"
    assert event.data["status"] == "Succeeded"
    assert event.data["resourceUri"] == f"{VM_PATH}/e1"
    assert event.data["subscriptionId"] == SUB
    assert {"tenantId", "correlationId", "httpRequest", "authorization"} <= set(event.data)
    subs = emulator_env.emu.events.subscriptions()
    assert subs[0]["provisioningState"] == "Succeeded"  # validation handshake passed


def test_cloudevents_schema_and_dead_lettering(emulator_env: Any, receiver: Receiver) -> None:
    emulator_env.emu.events.subscribe(
        {
            "name": "ce",
            "endpoint": receiver.url,
            "schema": "cloudevents",
            "includedEventTypes": ["Microsoft.Resources.ResourceDeleteSuccess"],
            "validationHandshake": True,
        }
    )
    c = emulator_env.compute_client()
    emulator_env.create_vm("c1", client=c)
    c.virtual_machines.begin_delete("rg", "c1").result()
    await_posts(emulator_env, receiver, 1)
    assert receiver.options[0]["webhook-request-origin"] == "eventgrid.azure.net"
    headers, body = receiver.posts[0]
    assert headers["content-type"].startswith("application/cloudevents+json")
    event = CloudEvent.from_dict(body)
    assert event.type == "Microsoft.Resources.ResourceDeleteSuccess"
    assert event.subject == f"{VM_PATH}/c1"
    # A failing endpoint is retried on Event Grid's schedule (host time), then dead-lettered.
    receiver.status = 500
    emulator_env.emu.events.subscribe(
        {"name": "ce", "endpoint": receiver.url, "schema": "cloudevents", "maxAttempts": 3}
    )
    before = len(receiver.posts)
    emulator_env.create_vm("c2", client=c)
    for _ in range(200):
        emulator_env.wait_idle()
        if emulator_env.emu.events.dead_letters:
            break
        emulator_env.clock.wait_until(None, real_timeout=0.02)
    assert len(receiver.posts) - before == 3
    assert emulator_env.emu.events.dead_letters[0].attempts == 3


def test_event_subscriptions_refuse_non_loopback_endpoints(emulator_env: Any) -> None:
    s, body = emulator_env.admin(
        "POST", "eventSubscriptions", {"name": "x", "endpoint": "https://example.com/hook"}
    )
    assert s == 400
    assert body["error"]["details"][0]["target"] == "endpoint"


def test_guest_can_signal_a_loopback_endpoint(emulator_env: Any, receiver: Receiver) -> None:
    emulator_env.create_vm("g1")
    out, err = emulator_env.run_script(
        "g1",
        [
            f"Invoke-RestMethod -Method Post -Uri '{receiver.url}' -ContentType 'application/json' "
            "-Headers @{'aeg-event-type'='Notification'} "
            '-Body \'{"vm": "g1", "status": "sysprepped"}\'',
            "Write-Output after",
        ],
    )
    assert err == ""
    assert out.splitlines()[-1] == "after"
    assert receiver.posts[0][1] == {"vm": "g1", "status": "sysprepped"}
    assert receiver.posts[0][0]["aeg-event-type"] == "Notification"


# -- scenarios ---------------------------------------------------------------------------------


def test_scenario_errors_name_each_field_path() -> None:
    with pytest.raises(ScenarioError) as e:
        validate_scenario(
            {
                "seed": "abc",
                "start_time": "2026-01-01T00:00:00",
                "marketplace": [{"publisher": "p", "offer": "o", "sku": "s", "versions": ["1.2"]}],
                "host_pools": [
                    {
                        "name": "hp",
                        "resource_group": "rg",
                        "location": "westeurope",
                        "hosts": [{"name_prefix": "h", "count": "many"}],
                    }
                ],
                "faults": [{"type": "http", "probability": 2}],
                "typo_field": 1,
            }
        )
    paths = [p for p, _ in e.value.errors]
    assert "seed" in paths
    assert "start_time" in paths
    assert "marketplace.0.versions" in paths
    assert "host_pools.0.hosts.0.count" in paths
    assert "faults.0.probability" in paths
    assert "typo_field" in paths
    assert "host_pools.0.hosts.0.count:" in str(e.value)


def test_admin_scenario_load_validates_yaml(emulator_env: Any) -> None:
    status, _, body = emulator_env.http(
        "POST", "/_emulator/scenario", raw=b"seed: 3\nregions: []\n", auth=False
    )
    assert status == 400
    assert body["error"]["details"][0]["target"] == "regions"
    status, _, body = emulator_env.http(
        "POST", "/_emulator/scenario", raw=b"seed: 3\nname: reloaded\n", auth=False
    )
    assert (status, body["name"]) == (200, "reloaded")
    assert emulator_env.emu.scenario.seed == 3


def test_bundled_default_scenario_loads() -> None:
    scenario = load_scenario(REPO / "scenarios" / "default.yaml")
    assert scenario.marketplace
    assert scenario.galleries
    assert scenario.host_pools


# -- determinism -------------------------------------------------------------------------------


def _session(env: Any) -> list[Any]:
    c = env.compute_client()
    vm = env.create_vm("d1", client=c)
    env.run_script("d1", ["choco install git -y", "Disable-BitLocker -MountPoint C:"], client=c)
    c.virtual_machines.begin_deallocate("rg", "d1").result()
    env.wait_idle()
    disk = c.disks.get("rg", vm.properties.storage_profile.os_disk.name)
    return [
        vm.properties.vm_id,
        disk.properties.unique_id,
        env.clock.now().isoformat(),
        [(e.id, e.event_type, e.event_time.isoformat()) for e in env.emu.events.events()],
    ]


def test_same_seed_same_run(emulator_factory: Any, small_scenario: dict[str, Any]) -> None:
    first = _session(emulator_factory())
    second = _session(emulator_factory())
    assert first == second
    small_scenario["seed"] = 8
    third = _session(emulator_factory(small_scenario))
    assert third[0] != first[0]
    assert third[2] != first[2]
