"""User connections as Log Analytics records them, and broken images whose connections fail.

Every logon of a simulated user (:mod:`emulator.users`) is a connection: ``Connected`` when the
session opens, ``Failed`` when the host cannot take it. A host fails every connection when a
``session_connection_fails`` flag fault matches it (match keys ``host_pool``, ``host``, ``vm``
and ``image``: the VM's image reference as text, a gallery version id or
``publisher:offer:sku:version``), so a scenario seeds a broken image with::

    faults:
      - {type: flag, kind: session_connection_fails, match: {image: "*/versions/1.0.1"}}

A failed connection counts as a failed logon for the user, who tries again later.

AVD's management API has no connection history; Azure keeps it in the ``WVDConnections`` table
of the Log Analytics workspace the host pool's diagnostics go to. This module serves that
workspace's query API through ARM (``POST .../Microsoft.OperationalInsights/workspaces/{ws}
/api/query``) for the one query shape the app sends: connections and failed connections of one
host pool (``_ResourceId =~ '<pool id>'``) in the request's ``timespan``
(``<start>/<end>``). Other queries are refused with the reason. Report section
``connections``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emulator.arm import Request, Response, bad_request
from emulator.core import Emulator
from emulator.events import iso

WORKSPACE_QUERY = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights"
    "/workspaces/{workspace}/api/query"
)
API_VERSIONS = {"2017-01-01-preview", "2020-08-01"}
_POOL = re.compile(r"_ResourceId\s*=~\s*'([^']+)'", re.IGNORECASE)
LIMIT = 100000


@dataclass
class ConnectionRecord:
    time: datetime
    pool_id: str
    host_id: str
    upn: str
    correlation_id: str
    state: str  # Connected | Failed
    reason: str = ""


@dataclass
class ConnectionLog:
    records: list[ConnectionRecord] = field(default_factory=list)
    count: int = 0  # correlation ids from a counter: the emulator's own id stream stays as is


def connection_log(emu: Emulator) -> ConnectionLog:
    log = emu.modules.get("connections")
    if not isinstance(log, ConnectionLog):
        log = ConnectionLog()
        emu.modules["connections"] = log
    return log


def _image_text(image: dict[str, Any] | None) -> str:
    if not image:
        return ""
    if image.get("id"):
        return str(image["id"])
    return ":".join(str(image.get(k, "")) for k in ("publisher", "offer", "sku", "version"))


def connection_failure(emu: Emulator, host: dict[str, Any]) -> str | None:
    """Why a new connection to this session host fails (a broken image), or None."""
    from emulator.avd import session_host_image

    host_id = str(host["id"])
    pool_name = host_id.split("/hostPools/", 1)[-1].split("/", 1)[0]
    vm_id = str(host["properties"].get("resourceId") or "")
    image = _image_text(session_host_image(emu, host_id))
    if emu.faults.flag(
        "session_connection_fails",
        host_pool=pool_name,
        host=str(host["name"]).rsplit("/", 1)[-1],
        vm=vm_id.rsplit("/", 1)[-1],
        image=image,
    ):
        return (
            "ConnectionFailedClientDisconnect: the session host did not accept the session "
            f"({image})"
        )
    return None


def record_connection(
    emu: Emulator, pool_id: str, host_id: str, upn: str, state: str, reason: str = ""
) -> None:
    log = connection_log(emu)
    log.count += 1
    correlation = f"00000000-0000-4000-8000-{log.count:012d}"
    log.records.append(
        ConnectionRecord(emu.now(), pool_id, host_id, upn, correlation, state, reason)
    )
    if len(log.records) > LIMIT:
        del log.records[: len(log.records) - LIMIT]


def counts(emu: Emulator, pool_id: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(connections, failed) of a pool in ``[start, end)``."""
    wanted = pool_id.rstrip("/").lower()
    hits = [
        r
        for r in connection_log(emu).records
        if r.pool_id.lower() == wanted and start <= r.time < end
    ]
    return len(hits), sum(1 for r in hits if r.state == "Failed")


def _timespan(value: Any) -> tuple[datetime, datetime]:
    if not isinstance(value, str) or "/" not in value:
        raise bad_request("timespan must be '<start>/<end>' (ISO 8601).", target="timespan")
    start_text, end_text = value.split("/", 1)
    try:
        start = datetime.fromisoformat(start_text.replace("Z", "+00:00"))
        end = datetime.fromisoformat(end_text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"timespan {value!r} is not ISO 8601.", target="timespan") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise bad_request("timespan needs time zones.", target="timespan")
    return start, end


def register(emu: Emulator) -> None:
    def reset() -> None:
        emu.modules["connections"] = ConnectionLog()

    emu.add_resetter(reset)

    @emu.route(
        "POST",
        WORKSPACE_QUERY,
        op="Microsoft.OperationalInsights/workspaces/query/read",
        api_versions=API_VERSIONS,
    )
    def query(req: Request) -> Response:
        body = req.json_object()
        text = body.get("query")
        if not isinstance(text, str) or "wvdconnections" not in text.lower():
            raise bad_request(
                "This workspace serves WVDConnections queries of one host pool only.",
                target="query",
            )
        match = _POOL.search(text)
        if match is None:
            raise bad_request("The query must filter _ResourceId =~ '<host pool id>'.")
        start, end = _timespan(body.get("timespan"))
        connections, failed = counts(emu, match.group(1), start, end)
        return Response(
            200,
            {
                "tables": [
                    {
                        "name": "PrimaryResult",
                        "columns": [
                            {"name": "Connections", "type": "long"},
                            {"name": "Failed", "type": "long"},
                        ],
                        "rows": [[connections, failed]],
                    }
                ]
            },
        )

    def report() -> dict[str, Any]:
        records = connection_log(emu).records
        by_pool: dict[str, dict[str, int]] = {}
        for r in records:
            entry = by_pool.setdefault(r.pool_id, {"connections": 0, "failed": 0})
            entry["connections"] += 1
            entry["failed"] += 1 if r.state == "Failed" else 0
        return {
            "byHostPool": by_pool,
            "lastFailures": [
                {"time": iso(r.time), "host": r.host_id, "upn": r.upn, "reason": r.reason}
                for r in records
                if r.state == "Failed"
            ][-20:],
        }

    emu.add_report_section("connections", report)
