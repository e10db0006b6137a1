"""The Functions app: it only composes blueprints, one per concern."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from activities import build as build_activities
from activities import rings as ring_activities
from activities import validation as validation_activities
from orchestrators import build, build_queue, cleanup, rings, validate, wait
from triggers import builds, events, timers
from triggers import validation as validation_triggers

# Every blueprint of the app, in registration order (a test app may compose the same set).
BLUEPRINTS = (
    build.bp,
    build_queue.bp,
    cleanup.bp,
    wait.bp,
    build_activities.bp,
    builds.bp,
    events.bp,
    timers.bp,
    validate.bp,
    rings.bp,
    validation_activities.bp,
    ring_activities.bp,
    validation_triggers.bp,
)

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
