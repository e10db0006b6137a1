"""A test app: the real build queue (entity + request orchestration) and trigger helper, over a
stand-in ``build_image`` that takes ten virtual minutes and fails for keys starting ``fail``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from orchestrators import build_queue
from orchestrators._flow import Flow
from shared import names
from triggers._common import json_response, request_build

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
stub = df.Blueprint()


@stub.orchestration_trigger(context_name="context", orchestration=names.ORCH_BUILD_IMAGE)
def build_image(context: df.DurableOrchestrationContext) -> Flow:
    spec: dict[str, Any] = context.get_input()
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=10))
    if str(spec["request"]["key"]).startswith("fail"):
        raise RuntimeError(f"build {spec['build_id']} failed on purpose")
    return {"version": f"1.0.{spec['build_id'].rsplit('-', 1)[1]}", "build_id": spec["build_id"]}


@stub.route(route="request/{image}/{key}", methods=["POST"])
@stub.durable_client_input(client_name="client")
async def request(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> Any:
    image, key = req.route_params["image"], req.route_params["key"]
    return json_response(await request_build(client, image, {"key": key, "reason": "test"}))


app.register_functions(build_queue.bp)
app.register_functions(stub)
