"""The Durable Functions HTTP API under ``/runtime/webhooks/durabletask`` (and its RPC twin).

Serves the documented instance-management API on top of the engine, with the real host's
status codes, and builds the ``durableClient`` binding JSON (``taskHubName``, ``creationUrls``,
``managementUrls``, ``baseUrl``, ``rpcBaseUrl``, ``requiredQueryStringParameters``) that the SDK's
``DurableOrchestrationClient`` is constructed from, so HTTP starters run unchanged.

Two bases serve the same handlers:

* ``/runtime/webhooks/durabletask/...``: the public webhook API (the URLs in check-status
  payloads). Function keys apply here when the host is configured with keys.
* ``/durabletask/...``: the ``rpcBaseUrl`` the SDK client calls, like the host's local RPC
  endpoint (loopback only, no key).

Request bodies follow the host: a start body is parsed and becomes the request's ``input``; a
JSON *string* is therefore the input's JSON text, which is what the SDK client sends
(``json.dumps(input)`` posted as JSON), so ``context.get_input()`` returns what the starter
passed. A raise-event body is parsed once and delivered as is: the SDK client's
``raise_event(..., {"a": 1})`` therefore arrives in the orchestrator as the *string*
``'{"a": 1}'``, exactly as on Azure (azure-functions-durable-python issue #295).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

from devhost.engine import InstanceCompletedError, InstanceExistsError, InstanceNotFoundError
from devhost.functions import FunctionInfo, UnknownFunctionError
from devhost.server import HttpError, Request, Response, json_response
from devhost.triggers import Keys

log = logging.getLogger("devhost.durable_api")

PUBLIC_BASE = "/runtime/webhooks/durabletask"
RPC_BASE = "/durabletask"

RUNTIME_STATUSES = (
    "Pending",
    "Running",
    "Completed",
    "ContinuedAsNew",
    "Failed",
    "Canceled",
    "Terminated",
    "Suspended",
)
FINISHED = ("Completed", "Failed", "Terminated", "Canceled")
_BAD_ID_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f]")
MAX_INSTANCE_ID = 100


class EngineApi(Protocol):
    """The part of the engine the HTTP API drives (see devhost/engine.py)."""

    def start_new(
        self,
        orchestrator: str,
        instance_id: str | None = None,
        input: Any = None,
        *,
        input_json: str | None = None,
    ) -> str: ...

    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict[str, Any] | None: ...

    def query(
        self,
        *,
        runtime_status: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        instance_id_prefix: str | None = None,
        top: int | None = None,
        continuation: str | None = None,
        show_input: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None: ...

    def terminate(self, instance_id: str, reason: str | None = None) -> None: ...

    def signal_entity(
        self, name: str, key: str, operation: str, input_json: str | None = None
    ) -> None: ...

    def read_entity(self, name: str, key: str) -> tuple[bool, str | None]: ...

    def purge(self, instance_id: str) -> bool: ...

    def purge_many(
        self,
        *,
        runtime_status: list[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> int: ...

    def wait_for(
        self,
        instance_id: str,
        real_timeout: float = 30.0,
        statuses: tuple[str, ...] = ("Completed", "Failed", "Terminated"),
    ) -> dict[str, Any]: ...


def _durable_error(status: int, code: str, message: str, headline: str | None = None) -> HttpError:
    """An HttpError whose body also carries the host's ``Message``/``ExceptionMessage`` keys
    (the SDK client reads ``ExceptionMessage`` from a 400 on start)."""
    return HttpError(
        status,
        code,
        message,
        extra={"Message": headline or message, "ExceptionMessage": message},
    )


def _engine_error(exc: Exception, instance_id: str | None = None) -> HttpError | None:
    """Map the engine's errors to HTTP answers; None for anything else (a 500)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, UnknownFunctionError):
        return _durable_error(
            400,
            "UnknownFunction",
            f"The function '{exc.name}' doesn't exist, is disabled, or is not an orchestrator "
            f"function. {text}",
            "One or more of the arguments submitted is incorrect",
        )
    if isinstance(exc, InstanceNotFoundError):
        return _durable_error(
            404, "InstanceNotFound", f"No instance with ID '{instance_id}' found."
        )
    if isinstance(exc, InstanceExistsError):
        return _durable_error(
            409,
            "InstanceExists",
            f"An orchestration instance with ID '{instance_id}' is already running: {text}",
        )
    if isinstance(exc, InstanceCompletedError):
        return _durable_error(
            410, "InstanceCompleted", f"Instance '{instance_id}' has already finished: {text}"
        )
    return None


