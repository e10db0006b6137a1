"""The retention run: gather what uses which version, plan, then deprecate and delete.

One orchestration per run (the daily timer or ``POST /api/retention/runs``). It reads the
catalogue's policies, every image's versions, every catalogue host pool's ``vmTemplate`` and
session hosts, the VMs in the session hosts' and the build resource groups (which VM runs which
version) and the tagged leftovers there; plans with the pure planner
(:mod:`shared.domain.retention`); and, unless ``dry_run``, carries the plan out one activity per
change: deprecations, version deletions (waiting until each is gone), then leftovers in delete
order (VMs before their NICs and disks). It ends by publishing
``ImageFactory.RetentionCompleted``. Every step is idempotent and re-checks its target, so a
replay after a host restart, a repeated run or a concurrent deletion by someone else changes
nothing twice. When the usage of any host pool could not be read, no version is deprecated or
deleted (a version in use must never go); leftovers are still cleaned. docs/retention.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators._flow import Flow, StepFailedError, call, now
from orchestrators.wait import wait
from shared import names
from shared.domain.resources import (
    GALLERY_VERSION_TYPE,
    TAG_BUILD_ID,
    TAG_BUILT,
    TAG_PINNED_RINGS,
    TAG_RETAIN_UNTIL,
    TAG_STATE_AT,
    TAG_VALIDATION_ID,
    parse_resource_id,
    tag_value,
)
from shared.domain.retention import (
    Action,
    ImagePlan,
    LeftoverDecision,
    LeftoverResource,
    RegionFootprint,
    RetentionPolicy,
    Usage,
    UsageKind,
    VersionDecision,
    VersionFacts,
    delete_rank,
    plan_image,
    plan_leftovers,
)
from shared.domain.versions import state_from_tags
from shared.errors import TemporaryError

bp = df.Blueprint()

DELETE_DEADLINE = timedelta(hours=2)


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def version_facts(raw: Mapping[str, Any]) -> VersionFacts:
    """A listed version (retention_list_versions) as planner input."""
    tags: Mapping[str, str] = raw.get("tags") or {}
    size = float(raw.get("size_gb") or 0.0)
    return VersionFacts(
        name=str(raw["name"]),
        id=str(raw["id"]),
        state=state_from_tags(tags),
        state_at=_instant(tag_value(tags, TAG_STATE_AT)),
        built=_instant(tag_value(tags, TAG_BUILT)),
        end_of_life=_instant(raw.get("end_of_life")),
        block_deletion_before_end_of_life=bool(raw.get("block_deletion_before_end_of_life")),
        exclude_from_latest=_excluded_everywhere(raw),
        provisioning_state=raw.get("provisioning_state"),
        regions=tuple(
            RegionFootprint(str(r["name"]), int(r.get("replicas") or 1), size)
            for r in raw.get("regions") or []
        ),
    )


def _excluded_everywhere(raw: Mapping[str, Any]) -> bool:
    """Excluded from latest in every region (a region's own flag wins over the version's)."""
    default = bool(raw.get("exclude_from_latest"))
    flags = [r.get("exclude_from_latest") for r in raw.get("regions") or []]
    return all(default if f is None else bool(f) for f in flags) if flags else default


def usages_of(definition_id: str, refs: Iterable[tuple[str, str, str]]) -> list[Usage]:
    """The usages (kind, by, gallery image or version id) that name this image definition."""
    wanted = definition_id.lower()
    found: list[Usage] = []
    for kind, by, ref in refs:
        arm = parse_resource_id(ref)
        if arm is None or len(arm.names) < 2:
            continue
        definition = str(arm) if len(arm.names) == 2 else str(arm).rsplit("/versions/", 1)[0]
        if definition.lower() != wanted:
            continue
        version = arm.names[2] if arm.is_type(GALLERY_VERSION_TYPE) else None
        found.append(Usage(UsageKind(kind), by, version))
    return found


def _vm_ref(vm: Mapping[str, Any]) -> str | None:
    image_id = vm.get("image_id")
    if not image_id:
        return None
    arm = parse_resource_id(str(image_id))
    if arm is None or "galleries" not in [t.lower() for t in arm.types]:
        return None
    exact = vm.get("exact_version")
    if len(arm.names) == 2 and exact:
        return f"{image_id}/versions/{exact}"  # created from "latest": Azure records which
    return str(image_id)


def _group_of(resource_id: str) -> tuple[str, str] | None:
    arm = parse_resource_id(resource_id)
    return (arm.subscription_id.lower(), arm.resource_group.lower()) if arm else None


def _safe(context: Any, name: str, payload: dict[str, Any], errors: list[str]) -> Flow:
    """Call an activity; a failure (after the usual retries) is recorded and returns None."""
    try:
        result = yield from call(context, name, payload)
        return result
    except (StepFailedError, TemporaryError) as error:
        errors.append(f"{name} {payload}: {error}")
        return None


def _status(context: Any, run_id: str, phase: str, **extra: Any) -> None:
    context.set_custom_status(
        {"run_id": run_id, "phase": phase, "updated": now(context).isoformat(), **extra}
    )


def _gather_usage(
    context: Any, policies: dict[str, Any], args: dict[str, Any], errors: list[str]
) -> Flow:
    """Host pool templates, session hosts and every VM's image: (refs, complete, vms, groups)."""
    refs: list[tuple[str, str, str]] = []
    complete = True
    session_vms: set[str] = set()
    sub = str(policies["subscription_id"]).lower()
    groups: set[tuple[str, str]] = {(sub, g.lower()) for g in policies["build_resource_groups"]}
    for pool in policies["host_pools"]:
        found = yield from _safe(
            context, names.ACT_LIST_HOST_POOL_USAGE, {"host_pool": pool}, errors
        )
        if found is None:
            complete = False
            continue
        if not found["exists"]:
            errors.append(f"host pool {pool} was not found: nothing in it can use a version")
            continue
        refs += [
            (UsageKind.HOST_POOL_TEMPLATE.value, found["id"], r) for r in found["template_refs"]
        ]
        hosts = yield from _safe(
            context, names.ACT_LIST_SESSION_HOST_USAGE, {"host_pool_id": found["id"]}, errors
        )
        if hosts is None:
            complete = False
            continue
        for vm in hosts["vms"]:
            session_vms.add(str(vm).lower())
            where = _group_of(str(vm))
            if where:
                groups.add(where)
    vms: list[dict[str, Any]] = []
    for subscription, group in sorted(groups):
        listed = yield from _safe(
            context,
            names.ACT_LIST_VMS,
            {"subscription_id": subscription, "resource_group": group},
            errors,
        )
        if listed is None:
            complete = False
            continue
        vms += listed["vms"]
    for vm in vms:
        ref = _vm_ref(vm)
        if ref:
            kind = UsageKind.SESSION_HOST if str(vm["id"]).lower() in session_vms else UsageKind.VM
            refs.append((kind.value, str(vm["id"]), ref))
    for running in args.get("orchestrations") or []:
        for ref in running.get("refs") or []:
            refs.append((UsageKind.ORCHESTRATION.value, str(running.get("instance")), str(ref)))
    return refs, complete, vms, sorted(groups)


