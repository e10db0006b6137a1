"""The Functions app: it only composes blueprints, one per concern."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from activities import build as build_activities
from activities import callbacks as callback_activities
from activities import lifecycle as lifecycle_activities
from activities import retention as retention_activities
from activities import rings as ring_activities
from activities import validation as validation_activities
from orchestrators import api as api_orchestrators
from orchestrators import build, build_queue, cleanup, lifecycle, retention, rings, validate, wait
from shared import telemetry
from triggers import (
    audit,
    builds,
    callbacks,
    events,
    images,
    openapi,
    resource_events,
    timers,
    versions,
)
from triggers import lifecycle as lifecycle_triggers
from triggers import retention as retention_triggers
from triggers import validation as validation_triggers

# Every blueprint of the app, in registration order (a test app may compose the same set).
BLUEPRINTS = (
    # builds
    build.bp,
    build_queue.bp,
    cleanup.bp,
    wait.bp,
    build_activities.bp,
    builds.bp,
    events.bp,
    resource_events.bp,
    timers.bp,
    # version lifecycle: validation, approval, activation, rollback, rings
    lifecycle.bp,
    lifecycle_activities.bp,
    lifecycle_triggers.bp,
    validate.bp,
    rings.bp,
    validation_activities.bp,
    ring_activities.bp,
    validation_triggers.bp,
    # retention
    retention.bp,
    retention_activities.bp,
    retention_triggers.bp,
    # the HTTP API (docs/api.md): resources, callbacks, the OpenAPI document
    images.bp,
    versions.bp,
    audit.bp,
    openapi.bp,
    callbacks.bp,
    callback_activities.bp,
    api_orchestrators.bp,
)

# Traces and metrics (Azure Monitor in Azure, console/file locally, off by default): the worker
# must set the providers up before the first invocation, so this is the one setup at import.
telemetry.configure()

# HTTP routes are ANONYMOUS to the Functions host: App Service Authentication (Entra ID) admits
# callers and triggers/_api.py requires a principal with the right app role on every route.
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
