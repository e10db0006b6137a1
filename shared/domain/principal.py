"""The caller of an HTTP route: App Service Authentication's ``X-MS-CLIENT-PRINCIPAL`` header.

App Service Authentication (Easy Auth) with Entra ID puts the signed-in principal in the
``X-MS-CLIENT-PRINCIPAL`` header: base64 of JSON ``{"auth_typ", "name_typ", "role_typ",
"claims": [{"typ", "val"}, ...]}``. The front end strips the header from client requests, so the
app may trust it. Pure parsing here; :func:`parse_principal` answers None for a missing or
unreadable header (the caller answers 401).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

HEADER: Final = "X-MS-CLIENT-PRINCIPAL"
MAX_HEADER: Final = 16_384

ROLE_READER: Final = "Reader"
ROLE_OPERATOR: Final = "Operator"
ROLE_APPROVER: Final = "Approver"

_NAME_CLAIMS: Final = (
    "name",
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "upn",
)
_ID_CLAIMS: Final = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a display name, an object id when known, app roles."""

    name: str
    object_id: str | None
    roles: frozenset[str]
    auth_type: str

    def has_role(self, role: str) -> bool:
        return role.lower() in {r.lower() for r in self.roles}

    @property
    def actor(self) -> str:
        """How the caller is recorded on versions and events: the name (an e-mail, usually)."""
        return self.name


def _claims(raw: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if isinstance(item, Mapping):
            typ, val = item.get("typ"), item.get("val")
            if isinstance(typ, str) and isinstance(val, str):
                out.append((typ, val))
    return out


def parse_principal(header: str | None) -> Principal | None:
    """The principal in an ``X-MS-CLIENT-PRINCIPAL`` value, or None when absent or unreadable."""
    if not header or len(header) > MAX_HEADER:
        return None
    text = header.strip()
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        doc = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, Mapping):
        return None
    claims = _claims(doc.get("claims"))
    role_typ = doc.get("role_typ") if isinstance(doc.get("role_typ"), str) else "roles"
    name_typ = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else None
    by_type: dict[str, str] = {}
    for typ, val in claims:
        by_type.setdefault(typ.lower(), val)
    name = None
    for key in ((name_typ,) if name_typ else ()) + _NAME_CLAIMS:
        value = by_type.get(str(key).lower())
        if value and value.strip():
            name = value.strip()
            break
    object_id = next((by_type[k.lower()] for k in _ID_CLAIMS if k.lower() in by_type), None)
    name = name or object_id
    if not name:
        return None
    roles = frozenset(
        val.strip() for typ, val in claims if typ.lower() in {str(role_typ).lower(), "roles"}
    )
    auth = doc.get("auth_typ")
    return Principal(
        name=name[:200],
        object_id=object_id,
        roles=frozenset(r for r in roles if r),
        auth_type=auth if isinstance(auth, str) else "",
    )


def encode_principal(name: str, roles: tuple[str, ...] = (), auth_type: str = "aad") -> str:
    """The header value App Service would send for ``name`` with ``roles`` (tests, the demo)."""
    claims = [{"typ": "name", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    doc = {"auth_typ": auth_type, "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(doc).encode("utf-8")).decode("ascii")
