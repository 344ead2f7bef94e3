"""Helpers of the deimos-otel tests: the OpenTelemetry SDK with its in-memory span exporter
and metric reader installed as the global providers (once per process: the API allows
setting them only once), and a consumer run in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deimos.consumer import ConsumerLoop, resolve_settings
from deimos.testing.broker import GROUP_TIMEOUTS

_lock = threading.Lock()
_sdk: tuple[InMemorySpanExporter, InMemoryMetricReader] | None = None


def sdk() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """The process's in-memory exporter and reader, installed on first call."""
    global _sdk
    with _lock:
        if _sdk is None:
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            _sdk = (exporter, reader)
        return _sdk


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """``(attributes, data point)`` of every point of metric ``name`` (cumulative)."""
    out: list[tuple[dict[str, Any], Any]] = []
    data = reader.get_metrics_data()
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend((dict(p.attributes or {}), p) for p in m.data.data_points)
    return out


def metric(reader: InMemoryMetricReader, name: str) -> Any:
    """The metric ``name`` itself (its unit, description, data type)."""
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return m, sm.scope
    raise AssertionError(f"no metric {name!r}")


def wait_for(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_consumer(cls: type, topic: str, until: Callable[[], bool], what: str,
                 **overrides: Any) -> None:
    """Run a consumer of ``cls`` on ``topic`` in a thread until ``until()`` holds."""
    cs = resolve_settings(cls, topics=[topic], group_id=f"g-{uuid.uuid4().hex[:10]}",
                          config=dict(GROUP_TIMEOUTS), max_wait_time=0.2, **overrides)
    loop = ConsumerLoop(cls, cs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_for(lambda: until() or bool(errors), what=what)
    finally:
        loop.stop()
        t.join(30)
    assert not errors, errors
