"""Autoscale of a host pool: new session hosts from the pool's ``vmTemplate``, image resolved now.

AVD's dynamic autoscaling (and any scale-out that follows the host pool's template) creates
session hosts from the template's image: ``customImageId`` (an exact gallery version, or an
image definition, which means its *latest* version), or a marketplace
``galleryImagePublisher/Offer/SKU`` (latest). "Latest" is resolved at the instant of the
scale-out in the pool's region (:func:`emulator.gallery.latest_version`: the highest Succeeded
version replicated there that is not excluded from latest, a region's own
``excludeFromLatest`` winning over the version's), so a change of a version's
``excludeFromLatest``, global or per region, takes effect for the very next scale-out.

``POST /_emulator/autoscale`` with ``{"hostPool": <id>, "count": n}`` scales out now; the
answer lists the hosts and the image each VM got. Report section ``autoscale``.
"""

from __future__ import annotations

import json
from typing import Any

from emulator.arm import ArmError, Request, Response, bad_request
from emulator.core import Emulator


def template_image(template: dict[str, Any]) -> dict[str, Any]:
    """The image reference a scale-out uses (``latest`` where the template does not pin)."""
    custom = template.get("customImageId")
    if isinstance(custom, str) and custom:
        return {"id": custom}
    parts = [template.get(k) for k in ("galleryImagePublisher", "galleryImageOffer")]
    sku = template.get("galleryImageSKU")
    if all(isinstance(p, str) and p for p in [*parts, sku]):
        return {"publisher": parts[0], "offer": parts[1], "sku": sku, "version": "latest"}
    raise bad_request(
        "The host pool's vmTemplate names no image (customImageId or galleryImage*).",
        target="vmTemplate",
    )


def scale_out(emu: Emulator, pool_id: str, count: int) -> list[dict[str, Any]]:
    """Create ``count`` session hosts now from the pool's template (under the lock)."""
    from emulator.avd import register_vm, session_hosts_of
    from emulator.compute import seed_vm

    pool = emu.store.get(pool_id)
    if pool is None:
        raise ArmError(404, "ResourceNotFound", f"The host pool {pool_id} was not found.")
    raw = pool["properties"].get("vmTemplate")
    template = json.loads(raw) if isinstance(raw, str) and raw else {}
    image = template_image(template)
    size = template.get("vmSize")
    size_id = size.get("id") if isinstance(size, dict) else size
    prefix = str(template.get("namePrefix") or pool["name"])[:9]
    parts = str(pool["id"]).split("/")
    sub, rg = parts[2], parts[4]
    state = emu.modules.setdefault("autoscale", {"created": []})
    made: list[dict[str, Any]] = []
    start = len(session_hosts_of(emu, str(pool["id"]))) + len(state["created"])
    for n in range(count):
        name = f"{prefix}-as{start + n}"
        vm = seed_vm(
            emu,
            subscription=sub,
            resource_group=rg,
            name=name,
            location=str(pool["location"]),
            image_reference=image,
            vm_size=str(size_id or "Standard_D4s_v5"),
            security_type=str(template.get("securityType") or "TrustedLaunch"),
        )
        host = register_vm(emu, str(pool["id"]), str(vm["id"]))
        resolved = vm["properties"]["storageProfile"].get("imageReference") or {}
        entry = {
            "time": emu.now_iso(),
            "hostPool": str(pool["id"]),
            "sessionHost": str(host["id"]),
            "vm": str(vm["id"]),
            "template": image,
            "image": resolved.get("exactVersion") or resolved.get("id") or resolved,
        }
        state["created"].append(entry)
        made.append(entry)
    return made


def register(emu: Emulator) -> None:
    def reset() -> None:
        emu.modules["autoscale"] = {"created": []}

    emu.add_resetter(reset)

    @emu.admin_route("POST", "/_emulator/autoscale")
    def post_autoscale(req: Request) -> Response:
        body = req.json_object()
        pool_id = body.get("hostPool")
        count = body.get("count", 1)
        if not isinstance(pool_id, str) or not pool_id.startswith("/subscriptions/"):
            raise bad_request("hostPool must be a host pool resource id.", target="hostPool")
        if not isinstance(count, int) or not 1 <= count <= 100:
            raise bad_request("count must be an integer from 1 to 100.", target="count")
        with emu.lock:
            made = scale_out(emu, pool_id, count)
        return Response(200, {"created": made})

    emu.add_report_section(
        "autoscale", lambda: {"created": list(emu.modules.get("autoscale", {}).get("created", []))}
    )
