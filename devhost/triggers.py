"""Invoking trigger functions as the Python worker does: HTTP, Event Grid and timer triggers.

* :class:`FunctionInvoker` runs user functions the way the worker does: ``async def`` functions on
  one long-lived event loop (the durable client's shared aiohttp session lives there), plain
  functions in a thread pool. Arguments are bound by parameter name: the trigger, the
  ``durableClient`` binding (the JSON string the host hands over; the SDK's decorator builds the
  real ``DurableOrchestrationClient`` from it), ``context`` and ``func.Out`` outputs.
* Trigger payloads go through the SDK's own converters (``HttpRequestConverter``,
  ``HttpResponseConverter``, ``EventGridEventInConverter``, ``TimerRequestConverter``), so the
  function receives exactly the objects the worker would build.
* :class:`HttpTriggers` routes ``/api/<route>`` with the host's route templates (``{id}``,
  ``{id?}``, ``{id:int}``, ``{*rest}``, defaults), the methods filter and function keys.
* :class:`TimerScheduler` fires timer triggers on their schedules in host time; it is a clock
  participant whose ``next_due`` is the next firing, so a virtual clock jumps from firing to
  firing.

Every invocation runs under the devhost's clock participant ``busy()`` so virtual time never
moves while a trigger is running.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import hmac
import inspect
import itertools
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import azure.functions as func
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpRequestConverter, HttpResponseConverter
from azure.functions.timer import TimerRequestConverter

from devhost.clock import BaseClock, Participant
from devhost.context import InvocationContext
from devhost.functions import (
    DURABLE_CLIENT,
    HTTP,
    TIMER,
    FunctionIndex,
    FunctionInfo,
)
from devhost.ncrontab import Schedule, ScheduleError, parse_schedule
from devhost.server import HttpError, Request, Response, error_response

log = logging.getLogger("devhost.triggers")

# Binding directions in the indexed binding dicts (azure.functions BindingDirection values).
_IN, _OUT, _INOUT = 0, 1, 2
_ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")


class FunctionFailedError(Exception):
    """A user function raised (or could not be called); carries the function's name."""

    def __init__(self, function: str, error: BaseException | str) -> None:
        self.function = function
        self.error = error
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"function {function!r} failed: {text}")


# -- invocation -----------------------------------------------------------------------------------
class OutValue(func.Out[Any]):
    """A ``func.Out`` output binding: remembers what the function set (the devhost drops it)."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


ClientBinding = Callable[[FunctionInfo], str]


_shared_loop: asyncio.AbstractEventLoop | None = None
_shared_loop_lock = threading.Lock()


def worker_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop for ``async def`` trigger functions, as in the worker.

    One loop per process, for the process's life: the durable SDK keeps a module-global aiohttp
    session (and an asyncio lock) bound to the loop that first used them, so every host in the
    process (tests start several) must run coroutine functions on the same loop.
    """
    global _shared_loop
    with _shared_loop_lock:
        if _shared_loop is not None and not _shared_loop.is_closed():
            return _shared_loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        threading.Thread(target=run, name="devhost-async", daemon=True).start()
        ready.wait(5)
        _shared_loop = loop
        atexit.register(_close_at_exit, loop)
        return loop


def _close_at_exit(loop: asyncio.AbstractEventLoop) -> None:
    """Close the durable SDK's aiohttp session on our loop before the interpreter goes."""
    if loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close_durable_http_session(), loop).result(2)


