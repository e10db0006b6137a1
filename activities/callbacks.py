"""Activity: POST one signed callback notice (one HTTP call; the orchestrator retries).

The body is the notice as canonical JSON; ``X-ImageFactory-Signature: sha256=<hex>`` is the
HMAC-SHA256 of exactly those bytes with ``CALLBACK_SIGNING_SECRET`` (read here, at call time,
never logged, never in the orchestration's history). The URL is checked against the allow-list
again (settings may have changed since the request). Redirects are not followed. The answer is
``{"delivered", "status", "permanent"?, "error"?}``: 2xx delivered; other 4xx (but 408/429)
permanent; anything else (network, 5xx, 408, 429) worth another attempt.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from typing import Any

import azure.durable_functions as df

from activities._registry import registered
from shared import names
from shared.domain.callbacks import EVENT_HEADER, SIGNATURE_HEADER, callback_url_problem, sign
from shared.settings import load_api_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.activities.callbacks")
TIMEOUT_SECONDS = 10.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def notice_bytes(notice: Any) -> bytes:
    return json.dumps(notice, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


@registered(bp, names.ACT_DELIVER_CALLBACK)
def deliver_callback(payload: Any) -> dict[str, Any]:
    """POST the notice to the callback URL, signed; report how it went."""
    settings = load_api_settings()
    url = str((payload or {}).get("url") or "")
    problem = callback_url_problem(url, settings.callback_allowed_hosts)
    if problem is not None or not settings.callback_signing_secret:
        reason = problem or "CALLBACK_SIGNING_SECRET is unset"
        log.warning("callback not sent: %s", reason)
        return {"delivered": False, "permanent": True, "error": reason}
    body = notice_bytes(payload.get("notice"))
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - https only
    request.add_header("Content-Type", "application/json")
    request.add_header(SIGNATURE_HEADER, sign(settings.callback_signing_secret, body))
    request.add_header(EVENT_HEADER, "operation.ended")
    request.add_header("X-ImageFactory-Attempt", str(payload.get("attempt") or 1))
    context = ssl.create_default_context(cafile=settings.callback_ca_bundle)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return {"delivered": True, "status": response.status}
    except urllib.error.HTTPError as exc:
        status = exc.code
        permanent = 400 <= status < 500 and status not in (408, 429)
        return {"delivered": False, "status": status, "permanent": permanent, "error": exc.reason}
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return {"delivered": False, "error": str(getattr(exc, "reason", exc))[:300]}
