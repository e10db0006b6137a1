"""Managed identities: a VM's user-assigned identities, their IMDS tokens, and checking tokens.

Azure gives a VM the identities named in its ``identity`` block; software inside the VM gets a
token for one of them from the instance metadata service (IMDS,
``GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=...&resource=...``,
header ``Metadata: true``; ``client_id``, ``object_id`` or ``msi_res_id`` / ``mi_res_id``
choose the identity). Only the VM's guest can reach IMDS: :func:`imds` answers for one VM.

Tokens are signed (HMAC-SHA256 with a key this emulator makes at start) and carry the audience,
the identity and an expiry in host time; :func:`verify` accepts only such a token, unexpired,
for the wanted audience, so a data plane (the custom Event Grid topic) can refuse a caller
without a valid token with 401, as Azure does. The app's local credential
(``shared/azure/clients.py``: the fixed token ``local-emulator-token``) stands for the Function
App's own managed identity and is accepted as that principal.

The ids Azure adds to each user-assigned identity (``principalId``, ``clientId``) are derived
from the identity's resource id, so every VM holding it sees the same ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import urllib.parse
import uuid
from datetime import timedelta
from typing import Any, Final

from emulator.arm import ArmError, Headers, bad_request
from emulator.core import Emulator

IMDS_HOST: Final = "169.254.169.254"
TOKEN_PATH: Final = "/metadata/identity/oauth2/token"  # noqa: S105 - a URL path
TOKEN_LIFETIME: Final = timedelta(hours=24)
APP_PRINCIPAL_TOKEN: Final = "local-emulator-token"  # noqa: S105 - the app's local credential, no secret
IDENTITY_TYPE: Final = "Microsoft.ManagedIdentity/userAssignedIdentities"
_IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$",
    re.IGNORECASE,
)
_NAMESPACE = uuid.UUID("5b0d6f7e-4a59-4d1c-9a8e-6c1f3b2a7d10")


def principal_and_client_id(identity_id: str) -> tuple[str, str]:
    """The ``principalId`` (object id) and ``clientId`` Azure gives a user-assigned identity."""
    key = identity_id.lower()
    return (
        str(uuid.uuid5(_NAMESPACE, f"principal:{key}")),
        str(uuid.uuid5(_NAMESPACE, f"client:{key}")),
    )


def vm_identity(emu: Emulator, body: Any) -> dict[str, Any] | None:
    """A VM's ``identity`` as Azure returns it, from the request's; 400 for a malformed one.

    ``type`` ``None`` | ``SystemAssigned`` | ``UserAssigned`` | ``SystemAssigned, UserAssigned``;
    each user-assigned key is an identity's resource id whose value is ``{}`` (or null), and
    comes back with its ``principalId`` and ``clientId``.
    """
    if body is None:
        return None
    if not isinstance(body, dict):
        raise bad_request("The 'identity' property must be an object.", target="identity")
    kind = str(body.get("type") or "None")
    parts = {p.strip().lower() for p in kind.split(",")}
    if not parts <= {"none", "systemassigned", "userassigned"}:
        raise bad_request(
            f"The identity type '{kind}' is not valid: use SystemAssigned, UserAssigned, "
            "'SystemAssigned, UserAssigned' or None.",
            target="identity.type",
        )
    given = body.get("userAssignedIdentities") or {}
    if not isinstance(given, dict):
        raise bad_request(
            "The 'userAssignedIdentities' property must be an object.",
            target="identity.userAssignedIdentities",
        )
    if ("userassigned" in parts) != bool(given):
        raise bad_request(
            "The identity type 'UserAssigned' and the 'userAssignedIdentities' property must "
            "be given together.",
            code="InvalidIdentityValues",
            target="identity",
        )
    out: dict[str, Any] = {"type": kind}
    if "systemassigned" in parts:
        out["principalId"] = str(uuid.uuid5(_NAMESPACE, f"system:{emu.new_id()}"))
        out["tenantId"] = emu.tenant_id
    if given:
        out["userAssignedIdentities"] = {}
        for identity_id, value in given.items():
            if not _IDENTITY_ID.match(str(identity_id)) or value not in (None, {}):
                raise bad_request(
                    f"Invalid value for the identities '{identity_id}'. The "
                    "'userAssignedIdentities' property keys should be the resource ids of "
                    "user-assigned identities, and their values empty json objects or null.",
                    code="InvalidIdentityValues",
                    target="identity.userAssignedIdentities",
                )
            principal, client = principal_and_client_id(str(identity_id))
            out["userAssignedIdentities"][identity_id] = {
                "principalId": principal,
                "clientId": client,
            }
    return out


def _key(emu: Emulator) -> bytes:
    state = emu.modules.setdefault("identity", {})
    if "key" not in state:
        state["key"] = secrets.token_bytes(32)
    key: bytes = state["key"]
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(emu: Emulator, identity_id: str, resource: str) -> dict[str, Any]:
    """A signed token for ``identity_id`` and audience ``resource``, as IMDS answers it."""
    now = emu.now()
    principal, client = principal_and_client_id(identity_id)
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{emu.tenant_id}/",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + TOKEN_LIFETIME).timestamp()),
        "oid": principal,
        "appid": client,
        "xms_mirid": identity_id,
    }
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_key(emu), f"{head}.{body}".encode(), hashlib.sha256).digest())
    seconds = str(int(TOKEN_LIFETIME.total_seconds()))
    return {
        "access_token": f"{head}.{body}.{signature}",
        "client_id": client,
        "expires_in": seconds,
        "expires_on": str(claims["exp"]),
        "ext_expires_in": seconds,
        "not_before": str(claims["nbf"]),
        "resource": resource,
        "token_type": "Bearer",
    }


def verify(emu: Emulator, token: str, audience: str) -> dict[str, Any] | None:
    """The claims of a valid token for ``audience`` (signed here, unexpired); else None."""
    if token == APP_PRINCIPAL_TOKEN:
        return {"aud": audience, "oid": "app", "xms_mirid": "the app's own identity"}
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, signature = parts
    wanted = hmac.new(_key(emu), f"{head}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(signature), wanted):
            return None
        claims: dict[str, Any] = json.loads(_unb64(body))
    except ValueError:
        return None
    now = emu.now().timestamp()
    if str(claims.get("aud", "")).rstrip("/") != audience.rstrip("/"):
        return None
    if not int(claims.get("nbf", 0)) <= now < int(claims.get("exp", 0)):
        return None
    return claims


def bearer_claims(emu: Emulator, headers: Headers, audience: str) -> dict[str, Any]:
    """The caller's claims from ``Authorization: Bearer``; 401 as Azure answers without one."""
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        raise ArmError(
            401,
            "Unauthorized",
            "The request authorization header is missing: send 'Authorization: Bearer <token>' "
            f"with an Entra ID token for {audience}.",
        )
    claims = verify(emu, auth[7:].strip(), audience)
    if claims is None:
        raise ArmError(
            401,
            "Unauthorized",
            f"The bearer token is invalid or expired, or not issued for {audience}.",
        )
    return claims


