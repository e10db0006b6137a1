"""The app for the validation and ring e2e tests: the real app plus a TEST-ONLY stand-in.

The version lifecycle's ``set_version_state`` activity belongs to the lifecycle capability
(built in parallel). Until it is merged, this test app registers a stand-in under the same
name, honouring its contract (input ``image, version, action, actor, reason, change_ticket,
at``; output ``image, version, state, previous``; a permanent error when a transition is
refused) and keeping the state in the version's ``imagefactory:state`` tag, as the real one
does. Production code never registers it. INTEGRATOR: drop this module's stand-in once the
lifecycle's activity is in function_app.py, and point the tests at ``function_app:app``.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import models

from function_app import BLUEPRINTS
from shared import names
from shared.app_catalogue import find_image
from shared.azure.clients import compute_client
from shared.domain.resources import TAG_STATE, TAG_STATE_BY, TAG_STATE_REASON
from shared.errors import PermanentError, TemporaryError
from shared.settings import load_settings

_ALLOWED = {
    "start_validation": ({"staged"}, "validating"),
    "pass_validation": ({"validating"}, "validated"),
    "fail_validation": ({"validating"}, "failed"),
    "activate": ({"validated", "approved", "active"}, "active"),
}

stand_in = df.Blueprint()
CALLS: list[dict[str, Any]] = []


@stand_in.function_name(name=names.ACT_SET_VERSION_STATE)
@stand_in.activity_trigger(input_name="payload", activity=names.ACT_SET_VERSION_STATE)
def set_version_state(payload: dict[str, Any]) -> dict[str, Any]:
    """TEST-ONLY stand-in for the lifecycle's activity (see the module docstring)."""
    CALLS.append(dict(payload))
    settings = load_settings()
    image = find_image(payload["image"], settings)
    g = image.gallery
    client = compute_client(settings)
    version = client.gallery_image_versions.get(
        g.resource_group, g.gallery_name, g.image_definition, payload["version"]
    )
    tags = dict(version.tags or {})
    previous = tags.get(TAG_STATE, "")
    allowed_from, target = _ALLOWED[payload["action"]]
    if previous not in allowed_from:
        raise PermanentError(
            f"{payload['action']} refused: version {payload['version']} is {previous!r}, "
            f"allowed from {sorted(allowed_from)}"
        )
    tags.update(
        {
            TAG_STATE: target,
            TAG_STATE_BY: str(payload.get("actor") or "imagefactory"),
            TAG_STATE_REASON: str(payload.get("reason") or "")[:250],
        }
    )
    try:
        client.gallery_image_versions.begin_update(
            g.resource_group,
            g.gallery_name,
            g.image_definition,
            payload["version"],
            models.GalleryImageVersionUpdate({"tags": tags}),
            polling=False,
        )
    except HttpResponseError as error:  # e.g. still Updating from the previous transition
        raise TemporaryError(f"set_version_state: {error.message}") from None
    return {
        "image": payload["image"],
        "version": payload["version"],
        "state": target,
        "previous": previous,
    }


# A separate app object (the devhost indexes each app object once): the real blueprints plus
# the stand-in.
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (*BLUEPRINTS, stand_in):
    app.register_functions(blueprint)
