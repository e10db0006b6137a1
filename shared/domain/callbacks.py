"""Callback notices: which URLs may receive them, how a notice is signed, when it is retried.

A client may name a ``callback_url`` on a request that starts a long operation; when the
operation ends the app POSTs a JSON notice there, signed with HMAC-SHA256 over the exact body
bytes (``X-ImageFactory-Signature: sha256=<hex>``), and retries with back-off. Pure rules here:
the URL check (https only, host on the allow-list, no credentials in the URL), the signature
(and its constant-time check, for receivers and tests) and the retry schedule.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import timedelta
from typing import Final
from urllib.parse import urlsplit

SIGNATURE_HEADER: Final = "X-ImageFactory-Signature"
EVENT_HEADER: Final = "X-ImageFactory-Event"
MAX_URL: Final = 2048
# Waits before the 2nd, 3rd, ... attempt: 30 s doubling, capped at one hour.
FIRST_RETRY: Final = timedelta(seconds=30)
MAX_RETRY: Final = timedelta(hours=1)


def callback_url_problem(url: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why ``url`` may not receive notices, or None when it may.

    An allow-list entry is a host name (any port) or ``host:port`` (that port only); names are
    compared case-insensitively. The URL must be ``https`` and carry no user or password.
    """
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme.lower() != "https":
        return "must be an https:// URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    allowed = {h.strip().lower() for h in allowed_hosts if h.strip()}
    if not allowed:
        return "callbacks are not enabled on this app (CALLBACK_ALLOWED_HOSTS is empty)"
    if host in allowed or (port is not None and f"{host}:{port}" in allowed):
        return None
    return f"host {host!r} is not on the callback allow-list"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_matches(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time comparison)."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"), header.strip().encode("ascii"))


def retry_delay(attempt: int) -> timedelta:
    """How long to wait after failed attempt number ``attempt`` (1-based) before the next."""
    seconds = FIRST_RETRY.total_seconds() * (2 ** max(attempt - 1, 0))
    return timedelta(seconds=min(seconds, MAX_RETRY.total_seconds()))
