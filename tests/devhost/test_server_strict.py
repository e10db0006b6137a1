"""The devhost's HTTP server is as strict as the host's front end, proved over raw sockets.

A truncated body is refused and never dispatched; stalled headers or bodies time out with a
``408`` (an idle connection is closed) while other connections are served; 414, 431 and every
other protocol error are JSON bodies; URLs handed out come from the configured public base URL,
never from the client's ``Host`` header.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps_http"))
import devhost_testkit as kit

from devhost.host import DevHost
from devhost.server import HttpServer, Request, Response, ServerLimits, json_response

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1.0  # the server's header/body read timeouts in these tests (real seconds)
LIMITS = ServerLimits(header_timeout=TIMEOUT, body_timeout=TIMEOUT, keep_alive_timeout=1.5)


class Recorder:
    """A dispatcher that records every request it is given and answers 200 JSON."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
        return json_response(200, {"path": request.path, "size": len(request.body)})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[HttpServer]:
    running = HttpServer(recorder, limits=LIMITS)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Answer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    def error(self) -> dict[str, object]:
        error = self.json()["error"]
        assert isinstance(error, dict)
        return error


def read_answer(sock: socket.socket, started: float) -> Answer:
    """Read one response (or the close) from ``sock``; the socket's timeout bounds the wait."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return Answer(None, {}, data, time.monotonic() - started)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest[:length], time.monotonic() - started)


def exchange(port: int, data: bytes, *, close_write: bool = False, wait: float = 5.0) -> Answer:
    """Send ``data`` on a fresh connection (optionally closing our side) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, started)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get_ok(port: int) -> Answer:
    return exchange(port, b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


# -- truncated bodies -----------------------------------------------------------------------------
def test_a_body_shorter_than_its_content_length_is_refused_never_dispatched(
    server: HttpServer, recorder: Recorder
) -> None:
    head = b"POST /api/images/win11/builds HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    answer = exchange(server.port, head + b'{"reason":', close_write=True)
    assert answer.status == 400
    assert "10 of 100" in str(answer.error()["message"])
    assert answer.headers.get("connection") == "close"
    assert recorder.requests == []


def test_a_chunked_body_cut_off_is_refused_never_dispatched(
    server: HttpServer, recorder: Recorder
) -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for cut in (b"", b"5\r\nhel", b"5\r\nhello\r\n", b"5\r\nhello"):
        answer = exchange(server.port, head + cut, close_write=True)
        assert answer.status == 400, cut
        assert answer.headers["content-type"].startswith("application/json")
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "chunk"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "chunk size"),
    ],
)
def test_malformed_chunked_framing_is_a_400_json(
    server: HttpServer, recorder: Recorder, body: bytes, fragment: str
) -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(server.port, head + body)
    assert answer.status == 400
    assert fragment in str(answer.error()["message"])
    assert recorder.requests == []


def test_a_transfer_coding_that_is_not_chunked_is_a_400_json(
    server: HttpServer, recorder: Recorder
) -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    answer = exchange(server.port, head + b"abc")
    assert answer.status == 400
    assert "Transfer-Encoding" in str(answer.error()["message"])
    assert recorder.requests == []


def test_a_complete_chunked_body_is_served(server: HttpServer, recorder: Recorder) -> None:
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(
        server.port, head + b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: t\r\n\r\n"
    )
    assert answer.status == 200
    assert recorder.requests[0].body == b"helloabc"


# -- read timeouts --------------------------------------------------------------------------------
STALLS = {
    "headers": b"POST /x HTTP/1.1\r\nHost: x\r\n",
    "content-length body": b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    "chunked body": b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
    "empty chunked body": b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(STALLS))
