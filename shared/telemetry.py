"""Telemetry: OpenTelemetry traces and metrics, to Azure Monitor in Azure, to the console locally.

One call, :func:`configure`, sets it up from the settings at the first invocation (never at
import): with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` it uses the Azure Monitor distro with the
app's managed identity (Application Insights has local auth disabled); otherwise
``IMAGEFACTORY_TELEMETRY`` = ``console`` or ``file:<path>`` writes the same spans and metrics
locally (the demo shows them), and unset means off.

What is recorded:
- a trace per build / rollout: :func:`operation_span` derives the trace id from the operation's
  id, so every activity of one build lands in one trace, with the Azure SDK calls made inside
  it as dependencies (azure-core's OpenTelemetry tracing);
- metrics: ARM requests and 429s (:class:`ArmMetricsPolicy`, in every SDK client's pipeline),
  build duration per phase, builds by outcome, rollout progress and sessions forced
  (:func:`record_event`, fed by every ``ImageFactory.*`` event the app publishes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from opentelemetry import metrics, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

log = logging.getLogger("imagefactory.telemetry")
METER = "imagefactory"
TRACER = "imagefactory"

_lock = threading.Lock()
_configured: str | None = None


def telemetry_mode(env: Mapping[str, str] | None = None) -> str:
    """``azure-monitor``, ``console``, ``file:<path>`` or ``off``, from the settings."""
    env = os.environ if env is None else env
    if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip():
        return "azure-monitor"
    local = env.get("IMAGEFACTORY_TELEMETRY", "").strip()
    if local == "console" or local.startswith("file:"):
        return local
    if local not in {"", "off"}:
        log.error(
            "IMAGEFACTORY_TELEMETRY=%r is not console, file:<path> or off: telemetry stays off",
            local,
        )
    return "off"


def _local_providers(out: TextIO) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    trace.set_tracer_provider(tracer)
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=out), export_interval_millis=60_000
    )
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def configure(env: Mapping[str, str] | None = None) -> str:
    """Set telemetry up once per process; returns the mode in force."""
    global _configured
    with _lock:
        if _configured is not None:
            return _configured
        mode = telemetry_mode(env)
        if mode == "azure-monitor":
            from azure.identity import DefaultAzureCredential
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(credential=DefaultAzureCredential(), logger_name="imagefactory")
        elif mode == "console":
            _local_providers(sys.stderr)
        elif mode.startswith("file:"):
            path = Path(mode.removeprefix("file:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            _local_providers(path.open("a", encoding="utf-8"))
        if mode != "off":
            _enable_sdk_tracing()
        _configured = mode
        return mode


def flush() -> None:
    """Export what is buffered now (the local world's summary reads the file right after)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        force = getattr(provider, "force_flush", None)
        if callable(force):
            force()


def summarise_file(path: Path) -> dict[str, Any]:
    """What a ``file:`` telemetry log holds: spans, traces, and the app's metric totals."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    totals: dict[str, float] = {}
    index = 0
    while True:
        start = text.find("{", index)
        if start < 0:
            break
        try:
            item, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        if isinstance(item, dict) and "context" in item and "name" in item:
            spans.append(item)
        for resource in item.get("resource_metrics", []) if isinstance(item, dict) else []:
            for scope in resource.get("scope_metrics", []):
                for metric in scope.get("metrics", []):
                    points = metric.get("data", {}).get("data_points", [])
                    value = sum(float(p.get("value", p.get("sum", 0)) or 0) for p in points)
                    totals[metric["name"]] = value  # cumulative: the last export is the total
    traces = {span["context"]["trace_id"] for span in spans}
    return {"spans": len(spans), "traces": len(traces), "metrics": totals}


def _enable_sdk_tracing() -> None:
    """Azure SDK calls become child spans (dependencies) of the current span."""
    from azure.core.settings import settings

    settings.tracing_implementation = "opentelemetry"


def trace_id_for(operation_id: str) -> int:
    """A stable 128-bit trace id for a build or rollout id (never zero)."""
    value = int.from_bytes(hashlib.sha256(operation_id.encode()).digest()[:16], "big")
    return value or 1


@contextmanager
def operation_span(name: str, operation_id: str, **attributes: str) -> Iterator[None]:
    """A span in the trace of ``operation_id`` (a build or rollout id): every activity of that
    operation, on any instance, at any time, joins the same trace."""
    parent = SpanContext(
        trace_id=trace_id_for(operation_id),
        span_id=trace_id_for("root:" + operation_id) & 0xFFFFFFFFFFFFFFFF or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        name, context=context, attributes={"imagefactory.operation_id": operation_id, **attributes}
    ):
        yield


# -- metrics -----------------------------------------------------------------------------------


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter(METER)
        self.arm_requests = meter.create_counter(
            "imagefactory.arm.requests", unit="1", description="ARM requests sent"
        )
        self.arm_throttled = meter.create_counter(
            "imagefactory.arm.throttled", unit="1", description="ARM answers 429 (throttled)"
        )
        self.phase_seconds = meter.create_histogram(
            "imagefactory.build.phase.duration", unit="s", description="build phase duration"
        )
        self.builds = meter.create_counter(
            "imagefactory.builds", unit="1", description="builds that ended, by outcome"
        )
        self.hosts_replaced = meter.create_counter(
            "imagefactory.rollout.hosts_replaced", unit="1", description="session hosts replaced"
        )
        self.sessions_forced = meter.create_counter(
            "imagefactory.rollout.sessions_forced", unit="1", description="sessions logged off"
        )
        self.rollouts_paused = meter.create_counter(
            "imagefactory.rollout.paused", unit="1", description="rollouts paused by failures"
        )


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    """The app's instruments, made on first use (after :func:`configure` chose the provider)."""
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class ArmMetricsPolicy(SansIOHTTPPolicy[Any, Any]):
    """Counts every ARM request and every 429, by HTTP method and resource provider."""

    def on_response(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
    ) -> None:
        url = str(request.http_request.url)
        lowered = url.lower()
        provider = "other"
        if "/providers/" in lowered:
            provider = url.split("/providers/")[-1].split("/")[0]
        labels = {"method": request.http_request.method, "provider": provider}
        found = instruments()
        found.arm_requests.add(1, labels)
        if response.http_response.status_code == 429:
            found.arm_throttled.add(1, labels)


def record_event(event_type: str, data: Mapping[str, Any]) -> None:
    """Metrics from one ``ImageFactory.*`` event the app publishes, plus one log line the alert
    rules query (``imagefactory.event`` with the event type as a custom dimension)."""
    found = instruments()
    image = str(data.get("image") or "")
    kind = event_type.removeprefix("ImageFactory.")
    if kind in {"BuildFailed", "ImageVersionStaged"}:
        found.builds.add(
            1, {"image": image, "outcome": "failed" if kind == "BuildFailed" else "staged"}
        )
        for phase, seconds in (data.get("phase_seconds") or {}).items():
            if isinstance(seconds, int | float):
                found.phase_seconds.record(float(seconds), {"image": image, "phase": str(phase)})
    if kind == "RolloutHostReplaced":
        found.hosts_replaced.add(1, {"host_pool": str(data.get("host_pool") or "")})
    if kind == "RolloutPaused":
        found.rollouts_paused.add(1, {"host_pool": str(data.get("host_pool") or "")})
    forced = data.get("sessions_forced")
    if isinstance(forced, int) and forced > 0:
        found.sessions_forced.add(forced, {"host_pool": str(data.get("host_pool") or "")})
    log.info(
        "imagefactory.event %s %s",
        event_type,
        json.dumps({"image": image, "subject": data.get("subject")}, default=str),
        extra={"event_type": event_type, "image": image},
    )
