"""The devhost's HTTP front: a threaded HTTP/1.1 server on 127.0.0.1 and its request plumbing.

Holds the small request/response values every handler speaks (:class:`Request`,
:class:`Response`, JSON error bodies) and :class:`HttpServer`, which reads requests, hands them to
one dispatch callable and writes the answers. What each path means (``/api``, the Durable HTTP
API, the Event Grid webhook, ``/_clock``, ``/admin``) is decided by the dispatcher that
:mod:`devhost.host` builds. Nothing a request does can stop the server: a handler that raises
becomes a logged 500 with a JSON body.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("devhost.server")

# Largest request body accepted (bytes): Event Grid batches are at most 1 MB, starters smaller.
MAX_BODY = 16 * 1024 * 1024


class HttpError(Exception):
    """Raised by handlers for a clean 4xx/5xx: becomes a JSON error body naming the problem."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def to_response(self) -> Response:
        return error_response(
            self.status, self.code, self.message, headers=self.headers, extra=self.extra
        )


@dataclass(frozen=True)
class Request:
    """One HTTP request as the handlers see it."""

    method: str
    path: str  # percent-decoded path, no query
    raw_path: str  # the path as sent (still percent-encoded)
    query_string: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    origin: str  # scheme://host:port the client addressed
    client: str = ""

    @property
    def url(self) -> str:
        qs = f"?{self.query_string}" if self.query_string else ""
        return f"{self.origin}{self.raw_path}{qs}"

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    def param(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter (names compared case-insensitively)."""
        wanted = name.lower()
        for key, values in self.query.items():
            if key.lower() == wanted and values:
                return values[0]
        return default

    def header(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower()
        values = [v for k, v in self.headers if k.lower() == wanted]
        return ", ".join(values) if values else default

    def header_map(self) -> dict[str, str]:
        """Headers as one dict (repeated headers joined with ', ', as the host does)."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            existing = next((k for k in out if k.lower() == key.lower()), None)
            if existing is None:
                out[key] = value
            else:
                out[existing] = f"{out[existing]}, {value}"
        return out

    @property
    def media_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json(self, what: str = "request body", *, max_depth: int | None = None) -> Any:
        """The body parsed as JSON; :class:`HttpError` 400 naming the problem otherwise.

        Nesting deeper than Python's parser can follow (or than ``max_depth`` arrays/objects)
        is a 400 too, never a ``RecursionError``.
        """
        try:
            text = self.body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HttpError(400, "BadRequest", f"{what} is not UTF-8: {exc}") from None
        too_deep = HttpError(
            400,
            "InvalidJson",
            f"{what} is nested too deeply"
            + (f" (more than {max_depth} levels of arrays/objects)" if max_depth else ""),
        )
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HttpError(
                400,
                "InvalidJson",
                f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
        except RecursionError:
            raise too_deep from None
        if max_depth is not None and nested_deeper_than(value, max_depth):
            raise too_deep
        return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds arrays/objects nested more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@dataclass
class Response:
    """What a handler answers."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | Iterable[tuple[str, str]] = ()
) -> Response:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    body = json.dumps(payload, default=str).encode("utf-8")
    return Response(status, [("Content-Type", "application/json; charset=utf-8"), *items], body)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A JSON error body: ``{"error": {"code", "message"}}`` plus any extra top-level keys."""
    payload: dict[str, Any] = {"error": {"code": code, "message": message}}
    payload.update(extra or {})
    return json_response(status, payload, headers or {})


Dispatcher = Callable[[Request], Response]


def safe_dispatch(dispatch: Dispatcher, request: Request) -> Response:
    """Run the dispatcher; any exception becomes a logged JSON 4xx/5xx, never a crash."""
    try:
        return dispatch(request)
    except HttpError as exc:
        if exc.status >= 500:
            log.error("%s %s -> %s %s", request.method, request.path, exc.status, exc.message)
        else:
            log.info("%s %s -> %s %s", request.method, request.path, exc.status, exc.message)
        return exc.to_response()
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "InternalServerError", f"{type(exc).__name__}: {exc}".strip())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every response back by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "devhost"
    sys_version = ""
    timeout = 300  # an idle keep-alive connection is dropped after this many real seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(65537).split(b";")[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise HttpError(413, "PayloadTooLarge", f"body over {MAX_BODY} bytes")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise HttpError(400, "BadRequest", f"bad Content-Length {length_text!r}") from None
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, "PayloadTooLarge", f"body of {length} bytes is over {MAX_BODY}")
        return self.rfile.read(length)

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except HttpError as exc:
            self.close_connection = True
            self._send(exc.to_response())
            return
        except (ValueError, OSError) as exc:
            self.close_connection = True
            self._send(error_response(400, "BadRequest", f"could not read the body: {exc}"))
            return
        parts = urlsplit(self.path)
        host = self.headers.get("Host") or f"{self.server.host}:{self.server.port}"
        request = Request(
            method=self.command.upper(),
            path=unquote(parts.path),
            raw_path=parts.path,
            query_string=parts.query,
            headers=tuple((k, v) for k, v in self.headers.items()),
            body=body,
            origin=f"http://{host}",
            client=self.client_address[0] if self.client_address else "",
        )
        response = safe_dispatch(self.server.dispatch, request)
        self._send(response, head=request.method == "HEAD")

    def _send(self, response: Response, head: bool = False) -> None:
        try:
            self.send_response(response.status)
            for key, value in response.headers:
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head and response.body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away before the answer was written")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle  # noqa: N815
    do_TRACE = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], dispatch: Dispatcher) -> None:
        self.dispatch = dispatch
        super().__init__(address, _Handler)
        address_host = self.server_address[0]
        self.host: str = (
            address_host.decode() if isinstance(address_host, bytes) else str(address_host)
        )
        self.port: int = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection from %s failed", client_address)


class HttpServer:
    """A ThreadingHTTPServer on ``host:port`` (port 0: any free port) serving ``dispatch``."""

    def __init__(self, dispatch: Dispatcher, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), dispatch)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.host)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"devhost-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound right now (for friendly start-up errors)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