class FunctionInvoker:
    """Calls user functions: coroutines on the worker loop, plain functions in a thread pool."""

    def __init__(self, max_workers: int = 16, directory: str = ".") -> None:
        self._max_workers = max_workers
        self._directory = directory
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_workers, thread_name_prefix="devhost-fn"
                )
        worker_loop()

    def stop(self) -> None:
        """Stop taking sync invocations (running ones finish); the worker loop stays."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _require(self) -> tuple[asyncio.AbstractEventLoop, concurrent.futures.ThreadPoolExecutor]:
        if self._pool is None:
            self.start()
        pool = self._pool
        assert pool is not None
        return worker_loop(), pool

    # -- calling ----------------------------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start ``fn(**kwargs)`` the way the worker would; the future holds its result."""
        loop, pool = self._require()
        if inspect.iscoroutinefunction(fn):
            return asyncio.run_coroutine_threadsafe(fn(**kwargs), loop)

        def call_sync() -> Any:
            result = fn(**kwargs)
            if inspect.isawaitable(result):
                return asyncio.run_coroutine_threadsafe(_await(result), loop).result()
            return result

        return pool.submit(call_sync)

    def arguments(
        self,
        info: FunctionInfo,
        trigger_value: Any,
        client_binding: ClientBinding | None,
        trace_parent: str = "",
    ) -> dict[str, Any]:
        """Bind the function's parameters by name, as the worker does."""
        try:
            params = inspect.signature(info.user_function).parameters
        except (TypeError, ValueError) as exc:
            raise FunctionFailedError(info.name, f"cannot read its signature: {exc}") from None
        bindings = {b.get("name"): b for b in info.bindings}
        kwargs: dict[str, Any] = {}
        for name, param in params.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if name == info.trigger_param:
                kwargs[name] = trigger_value
                continue
            binding = bindings.get(name)
            if binding is not None and binding.get("type") == DURABLE_CLIENT:
                if client_binding is None:
                    raise FunctionFailedError(info.name, "no durable client binding available")
                kwargs[name] = client_binding(info)
            elif binding is not None and binding.get("direction") in (_OUT, _INOUT):
                kwargs[name] = OutValue()
            elif binding is not None:
                raise FunctionFailedError(
                    info.name,
                    f"input binding {name!r} of type {binding.get('type')!r} "
                    "is not supported by the devhost",
                )
            elif name == "context":
                kwargs[name] = InvocationContext(info.name, self._directory, trace_parent)
            elif param.default is param.empty:
                raise FunctionFailedError(
                    info.name, f"parameter {name!r} matches no binding of the function"
                )
        return kwargs

    def call(
        self,
        info: FunctionInfo,
        trigger_value: Any,
        *,
        client_binding: ClientBinding | None = None,
        timeout: float | None = None,
        trace_parent: str = "",
    ) -> Any:
        """Invoke and wait (up to ``timeout`` real seconds); raises :class:`FunctionFailedError`."""
        kwargs = self.arguments(info, trigger_value, client_binding, trace_parent)
        future = self.submit(info.user_function, kwargs)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise FunctionFailedError(
                info.name, f"did not finish within {timeout:g} s (still running)"
            ) from None
        except Exception as exc:
            raise FunctionFailedError(info.name, exc) from exc


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _close_durable_http_session() -> None:
    """Close the durable SDK's shared aiohttp session (it belongs to our loop)."""
    import sys

    module = sys.modules.get("azure.durable_functions.models.utils.http_utils")
    closer = getattr(module, "_close_session", None)
    if closer is not None:
        await closer()


class BusyScope(Protocol):
    """What invocations need from a clock participant."""

    def busy(self) -> contextlib.AbstractContextManager[None]: ...


@contextlib.contextmanager
def _busy(participant: BusyScope | None) -> Iterator[None]:
    if participant is None:
        yield
    else:
        with participant.busy():
            yield


# -- keys -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """Function keys. None configured: keys are not enforced (as ``func start`` does locally)."""

    function_key: str | None = None
    master_key: str | None = None

    @property
    def enforced(self) -> bool:
        return bool(self.function_key or self.master_key)

    @staticmethod
    def presented(request: Request) -> str | None:
        return request.header("x-functions-key") or request.param("code")

    def _matches(self, given: str, *candidates: str | None) -> bool:
        return any(
            c is not None and c != "" and hmac.compare_digest(given.encode(), c.encode())
            for c in candidates
        )

    def check(self, level: str, request: Request, what: str) -> None:
        """Raise 401 unless the request carries a key good enough for ``level``."""
        level = (level or "function").lower()
        if level == "anonymous" or not self.enforced:
            return
        given = self.presented(request)
        if not given:
            raise HttpError(
                401,
                "Unauthorized",
                f"{what} requires a key (authLevel {level}): send the x-functions-key header "
                "or the code query parameter",
            )
        if level == "admin":
            ok = self._matches(given, self.master_key or self.function_key)
        else:
            ok = self._matches(given, self.function_key, self.master_key)
        if not ok:
            raise HttpError(401, "Unauthorized", f"the key given for {what} is not valid")


# -- App Service Authentication, locally ------------------------------------------------------
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"