def _plan_images(
    context: Any,
    policies: dict[str, Any],
    refs: list[tuple[str, str, str]],
    usage_complete: bool,
    at: datetime,
    errors: list[str],
) -> Flow:
    plans: list[tuple[dict[str, Any], ImagePlan]] = []
    states: dict[str, str | None] = {}
    for image in policies["images"]:
        listed = yield from _safe(
            context,
            names.ACT_LIST_RETENTION_VERSIONS,
            {k: image[k] for k in ("resource_group", "gallery", "definition")},
            errors,
        )
        if listed is None or not listed["exists"]:
            why = (
                f"image definition {image['definition_id']} is not in the gallery"
                if listed is not None
                else "its versions could not be listed"
            )
            plans.append((image, ImagePlan(image["image"], (), refused=why)))
            continue
        raw = listed["versions"]
        facts = [version_facts(v) for v in raw]
        states.update({f.id: f.state.value if f.state else None for f in facts})
        usages = usages_of(image["definition_id"], refs)
        for v in raw:
            rings = tag_value(v.get("tags") or {}, TAG_PINNED_RINGS)
            if rings:
                usages.append(Usage(UsageKind.PINNED_RING, rings, str(v["name"])))
        plan = plan_image(image["image"], facts, usages, RetentionPolicy(**image["policy"]), at)
        if not usage_complete and plan.refused is None:
            plan = ImagePlan(
                plan.image,
                plan.decisions,
                refused="the usage of some host pool or VM could not be read: no version is "
                "deprecated or deleted in this run",
            )
        plans.append((image, plan))
    return plans, states


def _leftover_policy(policies: dict[str, Any]) -> RetentionPolicy:
    """The most patient values any image asks for (leftovers are not per image)."""
    images = policies["images"] or [{"policy": {}}]
    return RetentionPolicy(
        retained_vm_days=max(int(i["policy"].get("retained_vm_days", 7)) for i in images),
        orphan_min_age_hours=max(int(i["policy"].get("orphan_min_age_hours", 24)) for i in images),
    )