def _imds_error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


def imds(
    emu: Emulator, vm_id: str, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """IMDS's answer to a GET from inside ``vm_id``: (HTTP status, JSON body)."""
    split = urllib.parse.urlsplit(url)
    if split.hostname != IMDS_HOST or split.path.rstrip("/") != TOKEN_PATH:
        return _imds_error(404, "not_found", f"The path {split.path} is not served here.")
    if {k.lower(): v for k, v in headers.items()}.get("metadata", "").lower() != "true":
        return _imds_error(400, "invalid_request", "Required metadata header not specified")
    query = {k.lower(): v for k, v in urllib.parse.parse_qsl(split.query)}
    if not query.get("api-version"):
        return _imds_error(400, "invalid_request", "Required query variable 'api-version' missing")
    resource = query.get("resource", "")
    if not resource:
        return _imds_error(400, "invalid_request", "Required query variable 'resource' missing")
    doc = emu.store.get(vm_id) or {}
    held = ((doc.get("identity") or {}).get("userAssignedIdentities") or {}).items()
    choice = [
        identity_id
        for identity_id, ids in held
        if _chosen(query, identity_id, ids or {}) is not False
    ]
    named = any(k in query for k in ("client_id", "object_id", "msi_res_id", "mi_res_id"))
    if not choice or (not named and len(choice) > 1):
        return _imds_error(400, "invalid_request", "Identity not found")
    return 200, issue_token(emu, choice[0], resource)


def _chosen(query: dict[str, str], identity_id: str, ids: dict[str, Any]) -> bool | None:
    """Whether the query names this identity (None: it names none, so any single one)."""
    checks = (
        ("client_id", str(ids.get("clientId", ""))),
        ("object_id", str(ids.get("principalId", ""))),
        ("msi_res_id", identity_id),
        ("mi_res_id", identity_id),
    )
    for key, value in checks:
        if key in query:
            return query[key].lower() == value.lower()
    return None
