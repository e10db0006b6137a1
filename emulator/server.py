"""The HTTPS front door: a threaded HTTP/1.1 server with a local CA made by ``trustme``.

The Azure SDKs refuse bearer tokens over plain HTTP, so the emulator serves TLS with a
certificate for 127.0.0.1/localhost signed by a throw-away CA whose bundle is written to disk
(clients pass it as ``connection_verify``). Each request is handed to
:meth:`emulator.core.Emulator.handle`, which never raises.
"""

from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from emulator.arm import Headers
from emulator.core import Emulator

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024 * 1024
# Set by ``python -m emulator --state-dir``: keep the CA (and its key, beside it) across
# restarts, so clients that trust ca.pem keep trusting a restarted emulator.
KEEP_CA = False
CA_KEY = "ca-key.pem"


class TlsMaterial:
    """A CA and a server certificate for 127.0.0.1, ::1 and localhost."""

    def __init__(self, ca_dir: Path) -> None:
        ca_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = ca_dir / "ca.pem"
        key_path = ca_dir / CA_KEY
        if KEEP_CA and self.ca_path.is_file() and key_path.is_file():
            self.ca = trustme.CA.from_pem(self.ca_path.read_bytes(), key_path.read_bytes())
        else:
            self.ca = trustme.CA(organization_name="avd-image-factory emulator")
            self.ca.cert_pem.write_to_path(str(self.ca_path))
            if KEEP_CA:
                key_path.touch(mode=0o600)
                self.ca.private_key_pem.write_to_path(str(key_path))
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost", "::1")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every response back by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def _serve(self) -> None:
        length_text = self.headers.get("Content-Length")
        body = b""
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                self._reply(400, {}, b'{"error":{"code":"BadRequest","message":"Bad length"}}')
                return
            if length > MAX_BODY:
                self._reply(
                    413,
                    {"Connection": "close"},
                    b'{"error":{"code":"RequestEntityTooLarge","message":"Body too large"}}',
                )
                return
            body = self.rfile.read(length)
        headers = Headers(list(self.headers.items()))
        status, out_headers, payload = self.server.emu.handle(
            self.command, self.path, headers, body
        )
        self._reply(status, out_headers, payload)

    def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


for _verb in ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    setattr(_Handler, f"do_{_verb}", _Handler._serve)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], emu: Emulator, ctx: ssl.SSLContext) -> None:
        self.emu = emu
        self._ctx = ctx
        super().__init__(addr, _Handler)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, addr = self.socket.accept()
        return self._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        log.debug("connection error from %s", client_address, exc_info=True)


class HttpsServer:
    """Serve an Emulator over HTTPS on 127.0.0.1:port (0: a free port)."""

    def __init__(self, emu: Emulator, ca_dir: Path, port: int = 0, host: str = "127.0.0.1"):
        self.emu = emu
        self.tls = TlsMaterial(ca_dir)
        self._server = _Server((host, port), emu, self.tls.server_context())
        self.port = int(self._server.server_address[1])
        self.url = f"https://{host}:{self.port}"
        emu.base_url = self.url
        self._thread: threading.Thread | None = None

    @property
    def ca_path(self) -> Path:
        return self.tls.ca_path

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="emulator-https",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits forever unless serve_forever runs
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