def test_a_stalled_request_is_answered_408_within_the_timeout_while_others_are_served(
    server: HttpServer, recorder: Recorder, case: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
        started = time.monotonic()
        stalled.sendall(STALLS[case])
        # Meanwhile the server serves everyone else at once.
        assert get_ok(server.port).status == 200
        assert time.monotonic() - started < TIMEOUT
        answer = read_answer(stalled, started)
    assert answer.status == 408
    assert answer.error()["code"] == "RequestTimeout"
    assert TIMEOUT * 0.8 <= answer.seconds < TIMEOUT + 2
    assert [r.path for r in recorder.requests] == ["/other"]


def test_a_trickle_of_header_bytes_does_not_extend_the_deadline(server: HttpServer) -> None:
    """The timeout bounds the whole header read, not each recv: a slow loris gets 408 too."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /x HTTP/1.1\r\n")
        answer: Answer | None = None
        for _ in range(int(4 * TIMEOUT / 0.2)):
            try:
                sock.sendall(b"X-Slow: y\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
            if time.monotonic() - started > TIMEOUT + 0.5:
                break
        answer = read_answer(sock, started)
    assert answer.status == 408
    assert answer.seconds < TIMEOUT + 2


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert closed_within(sock, LIMITS.keep_alive_timeout + 2)


def test_a_kept_alive_connection_is_closed_when_idle_after_a_request(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock, time.monotonic()).status == 200
        assert closed_within(sock, LIMITS.keep_alive_timeout + 2)


# -- limits and protocol errors as JSON -----------------------------------------------------------
def test_a_uri_over_the_limit_is_a_414_json(server: HttpServer, recorder: Recorder) -> None:
    path = "/" + "a" * LIMITS.max_url
    answer = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.status == 414
    assert answer.error()["code"] == "UriTooLong"
    assert str(LIMITS.max_url) in str(answer.error()["message"])
    # Past Python's own 64 KiB request-line limit the answer is the same JSON.
    path = "/" + "a" * 70_000
    answer = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.status == 414
    assert answer.error()["code"] == "UriTooLong"
    assert recorder.requests == []
    ok = exchange(server.port, f"GET /{'a' * 1000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert ok.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        "X-Big: " + "b" * (32 * 1024) + "\r\n",  # over the total header size
        "".join(f"X-{n}: v\r\n" for n in range(101)),  # over the header count
        "X-Line: " + "c" * 70_000 + "\r\n",  # over Python's own line limit
    ],
    ids=["size", "count", "line"],
)
def test_headers_over_the_limits_are_a_431_json(
    server: HttpServer, recorder: Recorder, headers: str
) -> None:
    answer = exchange(server.port, f"GET /x HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    assert answer.status == 431
    assert answer.error()["code"] == "RequestHeaderFieldsTooLarge"
    assert answer.headers["content-type"].startswith("application/json")
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        ("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: \u0661\r\n\r\nx".encode(), 400),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx", 400),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
    ],
    ids=[
        "request-line",
        "extra-word",
        "version",
        "method",
        "content-length",
        "content-length-arabic-digit",
        "content-length-sign",
        "too-large",
    ],
)
def test_every_protocol_error_is_a_json_body(
    server: HttpServer, recorder: Recorder, request_bytes: bytes, status: int
) -> None:
    answer = exchange(server.port, request_bytes)
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.error()
    assert error["code"] == {400: "BadRequest", 413: "PayloadTooLarge"}.get(status, error["code"])
    assert error["message"]
    assert recorder.requests == []


# -- URLs from the configured public base ---------------------------------------------------------
def test_the_public_url_defaults_to_the_loopback_address(server: HttpServer) -> None:
    assert server.public_url == f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    "bad", ["factory.example", "ftp://x", "https://x/path", "https://x?q=1", "https://"]
)
def test_a_public_url_that_is_not_a_base_url_is_refused(recorder: Recorder, bad: str) -> None:
    with pytest.raises(ValueError, match="public"):
        HttpServer(recorder, public_url=bad)


@pytest.fixture(scope="module")
def public_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    app = kit.load("devhost_http_app").app
    folder = tmp_path_factory.mktemp("public")
    settings = {"DEVHOST_PUBLIC_URL": "https://factory.example.test/"}
    with DevHost(app, app_dir=folder, settings=settings) as running:
        yield running


EVIL = {"Host": "evil.example:666"}
PUBLIC = "https://factory.example.test"


def test_http_triggers_see_the_public_url_whatever_host_the_client_sent(
    public_host: DevHost,
) -> None:
    reply = kit.call("GET", f"{public_host.url}/api/items/42/red?x=1", headers=EVIL)
    assert reply.status == 200
    assert reply.json()["url"] == f"{PUBLIC}/api/items/42/red?x=1"


def test_check_status_urls_and_locations_use_the_public_url(public_host: DevHost) -> None:
    # An HTTP starter's create_check_status_response (the binding's managementUrls)...
    started = kit.call(
        "POST", f"{public_host.url}/api/orchestrators/approval_orchestrator", headers=EVIL
    )
    assert started.status == 202, started.text
    payload = started.json()
    assert payload["statusQueryGetUri"].startswith(f"{PUBLIC}/runtime/webhooks/durabletask/")
    assert started.header("Location") == payload["statusQueryGetUri"]
    # ... the Durable API's own start answer ...
    direct = kit.call(
        "POST",
        f"{public_host.url}/runtime/webhooks/durabletask/orchestrators/approval_orchestrator",
        headers=EVIL,
    )
    assert direct.status == 202
    assert str(direct.header("Location")).startswith(f"{PUBLIC}/runtime/webhooks/durabletask/")
    assert "evil" not in direct.text
    # ... and a running instance's status poll: Location points at the public base.
    path = payload["statusQueryGetUri"][len(PUBLIC) :]
    polled = kit.call("GET", f"{public_host.url}{path}", headers=EVIL)
    assert polled.status == 202
    assert polled.header("Location") == f"{PUBLIC}{path}"


def test_the_listing_names_public_urls(public_host: DevHost) -> None:
    listing = {f["name"]: f for f in public_host.functions_listing()}
    assert listing["items"]["invokeUrlTemplate"].startswith(f"{PUBLIC}/api/")
    assert listing["on_event"]["webhookUrl"].startswith(f"{PUBLIC}/runtime/webhooks/eventgrid")


# -- the CLI flag ---------------------------------------------------------------------------------
def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVHOST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(Path(__file__).parent / "apps_http")])
    env["DEVHOST_ALLOW_ANONYMOUS"] = "true"  # the sample app takes no principal (docs/api.md)
    command = [sys.executable, "-m", "devhost", "--app", "devhost_http_app:app"]
    command += ["--app-dir", str(tmp_path), "--port", "0", "--store", ":memory:", *args]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_the_cli_public_url_flag_sets_the_base_of_handed_out_urls(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--public-url", PUBLIC)
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("devhost listening on "):
                url = line.split()[3]
                break
        assert url, "the devhost did not start"
        reply = kit.call("GET", f"{url}/api/items/7", headers=EVIL)
        assert reply.json()["url"] == f"{PUBLIC}/api/items/7"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_cli_refuses_a_public_url_that_is_not_a_base(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "--public-url", "https://factory.example.test/api")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "public URL" in out