def principal_header(text: str) -> str:
    """``DEVHOST_PRINCIPAL`` as the header App Service would send.

    ``name:Role1,Role2`` (``alice@contoso.com:Reader,Operator``) is encoded; any other value is
    taken as an already encoded header (base64 JSON, never containing ``:``).
    """
    from shared.domain.principal import encode_principal

    text = text.strip()
    if ":" not in text:
        return text
    name, _, roles = text.partition(":")
    return encode_principal(name.strip(), tuple(r.strip() for r in roles.split(",") if r.strip()))


@dataclass(frozen=True)
class LocalAuth:
    """What App Service Authentication does in Azure, for HTTP-triggered functions.

    In Azure the front end authenticates the caller (Entra ID), strips any client-sent
    ``X-MS-CLIENT-PRINCIPAL`` and injects the real one. Locally there is no identity provider:
    a request's own header is passed on (a local caller is trusted), ``principal`` (the setting
    ``DEVHOST_PRINCIPAL``) is injected when the request has none, and a request with neither is
    refused with ``401`` unless ``allow_anonymous`` (``DEVHOST_ALLOW_ANONYMOUS=true``), which
    lets the app answer it itself (as Azure's "allow unauthenticated requests" does).
    """

    principal: str | None = None
    allow_anonymous: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, require: bool = True) -> LocalAuth:
        """From the settings; ``require`` is the default when DEVHOST_ALLOW_ANONYMOUS is unset."""
        raw = (settings.get("DEVHOST_PRINCIPAL") or "").strip()
        allow = (settings.get("DEVHOST_ALLOW_ANONYMOUS") or "").strip().lower()
        return cls(
            principal=principal_header(raw) if raw else None,
            allow_anonymous=allow in ("1", "true", "yes") if allow else not require,
        )

    def apply(self, request: Request) -> Request:
        """The request as the app sees it (a principal added), or 401 without one."""
        if request.header(PRINCIPAL_HEADER):
            return request
        if self.principal:
            headers = (*request.headers, (PRINCIPAL_HEADER, self.principal))
            return Request(
                request.method,
                request.path,
                request.raw_path,
                request.query_string,
                headers,
                request.body,
                request.origin,
                request.client,
            )
        if self.allow_anonymous:
            return request
        raise HttpError(
            401,
            "Unauthenticated",
            f"no {PRINCIPAL_HEADER} header: send one, set DEVHOST_PRINCIPAL "
            "(name:Role1,Role2) or set DEVHOST_ALLOW_ANONYMOUS=true",
        )


# -- route templates ------------------------------------------------------------------------------
class RouteError(ValueError):
    """A route template the host would refuse."""


_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONSTRAINT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<arg>.*)\))?$", re.DOTALL)


