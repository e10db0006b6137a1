"""The HTTP API framework: one way to declare a route, authenticate, validate, answer and fail.

Every HTTP route of the app is declared with :func:`route`. The declaration records the route's
method, path, required role, summary, path/query/body models and answers in :data:`REGISTRY`
(from which :func:`openapi_document` builds the OpenAPI 3.1 document) and registers an
``ANONYMOUS`` HTTP function whose wrapper does, in this order and before the handler runs:

1. **Authentication**: the principal from ``X-MS-CLIENT-PRINCIPAL`` (App Service Authentication
   with Entra ID injects it and strips any forged copy; locally the devhost does, see
   docs/api.md). None: ``401``. Without the route's role: ``403`` naming the role. ``Reader``
   routes accept any app role; ``Operator`` and ``Approver`` routes need exactly that role.
2. **Input**: path parameters against their patterns, the query against its model, the body
   (at most :data:`MAX_BODY_BYTES`, ``413`` over it; malformed JSON, wrong types and unknown
   fields ``400`` naming the field: models forbid extra fields).
3. **Idempotency** (POST): an ``Idempotency-Key`` seen before from the same principal on the
   same route returns the first (2xx) answer, kept durably as the input of an ``api_answer``
   orchestration instance (any app instance reads it; process memory would not survive a
   scale-out). The same key with a different body is ``422``.
4. **Callbacks**: a ``callback_url`` in the body must be https and on ``CALLBACK_ALLOWED_HOSTS``
   (``400`` naming ``callback_url`` otherwise); when the handler accepted a long operation, an
   ``api_notify`` orchestration delivers a signed notice when it ends (never blocking it).

Every refusal is raised as :class:`ApiError` and answered in one shape:
``{"error": {"code", "message", "field"?, "details"?, ...}}``. A handler that fails unexpectedly
answers ``500`` (a bug: the tests look for these); Azure or the durable store failing ``503``
with ``Retry-After``. Nothing is started before every check passed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

from shared import names
from shared.app_catalogue import app_catalogue
from shared.domain.callbacks import callback_url_problem
from shared.domain.catalogue import Catalogue
from shared.domain.principal import HEADER as PRINCIPAL_HEADER
from shared.domain.principal import Principal, parse_principal
from shared.errors import InputError, SettingsError, field_errors_from_pydantic
from shared.settings import load_api_settings, settings_refused
from triggers._common import (
    MAX_BODY_BYTES,
    PayloadTooLargeError,
    parse_json_body,
    runtime_status,
)

log = logging.getLogger("imagefactory.api")

API_PREFIX: Final = "/api"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
KEY_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
_KEY = re.compile(KEY_PATTERN)
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")

# Path parameter patterns shared by the routes (also written into the OpenAPI document).
IMAGE_PATTERN: Final = r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$"
VERSION_PATTERN: Final = r"^\d{1,10}\.\d{1,10}\.\d{1,10}$"
BUILD_ID_PATTERN: Final = KEY_PATTERN
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"
# https only; the host must also be on CALLBACK_ALLOWED_HOSTS (checked at the request).
CALLBACK_URL_PATTERN: Final = r"^https://[^\s/?#@]+(?:[/?#]\S*)?$"


class Role(StrEnum):
    """App roles of the app registration (Entra ID) that App Service Authentication reports."""

    READER = "Reader"
    OPERATOR = "Operator"
    APPROVER = "Approver"


def role_satisfied(principal: Principal, role: Role) -> bool:
    """Reading needs any app role; mutations and approvals need their own role."""
    if role is Role.READER:
        return any(principal.has_role(r.value) for r in Role)
    return principal.has_role(role.value)


class Body(BaseModel):
    """Base of request bodies and queries: unknown fields are refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Answer(BaseModel):
    """Base of response bodies: documented fields; more may come (clients must ignore them)."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorInfo(Answer):
    code: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """Every refusal and failure: ``{"error": {...}}``."""

    error: ErrorInfo


class ApiError(Exception):
    """A finished refusal: status, code, message, the field or role it names, extra facts."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.details:
            error["details"] = self.details
        error.update(self.extra)
        return {"error": error}

    def response(self) -> func.HttpResponse:
        return http_json(self.body(), self.status, self.headers)

    @classmethod
    def from_input(cls, error: InputError) -> ApiError:
        details = [{"field": e.path, "reason": e.reason} for e in error.errors]
        first = details[0]["field"] if details else None
        if isinstance(error, PayloadTooLargeError):
            return cls(
                413,
                "PayloadTooLarge",
                f"the request body is {error.size} bytes; the limit is {error.limit} bytes",
                field="body",
                details=details,
                limit_bytes=error.limit,
            )
        message = "; ".join(str(e) for e in error.errors) or str(error)
        return cls(400, "InvalidInput", message, field=first, details=details)

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> ApiError:
        errors = field_errors_from_pydantic(exc.errors())  # type: ignore[arg-type]
        if prefix:
            errors = [type(e)(f"{prefix}{e.path}" if e.path else prefix, e.reason) for e in errors]
        return cls.from_input(InputError(errors))


