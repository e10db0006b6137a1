"""The devhost's HTTP front: a threaded HTTP/1.1 server on 127.0.0.1 and its request plumbing.

Holds the small request/response values every handler speaks (:class:`Request`,
:class:`Response`, JSON error bodies) and :class:`HttpServer`, which reads requests, hands them to
one dispatch callable and writes the answers. What each path means (``/api``, the Durable HTTP
API, the Event Grid webhook, ``/_clock``, ``/admin``) is decided by the dispatcher that
:mod:`devhost.host` builds. Nothing a request does can stop the server: a handler that raises
becomes a logged 500 with a JSON body.

The server is as strict as the host's front end (Kestrel behind the App Service front end), with
limits in :class:`ServerLimits`:

* a body shorter than its ``Content-Length``, or a chunked body cut off before its last chunk
  (the client closed early), is ``400`` and never dispatched; malformed chunk framing and a
  ``Transfer-Encoding`` whose final coding is not ``chunked`` are ``400``;
* read deadlines (not per-``recv`` timeouts, so a trickle of bytes does not extend them): the
  request line and headers must arrive within ``header_timeout``, the body within
  ``body_timeout`` (else ``408`` and the connection closes); an idle keep-alive connection is
  closed after ``keep_alive_timeout``. Each connection has its own thread, so a stalled client
  holds only its own;
* a request target over ``max_url`` bytes is ``414``, headers over ``max_header_bytes`` in total
  or over ``max_headers`` fields ``431``, a body over ``max_body`` ``413``; HTTP/0.9 and HTTP/2+
  request lines are refused (``400`` / ``505``), unknown methods ``501``;
* every error, the protocol ones included, is a JSON body ``{"error": {"code", "message"}}``;
* the URLs handed out (``Request.origin``/``url``, hence check-status URLs and ``Location``
  headers) are built from the configured public base URL (default ``http://127.0.0.1:<port>``),
  never from the client's ``Host`` header.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("devhost.server")

# Largest request body accepted (bytes): Event Grid batches are at most 1 MB, starters smaller.
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """What the server accepts and how long it waits (real seconds); defaults follow the host."""

    max_body: int = MAX_BODY
    max_url: int = 4096  # request target bytes (the Functions host's URL limit: 4 KB)
    max_header_bytes: int = 32 * 1024  # names + values of all headers (Kestrel: 32 KB)
    max_headers: int = 100  # header fields (Kestrel: 100)
    header_timeout: float = 30.0  # request line + headers (Kestrel RequestHeadersTimeout: 30 s)
    body_timeout: float = 30.0  # the whole body
    keep_alive_timeout: float = 130.0  # idle between requests (Kestrel KeepAliveTimeout: 130 s)
    send_timeout: float = 300.0  # writing one response


def public_base_url(text: str) -> str:
    """``scheme://host[:port]`` without a trailing slash; ValueError for anything else."""
    parts = urlsplit(text.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ValueError(
            f"the public URL {text!r} must be http(s)://host[:port] with no path, query or user"
        )
    return f"{parts.scheme}://{parts.netloc}"


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
    origin: str  # the configured public base URL (never taken from the Host header)
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


_ERROR_CODES = {
    400: "BadRequest",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    414: "UriTooLong",
    431: "RequestHeaderFieldsTooLarge",
    501: "NotImplemented",
    505: "HttpVersionNotSupported",
}
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by what is left until one deadline.

    A per-``recv`` timeout lets a client that trickles a byte at a time hold a worker forever;
    every read here waits at most until ``deadline`` (``time.monotonic()``), then raises
    ``TimeoutError``.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _BodyTruncatedError(Exception):
    """The client closed the connection before the body was complete."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every response back by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "devhost"
    sys_version = ""
    timeout = None  # reads are bounded by _DeadlineReader, writes by limits.send_timeout
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection)
        self._buffered = io.BufferedReader(self._reader, 65536)
        self.rfile = self._buffered

    # -- reading a request ------------------------------------------------------------------------
    def _deadline(self, seconds: float) -> None:
        self._reader.deadline = time.monotonic() + seconds

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.close_connection = True
        self.command = ""
        self.request_version = "HTTP/1.1"
        try:
            self._deadline(limits.keep_alive_timeout)
            if not self._buffered.peek(1):
                return  # the client closed an idle connection
        except OSError:  # TimeoutError included: an idle connection is closed silently
            return
        try:
            self._deadline(limits.header_timeout)
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.send_error(414, None, f"the request line is over {limits.max_url} bytes")
                return
            if not self.parse_request():
                return  # parse_request answered (through send_error)
        except TimeoutError:
            self.send_error(
                408,
                None,
                f"the request line and headers did not arrive within {limits.header_timeout:g} s",
            )
            return
        except OSError:
            return
        if not self._within_limits():
            return
        if not hasattr(self, f"do_{self.command}"):
            self.send_error(501, None, f"the method {self.command!r} is not supported")
            return
        self._handle()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, None, "HTTP/0.9 request lines are not supported")
            return False
        return True

    def _within_limits(self) -> bool:
        limits = self.server.limits
        if len(self.path.encode("latin-1", "replace")) > limits.max_url:
            self.send_error(
                414, None, f"the request target is over the limit of {limits.max_url} bytes"
            )
            return False
        items = self.headers.items()
        if len(items) > limits.max_headers:
            self.send_error(
                431, None, f"{len(items)} header fields is over the limit of {limits.max_headers}"
            )
            return False
        size = sum(len(k) + len(v) for k, v in items)
        if size > limits.max_header_bytes:
            self.send_error(
                431,
                None,
                f"the headers are {size} bytes; the limit is {limits.max_header_bytes} bytes",
            )
            return False
        return True

    def _read_exact(self, length: int) -> bytes:
        data = self.rfile.read(length)
        if len(data) < length:
            raise _BodyTruncatedError(
                f"the body ended after {len(data)} of {length} bytes "
                "(the client closed the connection early)"
            )
        return data

    def _read_chunked(self) -> bytes:
        max_body = self.server.limits.max_body
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            if not line:
                raise _BodyTruncatedError(
                    f"the chunked body ended after {total} bytes, before its last chunk "
                    "(the client closed the connection early)"
                )
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
                raise HttpError(400, "BadRequest", f"bad chunk size line {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > max_body:
                raise HttpError(
                    413,
                    "PayloadTooLarge",
                    f"the chunked body is over the limit of {max_body} bytes",
                    extra={"limit_bytes": max_body},
                )
            chunks.append(self._read_exact(size))
            ending = self.rfile.read(2)
            if len(ending) < 2:
                raise _BodyTruncatedError("the chunked body ended inside a chunk ending")
            if ending != b"\r\n":
                raise HttpError(400, "BadRequest", "chunk data is not followed by CRLF")
        trailers = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _BodyTruncatedError("the chunked body ended inside its trailers")
            if line in (b"\r\n", b"\n"):
                return b"".join(chunks)
            trailers += len(line)
            if trailers > self.server.limits.max_header_bytes:
                raise HttpError(431, "RequestHeaderFieldsTooLarge", "the trailers are too large")

    def _read_body(self) -> bytes:
        max_body = self.server.limits.max_body
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise HttpError(
                    400,
                    "BadRequest",
                    f"Transfer-Encoding {coding!r}: the final transfer coding must be chunked",
                )
            if len(codings) > 1:
                raise HttpError(
                    501, "NotImplemented", f"Transfer-Encoding {coding!r} is not supported"
                )
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        if not length_text.strip().isdigit():
            raise HttpError(400, "BadRequest", f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > max_body:
            raise HttpError(
                413,
                "PayloadTooLarge",
                f"body of {length} bytes is over the limit of {max_body} bytes",
                extra={"limit_bytes": max_body},
            )
        return self._read_exact(length)

    def _handle(self) -> None:
        body_timeout = self.server.limits.body_timeout
        try:
            self._deadline(body_timeout)
            body = self._read_body()
        except HttpError as exc:
            self._refuse(exc.to_response())
            return
        except _BodyTruncatedError as exc:
            log.info("%s %s refused: %s", self.command, self.path, exc)
            self._refuse(error_response(400, "BadRequest", str(exc)))
            return
        except TimeoutError:
            message = f"the request body did not arrive within {body_timeout:g} s"
            log.info("%s %s refused: %s", self.command, self.path, message)
            self._refuse(error_response(408, "RequestTimeout", message))
            return
        except OSError as exc:
            log.debug("connection lost while reading the body: %s", exc)
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = Request(
            method=self.command.upper(),
            path=unquote(parts.path),
            raw_path=parts.path,
            query_string=parts.query,
            headers=tuple((k, v) for k, v in self.headers.items()),
            body=body,
            origin=self.server.public_url,
            client=self.client_address[0] if self.client_address else "",
        )
        response = safe_dispatch(self.server.dispatch, request)
        self._send(response, head=request.method == "HEAD")

    # -- answering --------------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every protocol error the base class reports, as a JSON body (and the connection ends)."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        text = "; ".join(part for part in (message, explain) if part) or phrase
        self.log_error("code %d, message %s", code, text)
        self._refuse(error_response(code, _ERROR_CODES.get(code, phrase.replace(" ", "")), text))

    def _refuse(self, response: Response) -> None:
        """Answer an error, then end the connection without resetting it under the answer."""
        self.close_connection = True
        if self.request_version in ("", "HTTP/0.9"):
            self.request_version = "HTTP/1.1"  # an answer with a status line and headers
        self._send(response, head=self.command == "HEAD")
        self._linger()

    def _linger(self) -> None:
        """Half-close and drop what the client still sends, briefly.

        Closing with unread input makes the kernel send a reset, and a reset can destroy the
        answer before the client reads it.
        """
        try:
            self.connection.shutdown(socket.SHUT_WR)
            until = time.monotonic() + 1.0
            while (remaining := until - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def _send(self, response: Response, head: bool = False) -> None:
        try:
            self.connection.settimeout(self.server.limits.send_timeout)
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
        except OSError:
            self.close_connection = True
            log.debug("client went away before the answer was written")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle  # noqa: N815
    do_TRACE = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        dispatch: Dispatcher,
        limits: ServerLimits,
        public_url: str | None,
    ) -> None:
        self.dispatch = dispatch
        self.limits = limits
        checked = public_base_url(public_url) if public_url else None
        super().__init__(address, _Handler)
        address_host = self.server_address[0]
        self.host: str = (
            address_host.decode() if isinstance(address_host, bytes) else str(address_host)
        )
        self.port: int = int(self.server_address[1])
        self.public_url: str = checked or f"http://{self.host}:{self.port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("connection from %s failed", client_address)


class HttpServer:
    """A ThreadingHTTPServer on ``host:port`` (port 0: any free port) serving ``dispatch``.

    ``public_url`` (``http(s)://host[:port]``) is the base every URL handed out is built from;
    by default the address it listens on. ``limits``: see :class:`ServerLimits`.
    """

    def __init__(
        self,
        dispatch: Dispatcher,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        public_url: str | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self._server = _Server((host, port), dispatch, limits or ServerLimits(), public_url)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.host)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Where this server listens (what a local client connects to)."""
        return f"http://{self.host}:{self.port}"

    @property
    def public_url(self) -> str:
        """The configured public base URL the server's URLs are built from."""
        return self._server.public_url

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
