"""Timers: the marketplace watch (Azure emits no event for a new marketplace image) and the
janitor that cleans up after builds that were terminated or died without cleaning up.

The watch compares, for every catalogue image built on a marketplace base, the newest
marketplace version with the base version recorded on the image's newest gallery version, and
publishes ``ImageFactory.MarketplaceImagePublished`` for a newer one. It keeps no state of its
own, so a missed or repeated run does no harm: the build queue drops repeated keys.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from shared import names
from shared.app_catalogue import app_catalogue
from shared.azure import compute, eventgrid, gallery
from shared.domain.versions import ImageVersion
from shared.settings import load_settings

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.timers")

RUNNING = {"Running", "Pending"}


@bp.timer_trigger(arg_name="timer", schedule="0 0 * * * *", run_on_startup=False)
def marketplace_watch(timer: func.TimerRequest) -> None:
    """Hourly: publish an event for every marketplace base that has a newer version."""
    settings = load_settings()
    announced: set[tuple[str, str, str, str]] = set()
    for image in app_catalogue(settings).images:
        base = image.marketplace_base()
        if base is None:
            continue
        location = image.build.location or settings.factory_location
        latest = compute.latest_marketplace_version(
            settings, location, base.publisher, base.offer, base.sku
        )
        if latest is None:
            log.warning(
                "no marketplace versions for %s/%s/%s", base.publisher, base.offer, base.sku
            )
            continue
        built = gallery.base_versions_built(
            settings,
            image.gallery.resource_group,
            image.gallery.gallery_name,
            image.gallery.image_definition,
        )
        parsed = [p for p in (ImageVersion.try_parse(v) for v in built) if p is not None]
        newest_built = max(parsed, default=None)
        latest_parsed = ImageVersion.try_parse(latest)
        if latest_parsed is None:
            log.warning("marketplace version %r is not Major.Minor.Patch: skipped", latest)
            continue
        if newest_built is not None and latest_parsed <= newest_built:
            continue
        key = (base.publisher, base.offer, base.sku, latest)
        if key in announced:
            continue
        announced.add(key)
        eventgrid.publish(
            settings,
            names.EG_MARKETPLACE_IMAGE_PUBLISHED,
            f"marketplace/{base.publisher}/{base.offer}/{base.sku}/{latest}",
            {
                "publisher": base.publisher,
                "offer": base.offer,
                "sku": base.sku,
                "version": latest,
                "location": location,
            },
        )
        log.info("published %s %s for %s", names.EG_MARKETPLACE_IMAGE_PUBLISHED, latest, image.name)


@bp.timer_trigger(arg_name="timer", schedule="0 */30 * * * *", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def build_janitor(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Every 30 minutes: clean up resources of builds that no longer run."""
    settings = load_settings()
    build_ids = compute.build_ids_with_resources(settings, settings.factory_resource_group)
    for build_id in sorted(build_ids):
        status = await client.get_status(f"build:{build_id}")
        runtime = getattr(getattr(status, "runtime_status", None), "value", None)
        if runtime in RUNNING:
            continue
        cleanup_id = f"janitor:{build_id}"
        existing = await client.get_status(cleanup_id)
        if getattr(getattr(existing, "runtime_status", None), "value", None) in RUNNING:
            continue
        log.warning("build %s is %s but left resources: cleaning up", build_id, runtime)
        await client.start_new(
            names.ORCH_CLEANUP_BUILD,
            cleanup_id,
            {"resource_group": settings.factory_resource_group, "build_id": build_id},
        )