def _leftover_resources(
    vms: list[dict[str, Any]], others: list[dict[str, Any]]
) -> list[LeftoverResource]:
    out = [
        LeftoverResource(
            id=str(v["id"]),
            type="Microsoft.Compute/virtualMachines",
            tags=v.get("tags") or {},
            created=_instant(v.get("created")),
            power_state=v.get("power_state"),
        )
        for v in vms
        if any(str(k).lower().startswith("imagefactory:") for k in (v.get("tags") or {}))
    ]
    out += [
        LeftoverResource(
            id=str(r["id"]),
            type=str(r["type"]),
            tags=r.get("tags") or {},
            created=_instant(r.get("created")),
        )
        for r in others
    ]
    return out


def _tag_for(decision: LeftoverDecision, tags: Mapping[str, str]) -> tuple[str, str]:
    for key in (TAG_VALIDATION_ID, TAG_BUILD_ID, TAG_RETAIN_UNTIL):
        value = tag_value(tags, key)
        if value is not None:
            return key, value
    return TAG_RETAIN_UNTIL, ""


def _apply_versions(
    context: Any,
    plans: list[tuple[dict[str, Any], ImagePlan]],
    facts_state: Mapping[str, str | None],
    interval: timedelta,
    at: datetime,
    errors: list[str],
) -> Flow:
    outcomes: dict[str, dict[str, Any]] = {}
    deleting: list[VersionDecision] = []
    for _image, plan in plans:
        if plan.refused:
            continue
        for decision in plan.decisions:
            if decision.action is Action.KEEP:
                continue
            expected = facts_state.get(decision.id)
            if decision.deprecates:
                assert decision.end_of_life is not None
                result = yield from _safe(
                    context,
                    names.ACT_DEPRECATE_VERSION,
                    {
                        "version_id": decision.id,
                        "expected_state": expected,
                        "end_of_life": decision.end_of_life.isoformat(),
                        "at": at.isoformat(),
                        "reason": decision.reason,
                    },
                    errors,
                )
            else:
                result = yield from _safe(
                    context,
                    names.ACT_DELETE_VERSION,
                    {"version_id": decision.id, "expected_state": expected},
                    errors,
                )
                if result and result.get("deleted") and not result.get("already_gone"):
                    deleting.append(decision)
            outcomes[decision.id] = result or {"error": True}
    deadline = now(context) + DELETE_DEADLINE
    for decision in deleting:
        try:
            yield from wait(
                context,
                names.ACT_GET_RESOURCE_STATE,
                {"resource_id": decision.id},
                "gone",
                interval=interval,
                deadline=deadline,
                what=f"deleting version {decision.id}",
            )
        except StepFailedError as error:
            errors.append(str(error))
            outcomes[decision.id] = {"deleted": False, "error": str(error)}
    return outcomes


def _apply_leftovers(
    context: Any,
    decisions: tuple[LeftoverDecision, ...],
    resources: Mapping[str, LeftoverResource],
    interval: timedelta,
    errors: list[str],
) -> Flow:
    outcomes: dict[str, dict[str, Any]] = {}
    doomed = [d for d in decisions if d.delete]
    deadline = now(context) + DELETE_DEADLINE
    for rank in sorted({delete_rank(d.type) for d in doomed}):
        batch = [d for d in doomed if delete_rank(d.type) == rank]
        started: list[LeftoverDecision] = []
        for decision in batch:
            key, value = _tag_for(decision, resources[decision.id].tags)
            result = yield from _safe(
                context,
                names.ACT_DELETE_LEFTOVER,
                {"resource_id": decision.id, "tag": key, "value": value},
                errors,
            )
            outcomes[decision.id] = result or {"error": True}
            if result and result.get("deleted") and not result.get("already_gone"):
                started.append(decision)
        for decision in started:
            try:
                yield from wait(
                    context,
                    names.ACT_GET_RESOURCE_STATE,
                    {"resource_id": decision.id},
                    "gone",
                    interval=interval,
                    deadline=deadline,
                    what=f"deleting {decision.id}",
                )
            except StepFailedError as error:
                errors.append(str(error))
                outcomes[decision.id] = {"deleted": False, "error": str(error)}
    return outcomes


