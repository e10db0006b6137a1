"""The Functions app: it only composes blueprints, one per concern."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from activities import build as build_activities
from activities import retention as retention_activities
from orchestrators import build, build_queue, cleanup, retention, wait
from triggers import builds, events, timers
from triggers import retention as retention_triggers

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (
    build.bp,
    build_queue.bp,
    cleanup.bp,
    wait.bp,
    build_activities.bp,
    builds.bp,
    events.bp,
    timers.bp,
    retention.bp,
    retention_activities.bp,
    retention_triggers.bp,
):
    app.register_functions(blueprint)