def not_found(code: str, message: str, field: str, **extra: Any) -> ApiError:
    return ApiError(404, code, message, field=field, **extra)


def unavailable(code: str, message: str, retry_after: int = 30, **extra: Any) -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)}, **extra)


def readable_catalogue() -> Catalogue:
    """The app's catalogue, or 503 ``CatalogueUnavailable`` (a settings problem passes on as
    such: the route answers ``AppMisconfigured``)."""
    try:
        return app_catalogue()
    except SettingsError:
        raise
    except (InputError, OSError) as exc:
        log.error("catalogue unavailable: %s", exc)
        raise unavailable(
            "CatalogueUnavailable", f"the image catalogue cannot be read: {exc}"
        ) from None


def http_json(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        headers=headers,
    )


@dataclass
class Operation:
    """A long operation a handler accepted, for the callback watcher to follow.

    ``kind`` ``instance``: an orchestration instance (``instance_id``); ``build``: a queued
    build of ``image`` found in its queue by ``key``.
    """

    kind: Literal["instance", "build"]
    name: str
    instance_id: str | None = None
    image: str | None = None
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "instance_id": self.instance_id,
            "image": self.image,
            "key": self.key,
        }


@dataclass
class Reply:
    """What a handler answers: status, JSON body, headers; ``operation`` for callbacks."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    operation: Operation | None = None


@dataclass
class Call:
    """One request as a handler sees it, after every framework check passed."""

    req: func.HttpRequest
    client: Any
    principal: Principal
    params: dict[str, str]
    query: Any
    body: Any
    spec: RouteSpec
    idempotency_key: str | None = None

    @property
    def base_url(self) -> str:
        url: str = self.req.url
        return url.split(f"{API_PREFIX}/", 1)[0]

    def url(self, path: str) -> str:
        """The absolute URL of an API path (``images/x/versions``)."""
        return f"{self.base_url}{API_PREFIX}/{path.lstrip('/')}"

    def accepted(
        self,
        body: dict[str, Any],
        status_path: str,
        operation: Operation | None = None,
        retry_after: int = 10,
    ) -> Reply:
        """``202``: the async HTTP pattern (``Location`` and ``Retry-After``, ``status_url``)."""
        status_url = self.url(status_path)
        return Reply(
            {**body, "status_url": status_url},
            202,
            {"Location": status_url, "Retry-After": str(retry_after)},
            operation,
        )


Handler = Callable[[Call], Awaitable[Reply | dict[str, Any] | BaseModel]]


@dataclass(frozen=True)
class RouteSpec:
    """One registered route: what the OpenAPI document and the wrapper know about it."""

    name: str
    method: str
    path: str  # under /api, without the leading slash: "images/{image}/versions"
    role: Role
    summary: str
    description: str
    tag: str
    status: int
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    query: type[BaseModel] | None
    params: dict[str, str]
    errors: tuple[int, ...]
    callbacks: bool
    handler: Handler
    endpoint: Callable[..., Awaitable[func.HttpResponse]]
    resolve: Callable[[dict[str, str]], object] | None = None
    also: tuple[int, ...] = ()

    @property
    def openapi_path(self) -> str:
        return f"{API_PREFIX}/{self.path}"


REGISTRY: dict[str, RouteSpec] = {}

# The refusals every route may answer; each route adds its own.
COMMON_ERRORS: Final = (400, 401, 403, 500, 503)


def path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


def route(
    bp: df.Blueprint,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
    path: str,
    *,
    role: Role,
    summary: str,
    tag: str,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    params: dict[str, str] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    callbacks: bool = False,
    resolve: Callable[[dict[str, str]], object] | None = None,
    also: tuple[int, ...] = (),
) -> Callable[[Handler], Any]:
    """Declare an HTTP route on ``bp``: the handler gets a checked :class:`Call`.

    ``params`` maps each path parameter to its pattern (every one must be named). ``callbacks``
    routes take ``callback_url`` in their body model and start a notice when they answer 202.
    ``also`` lists other success statuses (a plan answered at once or later: 200 and 202).
    ``resolve`` checks that the path names something that exists (raising a 404
    :class:`ApiError`) before the body is read: an unknown image is 404 whatever the body.
    """
    names_in_path = path_params(path)
    patterns = dict(params or {})
    if set(names_in_path) != set(patterns):
        raise ValueError(f"route {path!r}: give a pattern for each of {names_in_path}")
    if callbacks and (request is None or "callback_url" not in request.model_fields):
        raise ValueError(f"route {path!r}: a callback route's body needs callback_url")

    def register(handler: Handler) -> Any:
        name = handler.__name__
        if name in REGISTRY:
            raise ValueError(f"route function {name!r} is registered twice")
        description = inspect.cleandoc(handler.__doc__ or summary)
        all_errors = tuple(sorted(set(COMMON_ERRORS) | set(errors)))
        if request is not None:
            all_errors = tuple(sorted(set(all_errors) | {413}))
        if method == "POST":
            all_errors = tuple(sorted(set(all_errors) | {422}))

        async def endpoint(req: func.HttpRequest, client: Any) -> func.HttpResponse:
            spec = REGISTRY[name]
            try:
                return await _serve(spec, req, client)
            except ApiError as refused:
                return refused.response()
            except SettingsError as error:  # the operator's to fix: one line, a 503 naming it
                settings_refused(log, f"route {method} {path}", error)
                return unavailable(
                    "AppMisconfigured",
                    "the app's settings are missing or malformed: "
                    + "; ".join(str(e) for e in error.errors),
                    retry_after=300,
                ).response()
            except Exception:  # a bug: say so without details, keep them in the log
                log.exception("route %s %s failed", method, path)
                return ApiError(500, "InternalError", f"{name} failed unexpectedly").response()

        endpoint.__name__ = name
        endpoint.__qualname__ = name
        endpoint.__doc__ = summary
        spec = RouteSpec(
            name=name,
            method=method,
            path=path,
            role=role,
            summary=summary,
            description=description,
            tag=tag,
            status=status,
            request=request,
            response=response,
            query=query,
            params=patterns,
            errors=all_errors,
            callbacks=callbacks,
            handler=handler,
            endpoint=endpoint,
            resolve=resolve,
            also=also,
        )
        REGISTRY[name] = spec
        builder = bp.durable_client_input(client_name="client")(endpoint)
        return bp.route(route=path, methods=[method], auth_level=func.AuthLevel.ANONYMOUS)(builder)

    return register


# ---- the checks, in order -----------------------------------------------------------------


def authenticate(req: func.HttpRequest, role: Role) -> Principal:
    principal = parse_principal(req.headers.get(PRINCIPAL_HEADER))
    if principal is None:
        raise ApiError(
            401,
            "Unauthenticated",
            f"an authenticated principal is required (the {PRINCIPAL_HEADER} header of App "
            "Service Authentication)",
        )
    if not role_satisfied(principal, role):
        needed = " or ".join(r.value for r in Role) if role is Role.READER else role.value
        raise ApiError(
            403,
            "Forbidden",
            f"{principal.name} lacks the role this needs: {needed}",
            missing_role=role.value,
        )
    return principal


def _params(spec: RouteSpec, req: func.HttpRequest) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, pattern in spec.params.items():
        value = req.route_params.get(name, "")
        if not re.fullmatch(pattern.strip("^$"), value):
            raise ApiError(
                400, "InvalidInput", f"{name}: {value[:80]!r} does not match {pattern}", field=name
            )
        values[name] = value
    return values


def _query(spec: RouteSpec, req: func.HttpRequest) -> Any:
    if spec.query is None:
        return None
    known = set(spec.query.model_fields)
    given = {k: v for k, v in req.params.items() if k in known}
    try:
        return spec.query.model_validate(given)
    except ValidationError as exc:
        raise ApiError.from_validation(exc) from None


def _body(spec: RouteSpec, req: func.HttpRequest) -> Any:
    if spec.request is None:
        return None
    try:
        data = parse_json_body(req, max_bytes=MAX_BODY_BYTES)
        return spec.request.model_validate(data)
    except ValidationError as exc:
        raise ApiError.from_validation(exc) from None
    except InputError as exc:
        raise ApiError.from_input(exc) from None


def _idempotency_key(req: func.HttpRequest) -> str | None:
    key: str | None = req.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise ApiError(
            400,
            "InvalidInput",
            f"{IDEMPOTENCY_HEADER}: 1-128 letters, digits or . _ : -",
            field=IDEMPOTENCY_HEADER,
        )
    return key


def _check_callback(body: Any) -> None:
    url = getattr(body, "callback_url", None)
    if url is None:
        return
    settings = load_api_settings()
    problem = callback_url_problem(str(url), settings.callback_allowed_hosts)
    if problem is None and not settings.callback_signing_secret:
        problem = "callbacks are not enabled on this app (CALLBACK_SIGNING_SECRET is unset)"
    if problem is not None:
        raise ApiError(400, "InvalidInput", f"callback_url: {problem}", field="callback_url")


# ---- idempotency: answers kept as the input of an orchestration instance -------------------


def _answer_id(principal: Principal, spec: RouteSpec, req: func.HttpRequest, key: str) -> str:
    who = principal.object_id or principal.name
    path = req.url.split("?", 1)[0].split(f"{API_PREFIX}/", 1)[-1]
    digest = hashlib.sha256(f"{who}\n{spec.method}\n{path}\n{key}".encode()).hexdigest()
    return names.api_answer_instance_id(digest[:40])


def _fingerprint(req: func.HttpRequest) -> str:
    return hashlib.sha256(req.get_body() or b"").hexdigest()


def _input_of(status: Any) -> Any:
    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


async def _remembered(client: Any, instance_id: str) -> dict[str, Any] | None:
    try:
        status = await client.get_status(instance_id, show_input=True)
    except Exception as exc:
        raise unavailable("StoreUnavailable", f"the answer store cannot be read: {exc}") from None
    if runtime_status(status) is None:
        return None
    answer = _input_of(status)
    return answer if isinstance(answer, dict) and "status" in answer else None


async def _remember(client: Any, instance_id: str, answer: dict[str, Any]) -> None:
    try:
        await client.start_new(names.ORCH_API_ANSWER, instance_id, answer)
    except Exception as exc:  # the operation was accepted: a lost replay record is not fatal
        log.warning("answer %s not kept: %s", instance_id, exc)


# ---- callbacks -------------------------------------------------------------------------------


async def _start_notice(call: Call, reply: Reply) -> dict[str, Any] | None:
    url = getattr(call.body, "callback_url", None)
    if url is None or reply.operation is None or reply.status != 202:
        return None
    notice_id = uuid.uuid4().hex
    instance_id = names.notify_instance_id(notice_id)
    payload = {
        "notice_id": notice_id,
        "callback_url": str(url),
        "operation": reply.operation.to_json(),
        "requested_by": call.principal.actor,
        "route": call.spec.name,
        "max_attempts": load_api_settings().callback_max_attempts,
    }
    try:
        await call.client.start_new(names.ORCH_API_NOTIFY, instance_id, payload)
    except Exception as exc:  # never fail (or block) the accepted operation for its notice
        log.warning("callback for %s not registered: %s", reply.operation.name, exc)
        return {"status": "not-registered"}
    return {"status": "registered", "notice_id": notice_id}


# ---- serving ----------------------------------------------------------------------------------


def _reply_of(result: Reply | dict[str, Any] | BaseModel, spec: RouteSpec) -> Reply:
    if isinstance(result, Reply):
        return result
    if isinstance(result, BaseModel):
        return Reply(result.model_dump(mode="json"), spec.status)
    return Reply(result, spec.status)


async def _serve(spec: RouteSpec, req: func.HttpRequest, client: Any) -> func.HttpResponse:
    principal = authenticate(req, spec.role)
    params = _params(spec, req)
    if spec.resolve is not None:
        spec.resolve(params)
    query = _query(spec, req)
    body = _body(spec, req)
    key = _idempotency_key(req) if spec.method == "POST" else None
    if spec.callbacks:
        _check_callback(body)
    answer_id = _answer_id(principal, spec, req, key) if key else None
    fingerprint = _fingerprint(req)
    if answer_id is not None:
        earlier = await _remembered(client, answer_id)
        if earlier is not None:
            if earlier.get("fingerprint") != fingerprint:
                raise ApiError(
                    422,
                    "IdempotencyKeyReused",
                    f"{IDEMPOTENCY_HEADER} {key!r} was used with a different request body",
                    field=IDEMPOTENCY_HEADER,
                )
            headers = {**dict(earlier.get("headers") or {}), REPLAYED_HEADER: "true"}
            return http_json(earlier.get("body"), int(earlier["status"]), headers)
    call = Call(req, client, principal, params, query, body, spec, key)
    reply = _reply_of(await spec.handler(call), spec)
    if isinstance(reply.body, dict):
        notice = await _start_notice(call, reply)
        if notice is not None:
            reply.body = {**reply.body, "callback": notice}
    if answer_id is not None and 200 <= reply.status < 300:
        await _remember(
            client,
            answer_id,
            {
                "status": reply.status,
                "body": reply.body,
                "headers": reply.headers,
                "fingerprint": fingerprint,
                "route": spec.name,
            },
        )
    return http_json(reply.body, reply.status, reply.headers)


# ---- OpenAPI 3.1 ------------------------------------------------------------------------------

OPENAPI_VERSION: Final = "3.1.0"
API_TITLE: Final = "AVD Image Factory API"
API_VERSION: Final = "1.0.0"


def _models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {"ErrorBody": ErrorBody}
    for spec in REGISTRY.values():
        for model in (spec.request, spec.response):
            if model is not None:
                seen.setdefault(model.__name__, model)
    return [seen[k] for k in sorted(seen)]


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        entry: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            entry["description"] = description
        out.append(entry)
    return out


def _status_text(status: int) -> str:
    return {
        200: "OK",
        201: "Created",
        202: "Accepted: the operation runs; follow Location (Retry-After seconds)",
        400: "Invalid input: the error names the field",
        401: "No authenticated principal",
        403: "The principal lacks the role (named in the error)",
        404: "Unknown image, version, build or route parameter",
        409: "Conflict with the current state (the error gives it)",
        413: "Body over the limit",
        422: "Idempotency-Key reused with a different body",
        500: "A bug: reported, never a client mistake",
        503: "Azure or the durable store is unavailable: retry after Retry-After",
    }.get(status, str(status))


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered route (deterministic: sorted keys)."""
    _, defs = models_json_schema(
        [(m, "validation" if m in _request_models() else "serialization") for m in _models()],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for spec in sorted(REGISTRY.values(), key=lambda s: (s.path, s.method)):
        parameters: list[dict[str, Any]] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": pat},
            }
            for p, pat in spec.params.items()
        ]
        if spec.query is not None:
            parameters.extend(_query_parameters(spec.query))
        if spec.method == "POST":
            parameters.append(
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "a repeat with the same key returns the first answer",
                    "schema": {"type": "string", "pattern": KEY_PATTERN},
                }
            )
        ok_schema: dict[str, Any] = (
            {"$ref": f"#/components/schemas/{spec.response.__name__}"}
            if spec.response is not None
            else {"type": "object"}
        )
        responses: dict[str, Any] = {
            str(spec.status): {
                "description": _status_text(spec.status),
                "content": {"application/json": {"schema": ok_schema}},
            }
        }
        if spec.status == 202:
            responses["202"]["headers"] = {
                "Location": {"schema": {"type": "string"}},
                "Retry-After": {"schema": {"type": "string"}},
            }
        if spec.method == "POST" and spec.status != 200:
            # A decision answered at once is 200 (approval); others only as a replay.
            responses.setdefault(
                "200",
                {
                    "description": "the answer, at once",
                    "content": {"application/json": {"schema": ok_schema}},
                },
            )
        for code in spec.also:
            responses[str(code)] = {
                "description": _status_text(code),
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        for code in spec.errors:
            responses[str(code)] = {
                "description": _status_text(code),
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
        operation: dict[str, Any] = {
            "operationId": spec.name,
            "summary": spec.summary,
            "description": spec.description,
            "tags": [spec.tag],
            "x-required-role": spec.role.value,
            "parameters": parameters,
            "responses": responses,
            "security": [{"entra": [spec.role.value]}],
        }
        if spec.request is not None:
            needed = any(f.is_required() for f in spec.request.model_fields.values())
            operation["requestBody"] = {
                "required": needed,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{spec.request.__name__}"}
                    }
                },
            }
        paths.setdefault(spec.openapi_path, {})[spec.method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": (
                "Builds, lifecycle and audit of Azure Virtual Desktop images. Every route needs "
                "an Entra ID principal (App Service Authentication) holding the app role named "
                "in x-required-role; errors are {error: {code, message, field?, details?}}."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "entra": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "An Entra ID token for the app's registration; App Service "
                        "Authentication validates it and passes X-MS-CLIENT-PRINCIPAL with the "
                        "app roles Reader, Operator, Approver."
                    ),
                }
            },
        },
    }


def _request_models() -> set[type[BaseModel]]:
    return {s.request for s in REGISTRY.values() if s.request is not None}
