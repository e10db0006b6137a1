"""Telemetry: one trace per operation, ARM request and 429 counts, metrics from events."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.transport import HttpRequest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import telemetry

SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def _providers() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    telemetry._instruments = None


def _points(name: str) -> list[Any]:
    data = READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


def test_activities_of_one_build_share_one_trace_and_others_do_not() -> None:
    SPANS.clear()
    with telemetry.operation_span("create_build_vm", "win11-office-000001"):
        pass
    with telemetry.operation_span("deallocate_vm", "win11-office-000001"):
        pass
    with telemetry.operation_span("create_build_vm", "win11-office-000002"):
        pass
    spans = SPANS.get_finished_spans()
    assert len(spans) == 3
    first, second, other = (s.context.trace_id for s in spans)
    assert first == second == telemetry.trace_id_for("win11-office-000001")
    assert other != first
    assert spans[0].attributes["imagefactory.operation_id"] == "win11-office-000001"


def test_arm_policy_counts_requests_and_throttling() -> None:
    policy = telemetry.ArmMetricsPolicy()
    url = "https://management.azure.com/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v"
    for status in (200, 429, 429):
        request = PipelineRequest(HttpRequest("GET", url), context=None)  # type: ignore[arg-type]
        policy.on_response(request, PipelineResponse(request.http_request, _Response(status), None))  # type: ignore[arg-type]
    requests = [
        p
        for p in _points("imagefactory.arm.requests")
        if p.attributes["provider"] == "Microsoft.Compute"
    ]
    throttled = [
        p
        for p in _points("imagefactory.arm.throttled")
        if p.attributes["provider"] == "Microsoft.Compute"
    ]
    assert sum(p.value for p in requests) == 3
    assert sum(p.value for p in throttled) == 2


def test_events_feed_build_phase_and_rollout_metrics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="imagefactory.telemetry")
    telemetry.record_event(
        "ImageFactory.ImageVersionStaged",
        {"image": "win11", "phase_seconds": {"steps": 120.0, "replication": 3600}},
    )
    telemetry.record_event("ImageFactory.RolloutPaused", {"host_pool": "hp1", "sessions_forced": 3})
    phases = {p.attributes["phase"]: p.sum for p in _points("imagefactory.build.phase.duration")}
    assert phases == {"steps": 120.0, "replication": 3600.0}
    assert sum(p.value for p in _points("imagefactory.rollout.sessions_forced")) == 3
    assert sum(p.value for p in _points("imagefactory.rollout.paused")) == 1
    assert any("imagefactory.event ImageFactory.RolloutPaused" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "off"),
        ({"IMAGEFACTORY_TELEMETRY": "console"}, "console"),
        ({"IMAGEFACTORY_TELEMETRY": "file:/tmp/t.jsonl"}, "file:/tmp/t.jsonl"),
        ({"IMAGEFACTORY_TELEMETRY": "loud"}, "off"),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, "azure-monitor"),
    ],
)
def test_mode_from_settings(env: dict[str, str], mode: str) -> None:
    assert telemetry.telemetry_mode(env) == mode
