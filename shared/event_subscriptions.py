"""The app's Event Grid subscriptions: which function takes which of the app's event types.

One table for every place that wires them: ``infra/hooks/postdeploy.sh`` in Azure (it reads
``python3 -m shared.event_subscriptions``), ``python3 dev.py up`` and the local world
(devhost/demo.py) against the emulator. A test fails when an Event Grid function of the app is
missing here.
"""

from __future__ import annotations

import sys
from typing import Final

from shared import names

# function name -> the event types delivered to it (from the app's custom topic)
APP_EVENT_SUBSCRIPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "on_marketplace_image_published": (names.EG_MARKETPLACE_IMAGE_PUBLISHED,),
    "on_sysprep_signal": (names.EG_SYSPREP_FINISHED,),
    "on_image_version_staged": (names.EG_IMAGE_VERSION_STAGED,),
    "on_image_version_validated": (names.EG_IMAGE_VERSION_VALIDATED,),
}

# function name -> the resource event types delivered to it from the subscription's system
# topic (Microsoft.Resources.Subscriptions): the event-first waits (docs/events.md).
SYSTEM_TOPIC_SUBSCRIPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "on_resource_event": tuple(
        f"Microsoft.Resources.Resource{op}{outcome}"
        for op in ("Write", "Delete", "Action")
        for outcome in ("Success", "Failure", "Cancel")
    ),
}

# What a build alone needs (the local world's default: a build test sees no validation start).
BUILD_FUNCTIONS: Final = ("on_marketplace_image_published", "on_sysprep_signal")


def main(argv: list[str]) -> int:
    """One line per subscription: ``<function> <type>[,<type>...]`` (for the post-deploy hook);
    ``--system`` lists the subscription system topic's (resource events) instead."""
    table = SYSTEM_TOPIC_SUBSCRIPTIONS if "--system" in argv else APP_EVENT_SUBSCRIPTIONS
    for function, types in table.items():
        print(function, ",".join(types))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
