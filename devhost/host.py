"""The local Functions host: index + store + engine + HTTP server + timers, composed.

:class:`DevHost` runs one Functions app object (``function_app:app`` by default) the way the
Functions host does: it indexes every function, runs orchestrations and activities on the engine
(durable state in SQLite or memory), serves HTTP triggers under ``/{routePrefix}``, the Durable
HTTP API, the Event Grid webhook, the shared clock's ``/_clock`` routes and a small admin API,
and fires timer triggers in host time (real or virtual).

Settings come from ``local.settings.json`` ``Values`` overlaid by the environment (the
environment wins, as with ``func start``); ``host.json`` gives the route prefix, the task hub
(``%SETTING%`` references resolved) and the function timeout. See docs/devhost.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from devhost.clock import BaseClock, make_clock
from devhost.durable_api import PUBLIC_BASE, RPC_BASE, DurableApi
from devhost.eventgrid import PATH as EVENTGRID_PATH
from devhost.eventgrid import EventGridWebhook, validate_event
from devhost.functions import (
    ACTIVITY,
    EVENT_GRID,
    HTTP,
    ORCHESTRATION,
    TIMER,
    FunctionIndex,
    FunctionInfo,
    index_app,
    load_app,
)
from devhost.server import (
    HttpError,
    HttpServer,
    Request,
    Response,
    error_response,
    json_response,
)
from devhost.triggers import (
    FunctionFailedError,
    FunctionInvoker,
    HttpTriggers,
    Keys,
    LocalAuth,
    TimerScheduler,
    invoke_event_grid,
)

log = logging.getLogger("devhost.host")

DEFAULT_HUB = "TestHubName"  # what the Functions host uses locally when host.json names none
DEFAULT_FUNCTION_TIMEOUT = 230.0  # seconds: Azure's HTTP front end gives up after 230 s


# -- settings and host.json -----------------------------------------------------------------------
def read_local_settings(app_dir: Path) -> dict[str, str]:
    """``Values`` of ``local.settings.json`` (empty when the file is absent)."""
    path = app_dir / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    values = data.get("Values", {}) if isinstance(data, dict) else {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: 'Values' must be an object")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def load_settings(app_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """local.settings.json ``Values`` overlaid by the environment (the environment wins)."""
    merged = read_local_settings(app_dir)
    merged.update(os.environ if environ is None else environ)
    return merged


def apply_local_settings(app_dir: Path) -> list[str]:
    """Put local.settings.json ``Values`` into ``os.environ`` unless already set there
    (what ``func start`` does); returns the names it set."""
    applied = []
    for key, value in read_local_settings(app_dir).items():
        if key not in os.environ:
            os.environ[key] = value
            applied.append(key)
        else:
            log.info("setting %s from the environment overrides local.settings.json", key)
    return applied


def read_host_json(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "host.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def resolve(value: str, settings: Mapping[str, str]) -> str | None:
    """Resolve ``%NAME%`` references; None when a referenced setting is missing."""
    missing = False

    def sub(m: re.Match[str]) -> str:
        nonlocal missing
        found = settings.get(m.group(1))
        if not found:
            missing = True
            return ""
        return found

    out = re.sub(r"%([^%]+)%", sub, value)
    return None if missing else out


def parse_timespan(text: str) -> float | None:
    """``hh:mm:ss`` (optionally ``d.hh:mm:ss``) in seconds; None for ``-1`` (unbounded)."""
    text = text.strip()
    if text in ("-1", ""):
        return None
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d+)?", text)
    if not m:
        raise ValueError(f"functionTimeout {text!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()


# -- the host -------------------------------------------------------------------------------------
class DevHost:
    """One app on one local host: ``start()``, then ``url``; ``stop()`` (or use ``with``)."""

    def __init__(
        self,
        app: Any | None = None,
        *,
        app_spec: str = "function_app:app",
        app_dir: str | Path | None = None,
        store: Any = ":memory:",
        clock: BaseClock | None = None,
        virtual_time: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        activity_workers: int = 8,
        settings: Mapping[str, str] | None = None,
        task_hub: str | None = None,
        name: str = "devhost",
        public_url: str | None = None,
        require_principal: bool = False,
    ) -> None:
        self.app_dir = Path(app_dir) if app_dir is not None else Path.cwd()
        self.settings: dict[str, str] = (
            dict(settings) if settings is not None else load_settings(self.app_dir)
        )
        self.host_json = read_host_json(self.app_dir)
        self.app = app if app is not None else load_app(app_spec)
        self.index: FunctionIndex = index_app(self.app)
        self.task_hub = task_hub or self._hub_from_host_json()
        self.route_prefix = self._route_prefix()
        self.function_timeout = self._function_timeout()
        self.keys = Keys(
            function_key=self.settings.get("DEVHOST_FUNCTION_KEY") or None,
            master_key=self.settings.get("DEVHOST_MASTER_KEY") or None,
        )
        # Bind first: a port in use fails before anything else is opened.
        public_url = public_url or self.settings.get("DEVHOST_PUBLIC_URL") or None
        self.server = HttpServer(self.dispatch, host=host, port=port, public_url=public_url)
        self._owns_clock = clock is None
        self._owns_store = not _is_store_object(store)
        self.clock: BaseClock = clock if clock is not None else make_clock(virtual_time)
        self.store: Any = None
        try:
            self.store = _make_store(store) if self._owns_store else store
            from devhost.engine import Engine

            self.engine = Engine(
                self.index,
                self.store,
                self.clock,
                activity_workers=activity_workers,
                name=name,
                directory=str(self.app_dir),
            )
        except BaseException:
            self.server.stop()
            if self._owns_store and self.store is not None:
                self.store.close()
            if self._owns_clock:
                self.clock.close()
            raise
        self.invoker = FunctionInvoker(directory=str(self.app_dir))
        self.durable = DurableApi(
            self.engine,
            task_hub=self.task_hub,
            origin=lambda: self.public_url,
            rpc_origin=lambda: self.url,
            keys=self.keys,
        )
        client_binding = self.durable.client_binding_json
        participant = self.engine.participant
        self.http = HttpTriggers(
            self.index,
            self.invoker,
            route_prefix=self.route_prefix,
            keys=self.keys,
            client_binding=client_binding,
            participant=participant,
            timeout=self.function_timeout,
            auth=LocalAuth.from_settings(self.settings, require=require_principal),
        )
        self.eventgrid = EventGridWebhook(
            self.index,
            self.invoker,
            keys=self.keys,
            client_binding=client_binding,
            participant=participant,
            timeout=self.function_timeout,
        )
        self.timers = TimerScheduler(
            self.index,
            self.invoker,
            self.clock,
            settings={**os.environ, **self.settings},
            client_binding=client_binding,
            name=f"{name}-timers",
        )
        self.clock_service = _clock_service(self.clock)
        self._started = False
        self._closed = False

    # -- configuration ----------------------------------------------------------------------------
    def _hub_from_host_json(self) -> str:
        durable = self.host_json.get("extensions", {}).get("durableTask", {})
        raw = durable.get("hubName") if isinstance(durable, dict) else None
        if not raw:
            return DEFAULT_HUB
        hub = resolve(str(raw), self.settings)
        if not hub:
            log.warning(
                "host.json hubName %r refers to a setting that is not set; using %r",
                raw,
                DEFAULT_HUB,
            )
            return DEFAULT_HUB
        return hub

    def _route_prefix(self) -> str:
        http = self.host_json.get("extensions", {}).get("http", {})
        prefix = http.get("routePrefix", "api") if isinstance(http, dict) else "api"
        return str(prefix if prefix is not None else "api").strip("/")

    def _function_timeout(self) -> float | None:
        raw = self.host_json.get("functionTimeout")
        if raw is None:
            return DEFAULT_FUNCTION_TIMEOUT
        return parse_timespan(str(raw))

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def public_url(self) -> str:
        """The base of every URL handed out (``DEVHOST_PUBLIC_URL``; default: ``url``)."""
        return self.server.public_url

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> DevHost:
        if self._started:
            return self
        self.invoker.start()
        self.engine.start()
        self.server.start()
        self.timers.start()
        self._started = True
        log.info("devhost serving %d function(s) at %s", len(self.index.names), self.url)
        return self

    def stop(self) -> None:
        if not self._started:
            self._close_owned()
            return
        self._started = False
        try:
            self.timers.stop()
            self.server.stop()
            self.engine.stop()
        finally:
            self.invoker.stop()
            self._close_owned()

    def _close_owned(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.clock_service is not None:
            self.clock_service.close()
        if self._owns_store:
            closer = getattr(self.store, "close", None)
            if callable(closer):
                closer()
        if self._owns_clock:
            self.clock.close()

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- dispatch ---------------------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        raw = request.raw_path
        lowered = raw.lower()
        for base, public in ((PUBLIC_BASE, True), (RPC_BASE, False)):
            if lowered == base or lowered.startswith(base + "/"):
                return self.durable.handle(request, raw[len(base) :], public=public)
        if lowered.rstrip("/") == EVENTGRID_PATH:
            return self.eventgrid.handle(request)
        if lowered == "/_clock" or lowered.startswith("/_clock/"):
            return self._clock_route(request)
        if lowered.startswith("/admin/"):
            return self._admin(request)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if prefix and (lowered == prefix or lowered.startswith(prefix + "/")):
            return self.http.handle(request, raw[len(prefix) :])
        if not prefix and raw not in ("", "/"):
            return self.http.handle(request, raw)
        if raw in ("", "/") and request.method in ("GET", "HEAD"):
            return json_response(200, self.host_status())
        raise HttpError(404, "NotFound", f"nothing is served at {request.path!r}")

    def _clock_route(self, request: Request) -> Response:
        if self.clock_service is None:
            raise HttpError(404, "NotFound", "this devhost has no clock service")
        response = self.clock_service.handle(request)
        if not isinstance(response, Response):
            raise HttpError(500, "ClockServiceError", "the clock service gave no response")
        return response

    # -- admin ------------------------------------------------------------------------------------
    def host_status(self) -> dict[str, Any]:
        errors = {**self.http.errors, **self.timers.errors}
        return {
            "state": "Running" if self._started else "Stopped",
            "version": "devhost",
            "url": self.url,
            "taskHub": self.task_hub,
            "routePrefix": self.route_prefix,
            "clock": {"virtual": bool(self.clock.virtual), "now": self.clock.now().isoformat()},
            "keysEnforced": self.keys.enforced,
            "functions": len(self.index.names),
            "errors": errors,
        }

    def functions_listing(self) -> list[dict[str, Any]]:
        routes = {r.function.name: r for r in self.http.routes}
        timers = self.timers.status()
        out: list[dict[str, Any]] = []
        for info in self.index.all():
            item: dict[str, Any] = {"name": info.name, "trigger": info.trigger_type}
            if info.trigger_type == HTTP and info.name in routes:
                route = routes[info.name]
                item.update(
                    route=route.template.template,
                    methods=list(route.methods),
                    authLevel=route.auth_level,
                    invokeUrlTemplate=self.http.url_for(route, self.public_url),
                )
            elif info.trigger_type == TIMER:
                item.update(timers.get(info.name, {}))
                item.setdefault("schedule", info.trigger.get("schedule"))
            elif info.trigger_type == EVENT_GRID:
                item["webhookUrl"] = (
                    f"{self.public_url}{EVENTGRID_PATH}?functionName={quote(info.name, safe='')}"
                )
            elif info.trigger_type in (ORCHESTRATION, ACTIVITY):
                pass
            if info.durable_client_param:
                item["durableClient"] = True
            error = self.http.errors.get(info.name) or self.timers.errors.get(info.name)
            if error:
                item["error"] = error
            out.append(item)
        return out

    def _admin(self, request: Request) -> Response:
        self.keys.check("admin", request, "the admin API")
        parts = [p for p in request.path.split("/") if p]
        if parts == ["admin", "host", "status"] and request.method == "GET":
            return json_response(200, self.host_status())
        if parts == ["admin", "functions"] and request.method == "GET":
            return json_response(200, self.functions_listing())
        if len(parts) == 3 and parts[:2] == ["admin", "functions"]:
            info = self._find_function(parts[2])
            if request.method == "GET":
                listing = next(f for f in self.functions_listing() if f["name"] == info.name)
                return json_response(200, listing)
            if request.method == "POST":
                return self._invoke_admin(info, request)
        raise HttpError(404, "NotFound", f"no admin API at {request.method} {request.path}")

    def _find_function(self, name: str) -> FunctionInfo:
        for info in self.index.all():
            if info.name.lower() == name.lower():
                return info
        raise HttpError(404, "FunctionNotFound", f"no function named {name!r}")

    def _invoke_admin(self, info: FunctionInfo, request: Request) -> Response:
        """``POST /admin/functions/{name}`` runs a non-HTTP function, as the host's admin API."""
        body = request.json("admin invocation") if request.body.strip() else {}
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", 'the body must be {"input": "..."}')
        if info.trigger_type == TIMER:
            if info.name not in self.timers.timers:
                raise HttpError(
                    409, "NotScheduled", self.timers.errors.get(info.name, "not scheduled")
                )
            self.timers.fire_now(info.name)
            return json_response(202, {"fired": info.name})
        if info.trigger_type == EVENT_GRID:
            raw = body.get("input")
            try:
                event = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError as exc:
                raise HttpError(400, "InvalidJson", f"input is not JSON: {exc.msg}") from None
            except RecursionError:
                raise HttpError(400, "InvalidJson", "input is nested too deeply") from None
            candidates: list[Any] = event if isinstance(event, list) else [event]
            events: list[dict[str, Any]] = []
            for position, item in enumerate(candidates):
                validate_event(item, f"input event [{position}]")
                events.append(item)
            for item in events:
                try:
                    invoke_event_grid(
                        self.invoker,
                        info,
                        item,
                        client_binding=self.durable.client_binding_json,
                        participant=self.engine.participant,
                        timeout=self.function_timeout,
                    )
                except FunctionFailedError as exc:
                    log.error("%s", exc, exc_info=exc.__cause__ or None)
                    return error_response(500, "FunctionFailed", str(exc))
            return json_response(202, {"delivered": len(events)})
        raise HttpError(
            400,
            "BadRequest",
            f"function {info.name!r} is a {info.trigger_type}; the admin API invokes timer and "
            "Event Grid functions (HTTP functions: call their route)",
        )


def _is_store_object(store: Any) -> bool:
    return not isinstance(store, str | Path) and store is not None


def _make_store(spec: Any) -> Any:
    """A store from ``:memory:`` or a SQLite path (see devhost/store.py)."""
    import importlib

    store_module: Any = importlib.import_module("devhost.store")

    path = ":memory:" if spec is None else str(spec)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    factory = getattr(store_module, "open_store", None)
    if callable(factory):
        return factory(path)
    return store_module.Store(path)


def _clock_service(clock: BaseClock) -> Any | None:
    """The ``/_clock`` routes' service from devhost/remote_clock.py (None if it is absent)."""
    try:
        from devhost.remote_clock import ClockService
    except ImportError:  # pragma: no cover - the module ships with the devhost
        return None
    return ClockService(clock)