def _int_in(text: str, bits: int) -> bool:
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        return False
    value = int(text)
    return bool(-(2 ** (bits - 1)) <= value < 2 ** (bits - 1))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _is_decimal(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return _is_float(text)


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _number_args(name: str, arg: str | None, count: tuple[int, ...]) -> list[int]:
    parts = [p.strip() for p in (arg or "").split(",")] if arg else []
    if len(parts) not in count or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise RouteError(
            f"constraint {name}({arg or ''}) needs {' or '.join(map(str, count))} integer(s)"
        )
    return [int(p) for p in parts]


def _make_constraint(text: str) -> Callable[[str], bool]:
    m = _CONSTRAINT.match(text)
    if not m:
        raise RouteError(f"constraint {text!r} is malformed")
    name, arg = m.group("name").lower(), m.group("arg")
    simple: dict[str, Callable[[str], bool]] = {
        "int": lambda v: _int_in(v, 32),
        "long": lambda v: _int_in(v, 64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "datetime": _is_datetime,
        "decimal": _is_decimal,
        "double": _is_float,
        "float": _is_float,
        "guid": _is_guid,
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "required": lambda v: v != "",
    }
    if name in simple:
        if arg is not None:
            raise RouteError(f"constraint {name} takes no argument")
        return simple[name]
    if name in ("minlength", "maxlength", "min", "max"):
        (n,) = _number_args(name, arg, (1,))
        return {
            "minlength": lambda v: len(v) >= n,
            "maxlength": lambda v: len(v) <= n,
            "min": lambda v: _int_in(v, 64) and int(v) >= n,
            "max": lambda v: _int_in(v, 64) and int(v) <= n,
        }[name]
    if name == "length":
        nums = _number_args(name, arg, (1, 2))
        low, high = (nums[0], nums[0]) if len(nums) == 1 else (nums[0], nums[1])
        return lambda v: low <= len(v) <= high
    if name == "range":
        low, high = _number_args(name, arg, (2,))
        return lambda v: _int_in(v, 64) and low <= int(v) <= high
    if name == "regex":
        if not arg:
            raise RouteError("constraint regex() needs a pattern")
        try:
            pattern = re.compile(arg, re.IGNORECASE)
        except re.error as exc:
            raise RouteError(f"constraint regex({arg}) is not a valid pattern: {exc}") from None
        return lambda v: pattern.search(v) is not None
    raise RouteError(f"unknown route constraint {name!r}")


@dataclass(frozen=True)
class RouteParam:
    name: str
    optional: bool
    catch_all: bool
    default: str | None
    constraints: tuple[Callable[[str], bool], ...]
    constraint_text: tuple[str, ...]


def _split_param(body: str) -> RouteParam:
    """Parse ``name[:constraint...][?][=default]`` (the text between braces)."""
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default: str | None = None
    # The default follows the first '=' outside parentheses.
    depth = 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == "=" and depth == 0:
            body, default = body[:i], body[i + 1 :]
            break
    optional = body.endswith("?")
    body = body.rstrip("?")
    pieces: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch == ":" and depth == 0:
            pieces.append(body[start:i])
            start = i + 1
    pieces.append(body[start:])
    name, constraint_text = pieces[0], tuple(p for p in pieces[1:] if p)
    if not _PARAM_NAME.match(name):
        raise RouteError(f"route parameter name {name!r} is not valid")
    if optional and default is not None:
        raise RouteError(f"route parameter {name!r} cannot be optional and have a default")
    return RouteParam(
        name=name,
        optional=optional or catch_all or default is not None,
        catch_all=catch_all,
        default=default,
        constraints=tuple(_make_constraint(c) for c in constraint_text),
        constraint_text=constraint_text,
    )


def _segment_parts(segment: str) -> list[str | RouteParam]:
    """Split one path segment into literal text and parameters (``{{``/``}}`` escape braces)."""
    parts: list[str | RouteParam] = []
    literal = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if segment.startswith("{{", i) or segment.startswith("}}", i):
            literal += ch
            i += 2
            continue
        if ch == "}":
            raise RouteError(f"segment {segment!r} has an unmatched '}}'")
        if ch == "{":
            depth, j = 0, i + 1
            while j < len(segment):
                if segment[j] == "(":
                    depth += 1
                elif segment[j] == ")":
                    depth = max(depth - 1, 0)
                elif segment[j] == "}" and depth == 0:
                    break
                j += 1
            if j >= len(segment):
                raise RouteError(f"segment {segment!r} has an unmatched '{{'")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(_split_param(segment[i + 1 : j]))
            i = j + 1
            continue
        literal += ch
        i += 1
    if literal:
        parts.append(literal)
    for a, b in itertools.pairwise(parts):
        if isinstance(a, RouteParam) and isinstance(b, RouteParam):
            raise RouteError(f"segment {segment!r} has two parameters with no literal between")
    return parts


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route template, matched against the path after the route prefix."""

    template: str
    regex: re.Pattern[str]
    params: tuple[RouteParam, ...]
    precedence: tuple[float, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        text = template.strip()
        if text.startswith("~/"):
            text = text[2:]
        text = text.strip("/")
        segments = text.split("/") if text else []
        pattern = ""
        params: list[RouteParam] = []
        ranks: list[float] = []
        for index, segment in enumerate(segments):
            if segment == "":
                raise RouteError(f"route {template!r} has an empty segment")
            parts = _segment_parts(segment)
            last = index == len(segments) - 1
            sep = "/" if index else ""
            if len(parts) == 1 and isinstance(parts[0], RouteParam):
                p = parts[0]
                if p.catch_all and not last:
                    raise RouteError(f"catch-all {{*{p.name}}} must be the last segment")
                if p.optional and not last:
                    raise RouteError(f"optional parameter {p.name!r} must be in the last segment")
                body = "(?P<{}>.*)" if p.catch_all else "(?P<{}>[^/]+)"
                group = body.format(p.name)
                pattern += f"(?:{sep}{group})?" if p.optional else f"{sep}{group}"
                params.append(p)
                ranks.append(5.0 if p.catch_all else 3.0 if p.constraints else 4.0)
                continue
            pattern += sep
            for part in parts:
                if isinstance(part, str):
                    pattern += re.escape(part)
                else:
                    if part.catch_all:
                        raise RouteError("a catch-all must be a whole segment")
                    group = f"(?P<{part.name}>[^/]+?)"
                    pattern += f"{group}?" if part.optional else group
                    params.append(part)
            ranks.append(1.0 if all(isinstance(p, str) for p in parts) else 2.0)
        names = [p.name.lower() for p in params]
        if len(set(names)) != len(names):
            raise RouteError(f"route {template!r} repeats a parameter name")
        regex = re.compile(f"^{pattern}/?$", re.IGNORECASE)
        return cls(template, regex, tuple(params), tuple(ranks))

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (percent-encoded, no prefix), or None when it does not fit."""
        from urllib.parse import unquote

        m = self.regex.match(path.strip("/"))
        if not m:
            return None
        values: dict[str, str] = {}
        for p in self.params:
            raw = m.group(p.name)
            if raw is None or raw == "":
                if p.default is not None:
                    values[p.name] = p.default
                elif not p.optional:
                    return None
                continue
            value = unquote(raw)
            if not all(check(value) for check in p.constraints):
                return None
            values[p.name] = value
        return values


@dataclass(frozen=True)
class HttpRoute:
    function: FunctionInfo
    template: RouteTemplate
    methods: tuple[str, ...]
    auth_level: str


class HttpTriggers:
    """The app's HTTP-triggered functions behind ``/{routePrefix}/...``."""

    def __init__(
        self,
        index: FunctionIndex,
        invoker: FunctionInvoker,
        *,
        route_prefix: str = "api",
        keys: Keys | None = None,
        client_binding: ClientBinding | None = None,
        participant: BusyScope | None = None,
        timeout: float | None = 230.0,
        auth: LocalAuth | None = None,
    ) -> None:
        self.invoker = invoker
        self.route_prefix = route_prefix.strip("/")
        self.keys = keys or Keys()
        self.auth = auth or LocalAuth(allow_anonymous=True)
        self.client_binding = client_binding
        self.participant = participant
        self.timeout = timeout
        self.errors: dict[str, str] = {}
        routes: list[HttpRoute] = []
        for info in index.of_type(HTTP):
            template_text = str(info.trigger.get("route") or info.name)
            try:
                template = RouteTemplate.parse(template_text)
            except RouteError as exc:
                self.errors[info.name] = f"route {template_text!r}: {exc}"
                log.error("function %s not served: %s", info.name, self.errors[info.name])
                continue
            methods = info.trigger.get("methods") or list(_ALL_METHODS)
            routes.append(
                HttpRoute(
                    function=info,
                    template=template,
                    methods=tuple(str(m).upper() for m in methods),
                    auth_level=str(info.trigger.get("authLevel") or "function").lower(),
                )
            )
        routes.sort(key=lambda r: (r.template.precedence, -len(r.template.precedence)))
        self.routes = routes

    def url_for(self, route: HttpRoute, base: str) -> str:
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        return f"{base}{prefix}/{route.template.template.strip('/')}"

    def handle(self, request: Request, subpath: str) -> Response:
        """Serve a request whose path (after the route prefix) is ``subpath`` (percent-encoded)."""
        near: list[HttpRoute] = []
        for route in self.routes:
            values = route.template.match(subpath)
            if values is None:
                continue
            if request.method not in route.methods:
                near.append(route)
                continue
            self.keys.check(route.auth_level, request, f"function {route.function.name!r}")
            return self.invoke(route, self.auth.apply(request), values)
        if near:
            allowed = sorted({m for r in near for m in r.methods})
            raise HttpError(
                404,
                "NotFound",
                f"{request.method} is not among the methods of function "
                f"{near[0].function.name!r} at this route (allowed: {', '.join(allowed)})",
            )
        raise HttpError(404, "NotFound", f"no HTTP function has a route matching {request.path!r}")

    def invoke(self, route: HttpRoute, request: Request, route_values: dict[str, str]) -> Response:
        info = route.function
        headers = request.header_map()
        params = {k: ",".join(v) for k, v in request.query.items()}
        datum = meta.Datum(
            type="http",
            value={
                "method": meta.Datum(request.method, "string"),
                "url": meta.Datum(request.url, "string"),
                "headers": {k: meta.Datum(v, "string") for k, v in headers.items()},
                "query": {k: meta.Datum(v, "string") for k, v in params.items()},
                "params": {k: meta.Datum(v, "string") for k, v in route_values.items()},
                "body": meta.Datum(request.body, "bytes"),
            },
        )
        http_request = HttpRequestConverter.decode(datum, trigger_metadata={})
        with _busy(self.participant):
            try:
                result = self.invoker.call(
                    info,
                    http_request,
                    client_binding=self.client_binding,
                    timeout=self.timeout,
                    trace_parent=request.header("traceparent") or "",
                )
            except FunctionFailedError as exc:
                log.error("%s", exc, exc_info=exc.__cause__ or None)
                return error_response(500, "FunctionFailed", str(exc))
        return http_response_from(info.name, result)


def http_response_from(function: str, result: Any) -> Response:
    """Encode what an HTTP function returned through the SDK's HttpResponseConverter."""
    if result is None:
        log.warning("function %s returned None for its HTTP response: answering 204", function)
        return Response(204, [], b"")
    try:
        datum = HttpResponseConverter.encode(result, expected_type=None)
    except NotImplementedError:
        return error_response(
            500,
            "FunctionFailed",
            f"function {function!r} returned {type(result).__name__}; an HTTP function must "
            "return func.HttpResponse or str",
        )
    if datum.type == "string":
        return Response(
            200, [("Content-Type", "text/plain; charset=utf-8")], str(datum.value).encode()
        )
    value = datum.value
    status = int(value["status_code"].value)
    headers = [(str(k), str(v.value)) for k, v in value["headers"].items()]
    for cookie in value.get("cookies") or []:
        for morsel in cookie.values():
            headers.append(("Set-Cookie", morsel.OutputString()))
    body_datum = value.get("body")
    body = body_datum.value if body_datum is not None else b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return Response(status, headers, bytes(body or b""))


# -- event grid -----------------------------------------------------------------------------------
def invoke_event_grid(
    invoker: FunctionInvoker,
    info: FunctionInfo,
    event: Mapping[str, Any],
    *,
    client_binding: ClientBinding | None = None,
    participant: BusyScope | None = None,
    timeout: float | None = 230.0,
) -> None:
    """Invoke an Event Grid trigger with one event (Event Grid schema or CloudEvents)."""
    datum = meta.Datum(json.dumps(event), "json")
    value = EventGridEventInConverter.decode(datum, trigger_metadata={})
    with _busy(participant):
        invoker.call(info, value, client_binding=client_binding, timeout=timeout)


# -- timers ---------------------------------------------------------------------------------------
PAST_DUE_AFTER = timedelta(seconds=1)


@dataclass
class TimerState:
    """One timer trigger's schedule and bookkeeping."""

    function: FunctionInfo
    schedule: Schedule
    next_due: datetime | None
    last: datetime | None = None
    running: bool = False
    firings: int = 0
    failures: int = 0
    pending_manual: int = 0
    history: list[datetime] = field(default_factory=list)


def resolve_setting(value: str, settings: Mapping[str, str]) -> str:
    """Resolve ``%NAME%`` app-setting references as the host does for binding properties."""
    text = value.strip()
    if len(text) > 2 and text.startswith("%") and text.endswith("%"):
        name = text[1:-1]
        if name not in settings or settings[name] == "":
            raise ScheduleError(f"app setting {name!r} (referenced as {text}) is not set")
        return settings[name]
    return value


class TimerScheduler:
    """Fires timer triggers on their schedules in host time, one firing at a time per function."""

    def __init__(
        self,
        index: FunctionIndex,
        invoker: FunctionInvoker,
        clock: BaseClock,
        *,
        settings: Mapping[str, str] | None = None,
        client_binding: ClientBinding | None = None,
        name: str = "devhost-timers",
    ) -> None:
        self.invoker = invoker
        self.clock = clock
        self.client_binding = client_binding
        self.errors: dict[str, str] = {}
        self.timers: dict[str, TimerState] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._settings = dict(settings or {})
        self._name = name
        self._participant: Participant | None = None
        self._functions = index.of_type(TIMER)

    # -- clock participant ------------------------------------------------------------------------
    def _next_due(self) -> datetime | None:
        with self._lock:
            dues = [
                t.next_due for t in self.timers.values() if t.next_due is not None and not t.running
            ]
        return min(dues) if dues else None

    def start(self) -> None:
        if self._thread is not None:
            return
        now = self.clock.now()
        for info in self._functions:
            try:
                expression = resolve_setting(
                    str(info.trigger.get("schedule") or ""), self._settings
                )
                schedule = parse_schedule(expression, anchor=now)
            except ScheduleError as exc:
                self.errors[info.name] = f"schedule: {exc}"
                log.error("timer %s not scheduled: %s", info.name, exc)
                continue
            first = now if info.trigger.get("runOnStartup") else schedule.next_after(now)
            self.timers[info.name] = TimerState(info, schedule, first)
        self._stopping = False
        self._participant = self.clock.participant(self._name, self._next_due)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        self.clock.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._participant is not None:
            self._participant.close()
            self._participant = None

    def fire_now(self, name: str) -> None:
        """Fire a timer once, now, out of schedule (``POST /admin/functions/{name}``)."""
        with self._lock:
            state = self.timers.get(name)
            if state is None:
                raise KeyError(name)
            state.pending_manual += 1
        self._changed.set()
        self.clock.notify()

    def _run(self) -> None:
        while not self._stopping:
            self._changed.clear()
            now = self.clock.now()
            due: list[tuple[TimerState, datetime]] = []
            with self._lock:
                for state in self.timers.values():
                    if state.running:
                        continue
                    if state.pending_manual:
                        state.pending_manual -= 1
                        due.append((state, now))
                    elif state.next_due is not None and state.next_due <= now:
                        due.append((state, state.next_due))
                for state, _ in due:
                    # Busy before next_due stops being reported: the clock must not slip past.
                    assert self._participant is not None
                    self._participant.enter()
                    state.running = True
            for state, scheduled in due:
                self._fire(state, scheduled, now)
            if due:
                continue
            wake_at = self._next_due()
            self.clock.wait_until(wake_at, wake=self._changed, real_timeout=5.0)

    def _fire(self, state: TimerState, scheduled: datetime, now: datetime) -> None:
        past_due = now - scheduled > PAST_DUE_AFTER
        following = state.schedule.next_after(max(scheduled, now))
        payload = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {
                "Last": (state.last or datetime.min.replace(tzinfo=UTC)).isoformat(),
                "Next": following.isoformat(),
                "LastUpdated": now.isoformat(),
            },
            "IsPastDue": past_due,
        }
        timer = TimerRequestConverter.decode(
            meta.Datum(json.dumps(payload), "json"), trigger_metadata={}
        )
        try:
            kwargs = self.invoker.arguments(state.function, timer, self.client_binding)
            future = self.invoker.submit(state.function.user_function, kwargs)
        except Exception as exc:
            log.error("timer %s could not start: %s", state.function.name, exc)
            self._done(state, scheduled, exc)
            return
        future.add_done_callback(lambda f: self._done(state, scheduled, f.exception()))

    def _done(self, state: TimerState, scheduled: datetime, error: BaseException | None) -> None:
        participant = self._participant
        try:
            now = self.clock.now()
            with self._lock:
                state.running = False
                state.firings += 1
                state.history.append(scheduled)
                del state.history[:-100]
                state.last = scheduled
                state.next_due = state.schedule.next_after(max(scheduled, now))
                if error is not None:
                    state.failures += 1
            if error is not None:
                log.error(
                    "timer %s (due %s) failed: %s: %s",
                    state.function.name,
                    scheduled.isoformat(),
                    type(error).__name__,
                    error,
                    exc_info=error,
                )
            else:
                log.info("timer %s fired (due %s)", state.function.name, scheduled.isoformat())
        finally:
            self._changed.set()
            if participant is not None:
                participant.leave()

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                name: {
                    "schedule": t.schedule.expression,
                    "next": t.next_due.isoformat() if t.next_due else None,
                    "last": t.last.isoformat() if t.last else None,
                    "running": t.running,
                    "firings": t.firings,
                    "failures": t.failures,
                }
                for name, t in self.timers.items()
            }
