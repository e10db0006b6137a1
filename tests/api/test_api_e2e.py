"""The CLI end to end against the devhost and the emulator, and what only a real run shows.

One local world (emulator + devhost on a virtual clock, the lifecycle test catalogue): the CLI
builds a version as alice and follows it live, shows it and its manifest, is refused alice's own
approval (exit 3), approves as bob, is refused activation as a reader (exit 3, missing role
named), activates as an operator, shows the image and the audit; an unknown version is exit 4.
Over the same HTTP: a repeated ``Idempotency-Key`` replays the first answer from the durable
store and rolls back once, and a callback reaches a loopback HTTPS receiver, signed, after the
watcher saw the rollback end.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from typer.testing import CliRunner

from cli.app import app
from cli.client import ApiClient, Exit
from devhost.demo import World, local_world
from shared import names
from shared.domain.callbacks import SIGNATURE_HEADER, signature_matches
from tests.e2e.lifecycle_kit import CATALOGUE, IMAGE, scenario, set_state, wait_instance

pytestmark = pytest.mark.slow

SECRET = "e2e-callback-secret"
ALICE = "alice@contoso.com:Operator,Approver"
BOB = "bob@contoso.com:Approver"
OPS = "ops@contoso.com:Operator"
READER = "reader@contoso.com:Reader"


class Receiver:
    """Loopback HTTPS receiver (trustme CA) recording each notice."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        self.ca_path = tmp / "callback-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    r = Receiver(tmp_path_factory.mktemp("receiver"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def world(receiver: Receiver) -> Iterator[World]:
    settings = {
        "CALLBACK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
        "CALLBACK_SIGNING_SECRET": SECRET,
        "CALLBACK_CA_BUNDLE": str(receiver.ca_path),
    }
    with local_world(
        scenario({"1.0.0": "active"}, "1.0.0"), CATALOGUE, extra_settings=settings
    ) as w:
        w.clock.resume()
        yield w


def cli(world: World, who: str | None, *args: str) -> tuple[int, str]:
    base = ["--url", world.host.url, "--retries", "1"]
    if who is not None:
        base += ["--principal", who]
    result = CliRunner().invoke(app, [*base, *args])
    return result.exit_code, result.output


def cli_json(world: World, who: str, *args: str) -> Any:
    code, output = cli(world, who, "--json", *args)
    assert code == 0, output
    return json.loads(output[output.index("{") :])


def test_the_cli_drives_the_lifecycle(world: World) -> None:
    code, output = cli(
        world, ALICE, "builds", "start", IMAGE, "--reason", "e2e", "--follow", "--interval", "0.1"
    )
    assert code == 0, output
    assert "Completed" in output
    builds = cli_json(world, READER, "builds", "list", "--image", IMAGE)["builds"]
    [build] = [b for b in builds if b["runtime_status"] == "Completed"]
    shown = cli_json(world, READER, "builds", "show", build["build_id"])
    version = shown["output"]["version"]
    assert version == "1.0.1"
    assert shown["phase_seconds"]
    assert all(s["seconds"] is not None for s in shown["steps"])

    detail = cli_json(world, READER, "versions", "show", IMAGE, version)
    assert detail["state"] == "staged"
    assert detail["manifest"]["build_id"] == build["build_id"]
    # 1.0.0 came from the scenario without a manifest: a diff against it is refused (409).
    code, output = cli(world, READER, "versions", "diff", IMAGE, version)
    assert code == Exit.REFUSED, output
    assert "NoManifest" in output

    set_state(world, version, "start_validation")
    set_state(world, version, "pass_validation")
    code, output = cli(world, ALICE, "approve", IMAGE, version, "--ticket", "CHG-1")
    assert code == Exit.REFUSED, output
    assert "SelfApprovalRefused" in output
    code, output = cli(world, BOB, "approve", IMAGE, version, "--ticket", "CHG-1")
    assert code == 0, output

    code, output = cli(world, READER, "activate", IMAGE, version, "--ticket", "CHG-2")
    assert code == Exit.REFUSED, output
    assert "Operator" in output
    code, output = cli(world, OPS, "activate", IMAGE, version, "--ticket", "CHG-2", "--wait")
    assert code == 0, output
    assert wait_instance(world, names.activation_instance_id(IMAGE))["runtimeStatus"] == (
        "Completed"
    )

    image = cli_json(world, READER, "images", "show", IMAGE)
    assert image["active"] == version
    assert image["backup"] == ["1.0.0"]
    transitions = cli_json(world, READER, "audit", "--image", IMAGE)["transitions"]
    assert [(t["version"], t["state"]) for t in transitions[:2]] == [
        (version, "active"),
        ("1.0.0", "backup"),
    ]
    assert transitions[0]["by"] == "ops@contoso.com"
    assert transitions[0]["change_ticket"] == "CHG-2"

    code, output = cli(world, READER, "versions", "show", IMAGE, "9.9.9")
    assert code == Exit.NOT_FOUND, output
    code, output = cli(world, None, "images", "list")
    assert code == Exit.REFUSED, output
    assert "401" in output
    code, output = cli(world, READER, "versions", "show")
    assert code == Exit.USAGE


def test_a_replayed_rollback_runs_once_and_its_callback_arrives_signed(
    world: World, receiver: Receiver
) -> None:
    client = ApiClient(world.host.url, OPS, retries=0)
    state = cli_json(world, READER, "images", "show", IMAGE)
    if state["active"] != "1.0.1":
        pytest.skip("needs the activation of the lifecycle test")
    body = {
        "change_ticket": "CHG-3",
        "reason": "broken",
        "callback_url": f"https://127.0.0.1:{receiver.port}/notices",
    }
    first = client.post(f"images/{IMAGE}/rollback", body, idempotency_key="rb-1")
    second = client.post(f"images/{IMAGE}/rollback", body, idempotency_key="rb-1")
    assert first.status == second.status == 202
    assert second.body == first.body
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert first.body["callback"]["status"] == "registered"
    final = wait_instance(world, names.activation_instance_id(IMAGE))
    assert final["runtimeStatus"] == "Completed"
    instances, _ = world.host.engine.query(instance_id_prefix=names.notify_instance_id(""))
    assert len(instances) == 1, "the replay registered no second notice"

    deadline = time.monotonic() + 60
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.05)
    [(headers, raw)] = receiver.received
    assert signature_matches(SECRET, raw, headers[SIGNATURE_HEADER.lower()])
    notice = json.loads(raw)
    assert notice["status"] == "Completed"
    assert notice["instance_id"] == names.activation_instance_id(IMAGE)
    assert notice["notice_id"] == first.body["callback"]["notice_id"]
    assert SECRET not in raw.decode()