def parse_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.param(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _durable_error(400, "BadRequest", f"query parameter {name}={raw!r} is not a boolean")


def parse_time(request: Request, name: str) -> datetime | None:
    raw = request.param(name)
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip().replace(" ", "+")  # '+' in an unencoded offset arrives as a space
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _durable_error(
            400, "BadRequest", f"query parameter {name}={raw!r} is not an ISO 8601 date-time"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the API reads times without an offset as UTC
    return value.astimezone(UTC)


def parse_statuses(request: Request) -> list[str] | None:
    values = [v for k, vs in request.query.items() if k.lower() == "runtimestatus" for v in vs]
    if not values:
        return None
    known = {s.lower(): s for s in RUNTIME_STATUSES}
    out: list[str] = []
    for item in (p.strip() for v in values for p in v.split(",")):
        if not item:
            continue
        canonical = known.get(item.lower())
        if canonical is None:
            raise _durable_error(
                400,
                "BadRequest",
                f"runtimeStatus {item!r} is not a runtime status "
                f"(one of {', '.join(RUNTIME_STATUSES)})",
            )
        out.append(canonical)
    return out or None


def check_instance_id(instance_id: str) -> None:
    if not instance_id:
        raise _durable_error(400, "BadRequest", "instance ID must not be empty")
    if len(instance_id) > MAX_INSTANCE_ID:
        raise _durable_error(
            400, "BadRequest", f"instance ID is {len(instance_id)} characters; at most 100"
        )
    if _BAD_ID_CHARS.search(instance_id):
        raise _durable_error(
            400,
            "BadRequest",
            f"instance ID {instance_id!r} must not contain '/', '\\', '#', '?' or control chars",
        )


def decode_start_input(request: Request) -> str | None:
    """The orchestration input's JSON text from a start request body (see the module docstring).

    The host deserializes the body and hands the value to the worker as ``input``; the SDK's
    ``get_input()`` decodes a string there as JSON text. So a JSON string body *is* the input's
    JSON text (the SDK client's case), any other JSON value is the input itself.
    """
    if not request.body.strip():
        return None
    value = request.json("orchestration input")
    if isinstance(value, str):
        return value
    return json.dumps(value)


class DurableApi:
    """Handlers for the Durable HTTP API, and the durableClient binding pointing at them."""

    def __init__(
        self,
        engine: EngineApi,
        *,
        task_hub: str,
        origin: Callable[[], str],
        keys: Keys | None = None,
        connection: str = "Storage",
        wait_poll_cap: float = 300.0,
        rpc_origin: Callable[[], str] | None = None,
    ) -> None:
        self.engine = engine
        self.task_hub = task_hub
        # ``origin``: the configured public base URL, which every URL handed out is built from
        # (never the client's Host header); ``rpc_origin``: where the SDK client reaches the
        # host's local RPC endpoint (the listening address; default: the public base).
        self._origin = origin
        self._rpc_origin = rpc_origin or origin
        self.keys = keys or Keys()
        self.connection = connection
        self.wait_poll_cap = wait_poll_cap

    # -- URLs and the client binding --------------------------------------------------------------
    def _code(self) -> str:
        key = self.keys.function_key or self.keys.master_key
        return f"code={quote(key, safe='')}" if key else ""

    def _suffix(self, task_hub: str | None = None, connection: str | None = None) -> str:
        hub = quote(task_hub or self.task_hub, safe="")
        conn = quote(connection or self.connection, safe="")
        code = self._code()
        return f"taskHub={hub}&connection={conn}" + (f"&{code}" if code else "")

    def management_urls(
        self,
        instance_id: str,
        origin: str | None = None,
        task_hub: str | None = None,
        connection: str | None = None,
    ) -> dict[str, str]:
        base = f"{origin or self._origin()}{PUBLIC_BASE}"
        prefix = f"{base}/instances/{quote(instance_id, safe='')}"
        suffix = self._suffix(task_hub, connection)
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{suffix}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{suffix}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{suffix}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{suffix}",
            "purgeHistoryDeleteUri": f"{prefix}?{suffix}",
            "restartPostUri": f"{prefix}/restart?{suffix}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{suffix}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{suffix}",
        }

    def client_binding(
        self, task_hub: str | None = None, connection: str | None = None
    ) -> dict[str, Any]:
        origin = self._origin()
        base = f"{origin}{PUBLIC_BASE}"
        code = self._code()
        tail = f"?{code}" if code else ""
        amp = f"&{code}" if code else ""
        creation = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        management = self.management_urls("INSTANCEID", origin, task_hub, connection)
        management["id"] = "INSTANCEID"
        # Placeholder ids are not percent-encoded: the SDK replaces them textually.
        return {
            "taskHubName": task_hub or self.task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{creation}{tail}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{creation}?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}{amp}"
                ),
            },
            "managementUrls": management,
            "baseUrl": base,
            "requiredQueryStringParameters": code,
            "rpcBaseUrl": f"{self._rpc_origin()}{RPC_BASE}/",
            "httpBaseUrl": base,
        }

    def client_binding_json(self, info: FunctionInfo) -> str:
        """The durableClient binding value for ``info`` (honours its taskHub/connectionName)."""
        binding = next((b for b in info.bindings if b.get("type") == "durableClient"), {})
        hub = binding.get("taskHub") or None
        if hub and str(hub).lower() != self.task_hub.lower():
            log.warning(
                "function %s asks for task hub %r; the devhost serves only %r",
                info.name,
                hub,
                self.task_hub,
            )
        return json.dumps(self.client_binding(hub, binding.get("connectionName") or None))

    def check_status_response(self, request: Request, instance_id: str) -> Response:
        payload = self.management_urls(instance_id)
        return json_response(
            202,
            payload,
            {"Location": payload["statusQueryGetUri"], "Retry-After": "10"},
        )

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(self, request: Request, raw_subpath: str, *, public: bool) -> Response:
        """Serve ``raw_subpath`` (still percent-encoded, after the base) of the API."""
        try:
            return self._route(request, raw_subpath, public=public)
        except HttpError as exc:
            # Every error body also carries the host's Message/ExceptionMessage keys.
            exc.extra.setdefault("Message", exc.message)
            exc.extra.setdefault("ExceptionMessage", exc.message)
            raise

    def _route(self, request: Request, raw_subpath: str, *, public: bool) -> Response:
        if public:
            self.keys.check("function", request, "the Durable Functions HTTP API")
        hub = request.param("taskHub")
        if hub and hub.lower() != self.task_hub.lower():
            raise _durable_error(
                404,
                "TaskHubNotFound",
                f"task hub {hub!r} is not served here (this is {self.task_hub!r})",
            )
        parts = [unquote(p) for p in raw_subpath.split("/") if p != ""]
        method = request.method
        if not parts:
            raise _no_such_api(request)
        head = parts[0].lower()
        if head == "orchestrators" and method == "POST" and len(parts) >= 2:
            instance_id = "/".join(parts[2:]) if len(parts) > 2 else None
            return self.start(request, parts[1], instance_id)
        if head == "entities":
            return self.entity(request, parts[1:])
        if head != "instances":
            raise _no_such_api(request)
        if len(parts) == 1:
            if method == "GET":
                return self.list_instances(request)
            if method == "DELETE":
                return self.purge_many(request)
            raise _no_such_api(request)
        instance_id = parts[1]
        if len(parts) == 2:
            if method == "GET":
                return self.status(request, instance_id)
            if method == "DELETE":
                return self.purge(instance_id)
            raise _no_such_api(request)
        operation = parts[2].lower()
        if method != "POST":
            raise _no_such_api(request)
        if operation == "raiseevent" and len(parts) == 4:
            return self.raise_event(request, instance_id, parts[3])
        if len(parts) == 3:
            if operation == "terminate":
                return self.terminate(request, instance_id)
            if operation == "restart":
                return self.restart(request, instance_id)
            if operation in ("rewind", "suspend", "resume"):
                raise _durable_error(
                    501, "NotImplemented", f"{operation} is not supported by the devhost"
                )
        raise _no_such_api(request)

    # -- operations -------------------------------------------------------------------------------
    def _status_or_404(self, instance_id: str, **kwargs: bool) -> dict[str, Any]:
        status = self.engine.get_status(instance_id, **kwargs)
        if status is None:
            raise _durable_error(
                404, "InstanceNotFound", f"No instance with ID '{instance_id}' found."
            )
        return status

    def start(self, request: Request, function_name: str, instance_id: str | None) -> Response:
        if instance_id is not None:
            check_instance_id(instance_id)
        input_json = decode_start_input(request)
        timeout = _seconds(request, "timeout")
        interval = _seconds(request, "pollingInterval")
        try:
            new_id = self.engine.start_new(function_name, instance_id, input_json=input_json)
        except Exception as exc:
            mapped = _engine_error(exc, instance_id)
            if mapped is None:
                raise
            raise mapped from None
        log.info("started %s instance %s", function_name, new_id)
        if timeout is not None and interval is not None:
            if interval > timeout:
                raise _durable_error(
                    400,
                    "BadRequest",
                    f"Total timeout {timeout:g} should be bigger than retry timeout {interval:g}",
                )
            with contextlib.suppress(TimeoutError):
                self.engine.wait_for(new_id, real_timeout=min(timeout, self.wait_poll_cap))
            status = self.engine.get_status(new_id)
            if status is not None and status.get("runtimeStatus") in FINISHED:
                return json_response(200, status)
        return self.check_status_response(request, new_id)

    def entity(self, request: Request, path: list[str]) -> Response:
        """``GET entities/{name}/{key}`` reads an entity's state (404 while it has none);
        ``POST entities/{name}/{key}?op=`` signals it (202): the body is the operation input."""
        if len(path) < 2 or not path[0] or not "/".join(path[1:]):
            raise _durable_error(
                400, "BadRequest", "an entity is addressed as entities/{name}/{key}"
            )
        name, key = path[0], "/".join(path[1:])
        try:
            if request.method == "GET":
                exists, state = self.engine.read_entity(name, key)
                if not exists:
                    raise _durable_error(
                        404, "EntityNotFound", f"No entity with ID '@{name.lower()}@{key}' found."
                    )
                body = b"null" if state is None else state.encode("utf-8")
                return Response(200, [("Content-Type", "application/json; charset=utf-8")], body)
            if request.method == "POST":
                input_json = None
                if request.body.strip():
                    # The host parses the JSON body and stores the value serialized again.
                    input_json = json.dumps(request.json("entity operation input"))
                self.engine.signal_entity(name, key, request.param("op") or "", input_json)
                return Response(202, [], b"")
        except (UnknownFunctionError, ValueError) as exc:
            if isinstance(exc, UnknownFunctionError):
                raise _durable_error(
                    400,
                    "UnknownFunction",
                    f"No entity function named '{name}' is registered: {exc}",
                ) from None
            raise _durable_error(400, "BadRequest", str(exc)) from None
        raise _no_such_api(request)

    def status(self, request: Request, instance_id: str) -> Response:
        status = self._status_or_404(
            instance_id,
            show_history=parse_bool(request, "showHistory", False),
            show_history_output=parse_bool(request, "showHistoryOutput", False),
            show_input=parse_bool(request, "showInput", True),
        )
        if status.get("runtimeStatus") in FINISHED:
            return json_response(200, status)
        query = f"?{request.query_string}" if request.query_string else ""
        location = f"{self._origin()}{request.raw_path}{query}"
        return json_response(202, status, {"Location": location, "Retry-After": "5"})

    def list_instances(self, request: Request) -> Response:
        top_text = request.param("top")
        top: int | None = None
        if top_text not in (None, ""):
            assert top_text is not None
            if not top_text.strip().isdigit() or int(top_text) <= 0:
                raise _durable_error(
                    400,
                    "BadRequest",
                    f"query parameter top={top_text!r} must be a positive integer",
                )
            top = int(top_text)
        items, token = self.engine.query(
            runtime_status=parse_statuses(request),
            created_from=parse_time(request, "createdTimeFrom"),
            created_to=parse_time(request, "createdTimeTo"),
            instance_id_prefix=request.param("instanceIdPrefix") or None,
            top=top,
            continuation=request.header("x-ms-continuation-token") or None,
            show_input=parse_bool(request, "showInput", True),
        )
        headers = {"x-ms-continuation-token": token} if token else {}
        return json_response(200, items, headers)

    def raise_event(self, request: Request, instance_id: str, event_name: str) -> Response:
        status = self._status_or_404(instance_id, show_input=False)
        if status.get("runtimeStatus") in FINISHED:
            raise _durable_error(
                410,
                "InstanceCompleted",
                f"Instance '{instance_id}' is {status.get('runtimeStatus')}: it takes no events",
            )
        if request.media_type not in ("", "application/json"):
            raise _durable_error(
                400,
                "UnsupportedMediaType",
                "Only application/json request content is supported "
                f"(Content-Type was {request.media_type!r})",
            )
        data = request.json("event data") if request.body.strip() else None
        try:
            self.engine.raise_event(instance_id, event_name, data)
        except Exception as exc:
            mapped = _engine_error(exc, instance_id)
            if mapped is None:
                raise
            raise mapped from None
        return json_response(202, {"id": instance_id, "eventName": event_name})

    def terminate(self, request: Request, instance_id: str) -> Response:
        status = self._status_or_404(instance_id, show_input=False)
        if status.get("runtimeStatus") in FINISHED:
            raise _durable_error(
                410,
                "InstanceCompleted",
                f"Instance '{instance_id}' is already {status.get('runtimeStatus')}",
            )
        try:
            self.engine.terminate(instance_id, request.param("reason"))
        except Exception as exc:
            mapped = _engine_error(exc, instance_id)
            if mapped is None:
                raise
            raise mapped from None
        return json_response(202, {"id": instance_id})

    def restart(self, request: Request, instance_id: str) -> Response:
        status = self._status_or_404(instance_id, show_input=True)
        new_id_wanted = parse_bool(request, "restartWithNewInstanceId", True)
        try:
            new_id = self.engine.start_new(
                str(status.get("name")),
                None if new_id_wanted else instance_id,
                status.get("input"),
            )
        except Exception as exc:
            mapped = _engine_error(exc, instance_id)
            if mapped is None:
                raise
            raise mapped from None
        return json_response(
            202, new_id, {"Location": self.management_urls(new_id)["statusQueryGetUri"]}
        )

    def purge(self, instance_id: str) -> Response:
        if not self.engine.purge(instance_id):
            raise _durable_error(
                404, "InstanceNotFound", f"No instance with ID '{instance_id}' found."
            )
        return json_response(200, {"instancesDeleted": 1})

    def purge_many(self, request: Request) -> Response:
        created_from = parse_time(request, "createdTimeFrom")
        if created_from is None:
            raise _durable_error(
                400, "BadRequest", "Please provide value for 'createdTimeFrom' parameter."
            )
        deleted = self.engine.purge_many(
            runtime_status=parse_statuses(request),
            created_from=created_from,
            created_to=parse_time(request, "createdTimeTo"),
        )
        if deleted == 0:
            raise _durable_error(404, "NotFound", "No instances matched the purge criteria.")
        return json_response(200, {"instancesDeleted": deleted})


def _seconds(request: Request, name: str) -> float | None:
    raw = request.param(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _durable_error(
            400, "BadRequest", f"query parameter {name}={raw!r} must be a number of seconds"
        ) from None
    if value < 0:
        raise _durable_error(400, "BadRequest", f"query parameter {name} must not be negative")
    return value


def _no_such_api(request: Request) -> HttpError:
    return _durable_error(404, "NotFound", f"No such API: {request.method} {request.path}")


def status_counts(items: list[Mapping[str, Any]]) -> dict[str, int]:
    """Instances per runtime status (for /admin/host/status)."""
    counts: dict[str, int] = {}
    for item in items:
        key = str(item.get("runtimeStatus"))
        counts[key] = counts.get(key, 0) + 1
    return counts
