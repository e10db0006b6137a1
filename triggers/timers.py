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
from shared.domain.catalogue import CatalogueImage
from shared.domain.versions import ImageVersion
from shared.errors import FactoryError
from shared.settings import Settings, refuse_without_settings
from triggers._common import RUNNING, runtime_status

bp = df.Blueprint()
log = logging.getLogger("imagefactory.triggers.timers")


def _watch_one(settings: Settings, image: CatalogueImage, announced: set[tuple[str, ...]]) -> None:
    base = image.marketplace_base()
    if base is None or not base.follows_latest:
        return  # pinned images are not rebuilt when a newer version appears
    location = image.build.location or settings.factory_location
    latest = compute.latest_marketplace_version(
        settings, location, base.publisher, base.offer, base.sku
    )
    if latest is None:
        log.warning("no marketplace versions for %s", base.urn())
        return
    latest_parsed = ImageVersion.try_parse(latest)
    if latest_parsed is None:
        log.warning("marketplace version %r of %s is not Major.Minor.Patch", latest, base.urn())
        return
    built = gallery.base_versions_built(
        settings,
        image.gallery.resource_group,
        image.gallery.gallery_name,
        image.gallery.image_definition,
    )
    parsed = [p for p in (ImageVersion.try_parse(v) for v in built) if p is not None]
    newest_built = max(parsed, default=None)
    if newest_built is not None and latest_parsed <= newest_built:
        return
    key = (base.publisher.lower(), base.offer.lower(), base.sku.lower(), latest)
    if key in announced:
        return
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


@bp.timer_trigger(arg_name="timer", schedule="0 0 * * * *", run_on_startup=False)
def marketplace_watch(timer: func.TimerRequest) -> None:
    """Hourly: publish an event for every marketplace base that has a newer version."""
    settings = refuse_without_settings(log, "the marketplace watch")
    if settings is None:
        return
    announced: set[tuple[str, ...]] = set()
    failures = 0
    for image in app_catalogue(settings).images:
        try:
            _watch_one(settings, image, announced)
        except FactoryError as error:  # one image's trouble must not hide the others
            failures += 1
            log.error("marketplace watch for %s failed: %s", image.name, error)
    if failures:
        log.error("marketplace watch: %d image(s) could not be checked", failures)


@bp.timer_trigger(arg_name="timer", schedule="0 */30 * * * *", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def build_janitor(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Every 30 minutes: clean up resources of builds that no longer run.

    Only resources carrying the ``imagefactory:build-id`` tag count, in every resource group
    the catalogue builds in: the janitor never guesses ownership from a name.
    """
    settings = refuse_without_settings(log, "the build janitor")
    if settings is None:
        return
    groups = {settings.factory_resource_group}
    groups.update(image.build.resource_group for image in app_catalogue(settings).images)
    for group in sorted(groups):
        for build_id in sorted(compute.build_ids_with_resources(settings, group)):
            if (
                runtime_status(await client.get_status(names.build_instance_id(build_id)))
                in RUNNING
            ):
                continue
            cleanup_id = names.janitor_instance_id(build_id)
            if runtime_status(await client.get_status(cleanup_id)) in RUNNING:
                continue
            log.warning("build %s no longer runs but left resources: cleaning up", build_id)
            await client.start_new(
                names.ORCH_CLEANUP_BUILD,
                cleanup_id,
                {"resource_group": group, "build_id": build_id},
            )
