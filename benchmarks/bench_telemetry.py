"""Telemetry overhead: the plain deimos benchmarks with the datadog and otel providers both
enabled for metrics and tracing, against the same benchmark with metrics and tracing off.

``ratio`` is with/without (target: at least 0.9). The produce benchmarks also run "without,
but with the trace headers the application sets itself" and report
``ratio_same_headers`` = with/that: propagation puts its headers on every message
(``traceparent`` and ``tracestate`` with both providers, taken from a real injection), and
headers have a cost in librdkafka itself (``raw_header_ratio``: a raw confluent-kafka loop
with those headers against the same loop without them), so that ratio is what deimos's
metrics and tracing cost beyond carrying the context. DogStatsD datagrams go to a UDP socket on
loopback that nobody reads (the kernel drops them, as with an agent that cannot keep up);
the OpenTelemetry SDK exports through a BatchSpanProcessor to an exporter that discards;
ddtrace keeps no trace (a TraceFilter drops them: there is no agent here).
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

# run.py imports this module while running as __main__: register there, not in a second copy
_run: Any = sys.modules["__main__"] if hasattr(sys.modules["__main__"], "BENCHES") else (
    __import__("run"))

import deimos  # noqa: E402

for _k in ("DD_INSTRUMENTATION_TELEMETRY_ENABLED", "DD_REMOTE_CONFIGURATION_ENABLED",
           "DD_TRACE_STARTUP_LOGS", "DD_CRASHTRACKING_ENABLED"):
    os.environ.setdefault(_k, "false")

_state: dict[str, Any] = {}


def _sdk() -> int:
    """Install the OTel SDK and ddtrace's drop-all filter once; the DogStatsD port."""
    if "port" not in _state:
        from ddtrace.trace import TraceFilter, tracer
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Discard(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        class DropAll(TraceFilter):  # type: ignore[misc]
            def process_trace(self, trace: list[Any]) -> None:
                return None

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        tracer.configure(trace_processors=[DropAll()])
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        _state["sink"] = sink
        _state["port"] = sink.getsockname()[1]
    return int(_state["port"])


def _sections(on: bool) -> dict[str, Any]:
    if not on:
        return {}
    port = _sdk()
    return {"metrics": {"providers": ["datadog", "otel"], "tags": {"service": "bench"}},
            "tracing": {"providers": ["datadog", "otel"]},
            "datadog": {"host": "127.0.0.1", "port": port}}


def _warm() -> None:
    """Pay the providers' one-time costs (lazy imports, first instruments) before timing."""
    from deimos.runtime import get_runtime

    tel = get_runtime().telemetry
    attrs = {"messaging.system": "kafka", "messaging.destination.name": "warm-up"}
    carrier: dict[str, bytes] = {}
    with tel.span("warm-up publish", {**attrs, "messaging.operation.type": "publish"}) as s:
        s.inject(carrier)
    with tel.span("warm-up process", {**attrs, "messaging.operation.type": "process"},
                  carrier, [carrier]):
        tel.increment("warm_up", 1, {"topic": "warm-up"})
        tel.timing("warm_up", 0.001, {"topic": "warm-up"})


def _propagated_headers() -> dict[str, bytes]:
    """The headers the providers put on each message, taken from a real injection with
    telemetry on (configured by the caller): with both providers ``traceparent`` and
    ``tracestate`` (ddtrace writes its ``dd=`` state there), 158 bytes. The "same headers"
    baselines send exactly these; an earlier version sent ``traceparent`` alone, one header
    short of what deimos sends with tracing on."""
    if "headers" not in _state:
        from deimos.runtime import get_runtime

        carrier: dict[str, bytes] = {}
        with get_runtime().telemetry.span("headers", {"messaging.system": "kafka"}) as s:
            s.inject(carrier)
        assert carrier, "the tracing providers injected no header"
        _state["headers"] = carrier
    return dict(_state["headers"])


def _ratio(num: list[Any], den: list[Any]) -> float:
    """Median over rounds of the per-round rate ratio."""
    return round(statistics.median(a.rate / b.rate for a, b in zip(num, den)), 3)


def _compare(b: Any, run: Callable[..., Any], headers: bool = False,
             raw: Callable[..., Any] | None = None, **sections: Any) -> dict[str, Any]:
    """Alternate runs with and without telemetry (``headers``: also without telemetry but
    with the trace header set by hand; ``raw``: also a raw loop with and without it).
    Each deimos variant configures afresh, so its producer is warmed up inside ``run``."""
    def off() -> Any:
        b.configure(**sections)
        return run()

    b.configure(**sections, **_sections(True))
    propagated = _propagated_headers()

    def off_headers() -> Any:
        b.configure(**sections)
        return run(propagated)

    def on() -> Any:
        b.configure(**sections, **_sections(True))
        _warm()
        return run()

    variants: dict[str, Callable[[], Any]] = {"without": off, "with_telemetry": on}
    if headers:
        variants["without_same_headers"] = off_headers
    if raw is not None:
        variants["raw"] = raw
        variants["raw_header"] = lambda: raw(list(propagated.items()))
    runs: dict[str, list[Any]] = {k: [] for k in variants}
    order = list(variants)
    for r in range(b.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            runs[name].append(_run._as_run(variants[name]()))
    out: dict[str, Any] = {k: round(statistics.median(x.rate for x in v))
                           for k, v in runs.items()}
    out["ratio"] = _ratio(runs["with_telemetry"], runs["without"])
    cpu = {k: [x.cpu for x in runs[k]] for k in ("without", "with_telemetry")}
    if all(c is not None for v in cpu.values() for c in v):
        # the deimos thread's CPU per message, without over with (1.0: telemetry costs none)
        med = {k: statistics.median(v) for k, v in cpu.items()}
        out["cpu_us_per_message"] = {k: round(v * 1e6, 2) for k, v in med.items()}
        out["cpu_ratio"] = round(med["without"] / med["with_telemetry"], 3)
    if headers:
        out["ratio_same_headers"] = _ratio(runs["with_telemetry"], runs["without_same_headers"])
    if raw is not None:
        out["raw_header_ratio"] = _ratio(runs["raw_header"], runs["raw"])
    out.update(messages=b.messages, rounds=b.rounds)
    return out


def _publish_run(b: Any, producer: type[deimos.Producer], payloads: list[Any],
                 keys: list[Any], headers: dict[str, bytes] | None,
                 per_message: bool = False) -> Any:
    """A deimos produce pass to a new topic (``publish_list`` in chunks of 500, or
    ``publish`` per message), warmed up and its count verified as every produce benchmark."""
    topic = producer.topic = b.topic()
    n = len(payloads)
    if per_message:
        def work() -> None:
            publish = producer.publish
            for i in range(n):
                publish(payloads[i], key=keys[i], headers=headers)
    else:
        def work() -> None:
            for i in range(0, n, 500):
                producer.publish_list(payloads[i:i + 500], keys=keys[i:i + 500],
                                      headers=headers)
    return b.deimos_produce(topic, n, lambda: producer.publish(payloads[0], key="w"), work)


@_run.bench("produce_plain_telemetry")
def produce_plain_telemetry(b: Any) -> dict[str, Any]:
    """produce_plain (kafka_async, keyed, 100-byte values, 500 per publish_list)."""
    n = b.messages
    values, keys = _run._plain(n)
    producer = _run._PlainProducer

    def run(headers: dict[str, bytes] | None = None) -> Any:
        return _publish_run(b, producer, values, keys, headers)

    def raw(headers: list[tuple[str, bytes]] | None = None) -> Any:
        return b.raw_produce(b.topic(), values, keys=keys, headers=headers)

    return _compare(b, run, headers=True, raw=raw, producers={"backend": "kafka_async"})


@_run.bench("consume_batch_plain_telemetry")
def consume_batch_plain_telemetry(b: Any) -> dict[str, Any]:
    """consume_batch_plain (BatchConsumer, no-op handler, batches of 500), at its size."""
    n = b.plain_consume_messages
    topic = b.filled_topic([_run.VALUE.encode()] * n)
    out = _compare(b, lambda: b.deimos_consume(_run._NoopBatch, topic, n))
    out["messages"] = n
    return out


def _produce_avro_telemetry(b: Any, per_message: bool) -> dict[str, Any]:
    import bench_avro

    n = b.messages
    records = bench_avro._records(n)
    keys = bench_avro._keys(n)
    producer = bench_avro._WidgetProducer

    def run(headers: dict[str, bytes] | None = None) -> Any:
        return _publish_run(b, producer, records, keys, headers, per_message)

    client = bench_avro._configure(b)

    def raw(headers: list[tuple[str, bytes]] | None = None) -> Any:
        return bench_avro.raw_avro_produce(b, client, records, keys, headers)

    return _compare(b, run, headers=True, raw=raw, **bench_avro.avro_sections())


@_run.bench("produce_avro_telemetry")
def produce_avro_telemetry(b: Any) -> dict[str, Any]:
    """produce_avro (avro_schema_registry on mock://, keyed 6-field records, 500 per
    publish_list)."""
    return _produce_avro_telemetry(b, per_message=False)


@_run.bench("produce_avro_message_telemetry")
def produce_avro_message_telemetry(b: Any) -> dict[str, Any]:
    """produce_avro_message (``publish`` once per keyed 6-field record)."""
    return _produce_avro_telemetry(b, per_message=True)


@_run.bench("consume_batch_avro_telemetry")
def consume_batch_avro_telemetry(b: Any) -> dict[str, Any]:
    """consume_batch_avro (BatchConsumer decoding Avro, batches of 500)."""
    import bench_avro

    n = b.messages
    topic = bench_avro.filled_avro_topic(b, n)
    return _compare(b, lambda: b.deimos_consume(bench_avro._WidgetConsumer, topic, n),
                    **bench_avro.avro_sections())
