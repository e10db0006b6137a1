"""The CLI's HTTP client: one request, its identity, its retries, and what each answer means.

Identity: against the local devhost a principal header (``name:Role,Role``, encoded the way App
Service Authentication sends it); against a deployed app an Entra ID token for the app's
registration (``--app-id-uri``, scope ``<uri>/.default``) from ``azure-identity``'s
``DefaultAzureCredential`` (az login, managed identity, environment). POSTs carry an
``Idempotency-Key`` (one per command), so the CLI's own retries of transient failures (connection
errors, 503, 502, 504, 429) never repeat an operation. Exit codes: :class:`Exit`.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any
from urllib.parse import quote, urlencode

from shared.domain.principal import HEADER, encode_principal

TRANSIENT = frozenset({429, 502, 503, 504})


class Exit(IntEnum):
    """What the CLI's exit status means (docs/api.md#exit-codes)."""

    OK = 0
    USAGE = 2  # a bad command line (typer's own code)
    REFUSED = 3  # the API refused the request (4xx other than 404)
    NOT_FOUND = 4  # an unknown image, version, build or route
    UNAVAILABLE = 5  # the server failed or could not be reached (after retries)
    FAILED = 6  # the operation ran and failed (a build failed, a decision was refused)


def exit_for(status: int) -> Exit:
    if 200 <= status < 400:
        return Exit.OK
    if status == 404:
        return Exit.NOT_FOUND
    if 400 <= status < 500:
        return Exit.REFUSED
    return Exit.UNAVAILABLE


class ApiFailureError(Exception):
    """An answer the command cannot go on with; ``exit`` is the process's exit status."""

    def __init__(self, exit: Exit, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.exit = exit
        self.status = status
        self.body = body


def principal_header(text: str) -> str:
    """``name:Role,Role`` encoded as App Service would; an encoded value passes through."""
    if ":" not in text:
        return text
    name, _, roles = text.partition(":")
    return encode_principal(name.strip(), tuple(r.strip() for r in roles.split(",") if r.strip()))


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class ApiClient:
    """Calls ``{base_url}/api/...`` as the configured identity."""

    base_url: str
    principal: str | None = None
    app_id_uri: str | None = None
    ca_bundle: str | None = None
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    _credential: Any = field(default=None, repr=False)

    def _auth_headers(self) -> dict[str, str]:
        if self.principal:
            return {HEADER: principal_header(self.principal)}
        if self.app_id_uri:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            token = self._credential.get_token(f"{self.app_id_uri.rstrip('/')}/.default")
            return {"Authorization": f"Bearer {token.token}"}
        return {}

    def url(self, path: str, query: dict[str, Any] | None = None) -> str:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        tail = f"?{urlencode(q)}" if q else ""
        return f"{self.base_url.rstrip('/')}/api/{path.lstrip('/')}{tail}"

    def _once(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Response:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        context = (
            ssl.create_default_context(cafile=self.ca_bundle) if url.startswith("https") else None
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as answer:  # noqa: S310
                raw = answer.read()
                return Response(answer.status, _json(raw), dict(answer.headers.items()))
        except urllib.error.HTTPError as err:
            raw = err.read()
            return Response(err.code, _json(raw), dict(err.headers.items()))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> Response:
        """One API call, retried on transient failures; a 4xx/5xx answer raises ApiFailureError."""
        headers = {"Accept": "application/json", **self._auth_headers()}
        data = None
        if method != "GET":
            data = json.dumps(body if body is not None else {}).encode("utf-8")
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = idempotency_key or f"cli-{uuid.uuid4().hex}"
        url = self.url(path, query)
        last: Response | None = None
        for attempt in range(self.retries + 1):
            try:
                last = self._once(method, url, data, headers)
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.retries:
                    reason = getattr(exc, "reason", exc)
                    raise ApiFailureError(Exit.UNAVAILABLE, f"{url}: {reason}") from None
                time.sleep(self.backoff * (2**attempt))
                continue
            if last.status not in TRANSIENT or attempt == self.retries:
                break
            wait = last.headers.get("Retry-After", "")
            time.sleep(min(float(wait), 30.0) if wait.isdigit() else self.backoff * (2**attempt))
        assert last is not None
        if last.status >= 400:
            raise ApiFailureError(exit_for(last.status), describe(last), last.status, last.body)
        return last

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query).body

    def post(self, path: str, body: Any, idempotency_key: str | None = None) -> Response:
        return self.request("POST", path, body=body, idempotency_key=idempotency_key)


def seg(value: str) -> str:
    """A path segment, percent-encoded."""
    return quote(value, safe="")


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")[:2000]}


def describe(response: Response) -> str:
    """An error answer in one line: status, code, message, field or missing role."""
    error = response.body.get("error") if isinstance(response.body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {response.status}"
    parts = [f"HTTP {response.status} {error.get('code', '')}: {error.get('message', '')}"]
    if error.get("field"):
        parts.append(f"(field: {error['field']})")
    if error.get("missing_role"):
        parts.append(f"(missing role: {error['missing_role']})")
    return " ".join(parts)
