"""Long-running operations: ARM's Azure-AsyncOperation / Location protocol.

``Emulator.begin_lro`` answers the initial request (201/202 with ``Azure-AsyncOperation``,
``Location`` and ``Retry-After``) and schedules the completion in host time. The operation
monitors are served here:

- ``GET /subscriptions/{sub}/providers/{ns}/locations/{loc}/operations/{id}``:
  ``{"name", "status": "InProgress"|"Succeeded"|"Failed", "startTime", "endTime", "error"}``
  (with ``properties.output`` carrying an operation's result, as Compute does);
- ``GET .../locations/{loc}/operationResults/{id}``: 202 while running; then 200 with the
  result body (for POST actions that return one, e.g. runCommand), 204 without one, or the
  operation's error status and body when it failed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from emulator.arm import ArmError, Request, Response
from emulator.events import iso
from emulator.store import parse_resource_id

if TYPE_CHECKING:
    from emulator.core import Emulator

log = logging.getLogger(__name__)

OPERATION_ROUTE = "/subscriptions/{sub}/providers/{provider}/locations/{location}/operations/{opid}"
RESULT_ROUTE = (
    "/subscriptions/{sub}/providers/{provider}/locations/{location}/operationResults/{opid}"
)


@dataclass
class Operation:
    id: str
    resource_id: str
    op: str
    provider: str
    location: str
    subscription: str
    api_version: str
    status: str
    start: datetime
    due: datetime
    retry_after: int
    location_result: bool
    correlation_id: str
    method: str
    url: str
    end: datetime | None = None
    error: ArmError | None = None
    result: Any = None

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.id,
            "status": self.status,
            "startTime": iso(self.start),
        }
        if self.end is not None:
            body["endTime"] = iso(self.end)
        if self.error is not None:
            body["error"] = self.error.error_body()
        if self.status == "Succeeded" and self.result is not None:
            body["properties"] = {"output": self.result}
        return body


def retry_after_for(duration: timedelta) -> int:
    """A polite polling interval for an operation of this length (1..60 s)."""
    return max(1, min(60, math.ceil(duration.total_seconds() / 10)))


class LroManager:
    """Operation records and their monitor routes."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self.operations: dict[str, Operation] = {}
        emu.route("GET", OPERATION_ROUTE, op="{provider}/locations/operations/read")(
            self._get_status
        )
        emu.route("GET", RESULT_ROUTE, op="{provider}/locations/operationResults/read")(
            self._get_result
        )

    def reset(self) -> None:
        self.operations.clear()

    def target_of(self, opid: str) -> str | None:
        o = self.operations.get(opid.lower())
        return o.resource_id if o else None

    def begin(
        self,
        resource_id: str,
        *,
        duration: timedelta,
        on_complete: Callable[[], Any] | None,
        op: str,
        status_code: int = 201,
        body: Any = None,
        fail: ArmError | None = None,
        location_result: bool = False,
        location: str | None = None,
        on_fail: Callable[[ArmError], None] | None = None,
        retry_after: int | None = None,
        publish_event: bool = False,
        _manual: dict[str, OperationHandle] | None = None,
    ) -> Response:
        emu = self._emu
        req = emu.current_request()
        rid = parse_resource_id(resource_id)
        provider = rid.provider or "Microsoft.Resources"
        if location is None:
            res = emu.store.get(resource_id)
            parent = emu.store.get(rid.parent) if rid.parent else None
            location = str(
                (res or {}).get("location") or (parent or {}).get("location") or "global"
            )
        loc = location.replace(" ", "").lower()
        sub = rid.subscription or (req.subscription if req else None) or "-"
        api_version = req.api_version if req else "2024-01-01"
        now = emu.clock.now()
        if fail is None:
            fail = emu.faults.lro_failure(op, resource_id)
        opid = emu.new_id()
        ra = retry_after if retry_after is not None else retry_after_for(duration)
        ctx = emu.operation_context()
        record = Operation(
            id=opid,
            resource_id=resource_id,
            op=op,
            provider=provider,
            location=loc,
            subscription=sub,
            api_version=api_version,
            status="InProgress",
            start=now,
            due=now + duration,
            retry_after=ra,
            location_result=location_result,
            correlation_id=ctx.get("correlation_id", ""),
            method=ctx.get("method", ""),
            url=ctx.get("url", ""),
        )
        self.operations[opid.lower()] = record

        def complete() -> None:
            self._complete(record, on_complete, fail, on_fail, publish_event)

        if _manual is not None:
            _manual["handle"] = OperationHandle(self, record, publish_event, fail)
        else:
            emu.schedule(duration, complete, f"lro:{op}:{resource_id}")
        base = emu.base_url
        prefix = f"{base}/subscriptions/{sub}/providers/{provider}/locations/{loc}"
        headers = {
            "Azure-AsyncOperation": f"{prefix}/operations/{opid}?api-version={api_version}",
            "Location": f"{prefix}/operationResults/{opid}?api-version={api_version}",
            "Retry-After": str(ra),
        }
        return Response(status_code, body, headers)

    def begin_manual(
        self,
        resource_id: str,
        *,
        op: str,
        status_code: int = 202,
        body: Any = None,
        location_result: bool = False,
        location: str | None = None,
        retry_after: int = 10,
        publish_event: bool = False,
    ) -> tuple[Response, OperationHandle]:
        """An operation that ends when the caller says so (``handle.succeed`` / ``.fail``)."""
        holder: dict[str, OperationHandle] = {}
        resp = self.begin(
            resource_id,
            duration=timedelta(days=3650),
            on_complete=None,
            op=op,
            status_code=status_code,
            body=body,
            location_result=location_result,
            location=location,
            retry_after=retry_after,
            publish_event=publish_event,
            _manual=holder,
        )
        return resp, holder["handle"]

    def _complete(
        self,
        record: Operation,
        on_complete: Callable[[], Any] | None,
        fail: ArmError | None,
        on_fail: Callable[[ArmError], None] | None,
        publish_event: bool,
    ) -> None:
        emu = self._emu
        error = fail
        result: Any = None
        with emu.operation_scope(record.correlation_id, record.method, record.url):
            if error is None and on_complete is not None:
                try:
                    result = on_complete()
                except ArmError as e:
                    error = e
            if error is not None and on_fail is not None:
                on_fail(error)
            record.end = emu.clock.now()
            if error is not None:
                record.status = "Failed"
                record.error = error
            else:
                record.status = "Succeeded"
                record.result = result
            if publish_event:
                self._publish(record)

    def _publish(self, record: Operation) -> None:
        ev = self._emu.events
        status = record.status
        opl = record.op.lower()
        if opl.endswith("/delete"):
            ev.resource_delete(record.resource_id, operation_name=record.op, status=status)
        elif opl.endswith("/action"):
            ev.resource_action(record.resource_id, record.op, status=status)
        else:
            ev.resource_write(record.resource_id, operation_name=record.op, status=status)

    def _lookup(self, req: Request) -> Operation:
        o = self.operations.get(req.params["opid"].lower())
        if o is None:
            raise ArmError(
                404,
                "NotFound",
                f"The operation '{req.params['opid']}' was not found.",
            )
        return o

    def _retry_headers(self, o: Operation, req: Request) -> dict[str, str]:
        return {"Retry-After": str(o.retry_after)}

    def _get_status(self, req: Request) -> Response:
        o = self._lookup(req)
        headers = self._retry_headers(o, req) if o.status == "InProgress" else {}
        return Response(200, o.status_body(), headers)

    def _get_result(self, req: Request) -> Response:
        o = self._lookup(req)
        if o.status == "InProgress":
            headers = self._retry_headers(o, req)
            headers["Location"] = f"{self._emu.base_url}{req.path}?api-version={req.api_version}"
            return Response(202, None, headers)
        if o.error is not None:
            raise ArmError(
                o.error.status if o.error.status >= 400 else 500,
                o.error.code,
                o.error.message,
                details=o.error.details,
            )
        if o.location_result and o.result is not None:
            return Response(200, o.result)
        return Response(204)


class OperationHandle:
    """Ends a manual operation (call under ``Emulator.lock``, e.g. from scheduled work)."""

    def __init__(
        self, manager: LroManager, record: Operation, publish_event: bool, fail: ArmError | None
    ) -> None:
        self._manager = manager
        self.record = record
        self._publish_event = publish_event
        self.injected_failure = fail  # an lro_failure fault chosen when the operation began

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def done(self) -> bool:
        return self.record.status != "InProgress"

    def succeed(self, result: Any = None) -> None:
        if self.done:
            return
        err = self.injected_failure
        self._manager._complete(self.record, (lambda: result), err, None, self._publish_event)

    def fail(self, error: ArmError) -> None:
        if self.done:
            return
        self._manager._complete(self.record, None, error, None, self._publish_event)