def summarise(
    run_id: str,
    dry_run: bool,
    plans: list[tuple[dict[str, Any], ImagePlan]],
    leftovers: tuple[LeftoverDecision, ...],
    version_outcomes: Mapping[str, Mapping[str, Any]],
    leftover_outcomes: Mapping[str, Mapping[str, Any]],
    unknown: list[str],
    errors: list[str],
    usage_complete: bool,
) -> dict[str, Any]:
    """The run's result: per image plan and outcome, leftovers, counts and freed storage."""
    images: list[dict[str, Any]] = []
    counts = {"kept": 0, "deprecated": 0, "deleted": 0, "already_gone": 0, "skipped": 0}
    freed: dict[str, float] = {}
    for _image, plan in plans:
        entry = plan.to_dict()
        rows = entry["decisions"]
        assert isinstance(rows, list)
        for row in rows:
            outcome = version_outcomes.get(str(row["id"]))
            row["outcome"] = dict(outcome) if outcome is not None else None
            action = Action(row["action"])
            if action is Action.KEEP or plan.refused:
                counts["kept"] += 1
                continue
            if dry_run:
                counts["deleted" if action is Action.DELETE else "deprecated"] += 1
                continue
            if (
                outcome is None
                or outcome.get("error")
                or outcome.get("skipped")
                or outcome.get("refused")
            ):
                counts["skipped"] += 1
            elif outcome.get("already_gone"):
                counts["already_gone"] += 1
            elif action is Action.DELETE:
                counts["deleted"] += 1
            else:
                counts["deprecated"] += 1
            if (
                action is Action.DELETE
                and outcome
                and outcome.get("deleted")
                and not outcome.get("already_gone")
            ):
                for region, gb in dict(row["freed_gb"]).items():
                    freed[region] = freed.get(region, 0.0) + float(gb)
        if dry_run and not plan.refused:
            for region, gb in plan.freed_gb_by_region.items():
                freed[region] = freed.get(region, 0.0) + gb
        images.append(entry)
    leftover_rows = []
    removed = 0
    for decision in leftovers:
        row = decision.to_dict()
        outcome = leftover_outcomes.get(decision.id)
        row["outcome"] = dict(outcome) if outcome is not None else None
        if decision.delete and (dry_run or (outcome and outcome.get("deleted"))):
            removed += 1
        leftover_rows.append(row)
    counts["leftovers_removed"] = removed
    return {
        "run_id": run_id,
        "dry_run": dry_run,
        "usage_complete": usage_complete,
        "counts": counts,
        "freed_gb_by_region": {r: round(g, 3) for r, g in sorted(freed.items())},
        "freed_gb": round(sum(freed.values()), 3),
        "images": images,
        "leftovers": leftover_rows,
        "unknown_images": unknown,
        "errors": errors,
    }


@bp.orchestration_trigger(context_name="context", orchestration=names.ORCH_RETENTION)
def retention_run(context: df.DurableOrchestrationContext) -> Flow:
    """Plan retention for the catalogue's images and, unless ``dry_run``, carry it out."""
    args: dict[str, Any] = context.get_input() or {}
    run_id = str(args.get("run_id") or context.instance_id)
    dry_run = bool(args.get("dry_run"))
    interval = timedelta(seconds=int(args.get("poll_seconds") or 15))
    at = now(context)
    errors: list[str] = []
    _status(context, run_id, "policies", dry_run=dry_run)
    policies = yield from call(context, names.ACT_RETENTION_POLICY, {"images": args.get("images")})
    _status(context, run_id, "usage", dry_run=dry_run)
    refs, usage_complete, vms, groups = yield from _gather_usage(context, policies, args, errors)
    _status(context, run_id, "plan", dry_run=dry_run)
    plans, states = yield from _plan_images(context, policies, refs, usage_complete, at, errors)
    others: list[dict[str, Any]] = []
    for subscription, group in groups:
        listed = yield from _safe(
            context,
            names.ACT_LIST_LEFTOVERS,
            {"subscription_id": subscription, "resource_group": group},
            errors,
        )
        others += (listed or {}).get("resources") or []
    resources = _leftover_resources(vms, others)
    leftovers = plan_leftovers(
        resources,
        running_instances=[str(r.get("instance")) for r in args.get("orchestrations") or []]
        + [str(i) for i in args.get("running_instances") or []],
        policy=_leftover_policy(policies),
        now=at,
    )
    version_outcomes: dict[str, dict[str, Any]] = {}
    leftover_outcomes: dict[str, dict[str, Any]] = {}
    if not dry_run:
        _status(context, run_id, "apply", dry_run=False)
        version_outcomes = yield from _apply_versions(context, plans, states, interval, at, errors)
        leftover_outcomes = yield from _apply_leftovers(
            context, leftovers, {r.id: r for r in resources}, interval, errors
        )
    result = summarise(
        run_id,
        dry_run,
        plans,
        leftovers,
        version_outcomes,
        leftover_outcomes,
        list(policies["unknown"]),
        errors,
        usage_complete,
    )
    if not dry_run:
        _status(context, run_id, "report", dry_run=False)
        yield from _safe(
            context,
            names.ACT_PUBLISH_EVENT,
            {
                "event_type": names.EG_RETENTION_COMPLETED,
                "subject": f"retention/{run_id}",
                "event_id": f"retention-{run_id}",
                "data": {
                    "run_id": run_id,
                    "counts": result["counts"],
                    "freed_gb": result["freed_gb"],
                    "freed_gb_by_region": result["freed_gb_by_region"],
                    "errors": len(errors),
                },
            },
            errors,
        )
        result["errors"] = errors
    _status(context, run_id, "done", dry_run=dry_run, counts=result["counts"])
    return result
