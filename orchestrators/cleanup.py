"""Clean-up: delete every temporary resource a build left (VM, NIC, disks, snapshots).

Finds the resources by the build's tag rather than by memory, so it also works for a build
that failed half-way or was terminated (the janitor timer starts it for those), and it is
idempotent: running it twice deletes nothing twice. It waits until they are really gone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, call, now
from orchestrators.wait import wait
from shared import names

bp = df.Blueprint()

# Delete order: VMs first (their NICs and OS disks go with them), then what they held.
_ORDER = ("virtualmachines", "networkinterfaces", "disks", "snapshots")


def _rank(resource: dict[str, Any]) -> int:
    rtype = str(resource.get("type", "")).rsplit("/", 1)[-1].lower()
    return _ORDER.index(rtype) if rtype in _ORDER else len(_ORDER)


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_CLEANUP_BUILD)
def cleanup_build(context: df.DurableOrchestrationContext) -> Flow:
    """Delete a build's tagged resources in dependency order and wait until none is left."""
    args: dict[str, Any] = context.get_input() or {}
    build_id = args["build_id"]
    interval = timedelta(seconds=int(args.get("poll_seconds") or 10))
    # Event-first: a ResourceDeleteSuccess ends each wait; 0 (or absent): poll every interval.
    safety = timedelta(seconds=int(args.get("safety_poll_seconds") or 0))
    deadline = now(context) + timedelta(hours=1)
    query: dict[str, Any] = {"resource_group": args.get("resource_group"), "build_id": build_id}
    if args.get("image"):
        query["image"] = args["image"]
    deleted: list[str] = []
    for _round in range(3):
        listed = yield from call(context, names.ACT_LIST_BUILD_RESOURCES, query)
        resources = sorted(listed.get("resources") or [], key=_rank)
        if not resources:
            break
        for group in range(len(_ORDER) + 1):
            batch = [r for r in resources if _rank(r) == group]
            if not batch:
                continue
            context.set_custom_status(
                {"phase": "cleanup", "deleting": batch[0].get("type"), "count": len(batch)}
            )
            for resource in batch:
                yield from call(
                    context,
                    names.ACT_DELETE_RESOURCE,
                    {"resource_id": resource["id"], "build_id": build_id},
                )
            for resource in batch:
                yield from wait(
                    context,
                    names.ACT_GET_RESOURCE_STATE,
                    {"resource_id": resource["id"]},
                    "gone",
                    interval=interval,
                    deadline=deadline,
                    what=f"deleting {resource['id']}",
                    resource_id=resource["id"],
                    event_kind=names.WAIT_KIND_DELETE,
                    safety_interval=safety,
                )
                deleted.append(resource["id"])
    remaining = yield from call(context, names.ACT_LIST_BUILD_RESOURCES, query)
    left = [r["id"] for r in remaining.get("resources") or []]
    return {"build_id": build_id, "deleted": deleted, "left": left}
