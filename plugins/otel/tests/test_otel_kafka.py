"""The otel providers across a real broker: a consumer span continues its producer's trace,
a batch span links its producers' spans, failures mark spans and count ``handler``
status:error, and the catalogue's instruments carry the expected values."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from otel_helpers import metric, points, run_consumer

import deimos
from deimos.consumer import BatchConsumer, Consumer

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None, spans: Any, reader: Any) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     metrics={"providers": ["otel"], "tags": {"service": "orders"}},
                     tracing={"providers": ["otel"]})
    return deimos_kafka


def _by_kind(spans: Any, kind: SpanKind, topic: str) -> list[Any]:
    return [s for s in spans.get_finished_spans()
            if s.kind == kind and s.attributes.get("messaging.destination.name") == topic]


def test_consumer_span_continues_the_producer_trace(kafka: str, deimos_topic: Any,
                                                     spans: Any, reader: Any) -> None:
    topic = deimos_topic()

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic
    seen: list[tuple[Any, Any]] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            # the consumer span is current while the handler runs
            seen.append((payload, trace.get_current_span().get_span_context()))

    app = trace.get_tracer("app")
    with app.start_as_current_span("checkout") as outer:
        P.publish("hello", key="k1", sync=True)
    run_consumer(C, topic, lambda: len(seen) == 1, "one message")

    (send,) = _by_kind(spans, SpanKind.PRODUCER, topic)
    (process,) = _by_kind(spans, SpanKind.CONSUMER, topic)
    # the publish span is a child of the application's span; the process span of the send span
    assert send.parent.span_id == outer.get_span_context().span_id
    assert process.context.trace_id == send.context.trace_id == outer.get_span_context().trace_id
    assert process.parent.span_id == send.context.span_id
    assert seen[0][1].span_id == process.context.span_id
    assert send.name == f"send {topic}" and process.name == f"process {topic}"
    assert {k: send.attributes[k] for k in (
        "messaging.system", "messaging.operation.type", "messaging.operation.name",
        "messaging.destination.name")} == {
        "messaging.system": "kafka", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.destination.name": topic}
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.consumer.group.name"].startswith("g-")
    assert process.attributes["messaging.destination.partition.id"] == "0"
    assert process.attributes["messaging.kafka.offset"] == 0
    assert "messaging.batch.message_count" not in process.attributes  # single message
    assert process.status.status_code == StatusCode.UNSET

    # metrics with the catalogue's names, units and attributes
    (sent,) = [p for a, p in points(reader, "messaging.client.sent.messages")
               if a["messaging.destination.name"] == topic]
    assert sent.value == 1
    got = {a["deimos.status"]: p.value for a, p in points(
        reader, "deimos.consumer.handled.messages") if a["messaging.destination.name"] == topic}
    assert got == {"success": 1}
    (consumed_attrs, consumed) = next(
        (a, p) for a, p in points(reader, "messaging.client.consumed.messages")
        if a["messaging.destination.name"] == topic)
    assert consumed.value == 1
    assert consumed_attrs["messaging.system"] == "kafka"
    assert consumed_attrs["service"] == "orders"  # global tags kept as attributes
    assert consumed_attrs["messaging.consumer.group.name"].startswith("g-")
    durations = [p for a, p in points(reader, "messaging.process.duration")
                 if a["messaging.destination.name"] == topic and a["deimos.time"] == "consume"]
    assert durations[0].count == 1 and durations[0].sum > 0
    m, scope = metric(reader, "messaging.process.duration")
    assert m.unit == "s" and scope.name == "deimos_otel"
    assert metric(reader, "messaging.client.sent.messages")[0].unit == "{message}"


def test_a_batch_span_links_every_producer_span(kafka: str, deimos_topic: Any,
                                                spans: Any) -> None:
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    got: list[int] = []

    class B(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            got.extend(range(len(payloads)))

    P.publish_list(["a", "b", "c"], sync=True)
    P.publish_list(["d", "e"], sync=True)
    run_consumer(B, topic, lambda: len(got) == 5, "five messages")
    sends = _by_kind(spans, SpanKind.PRODUCER, topic)
    assert len(sends) == 2
    assert sends[0].attributes["messaging.batch.message_count"] == 3
    processes = _by_kind(spans, SpanKind.CONSUMER, topic)
    linked = {link.context.span_id for s in processes for link in s.links}
    assert linked == {s.context.span_id for s in sends}
    assert sum(s.attributes.get("messaging.batch.message_count", 1) for s in processes) == 5


def test_a_failing_handler_marks_its_span_and_counts_status_error(
        kafka: str, deimos_topic: Any, spans: Any, reader: Any) -> None:
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    calls: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            calls.append(payload)
            if payload == "bad":
                raise RuntimeError("cannot handle bad")

    P.publish_list(["bad", "good"], sync=True)
    run_consumer(C, topic, lambda: calls == ["bad", "good"], "both messages",
                 on_error="skip", retry={"attempts": 1})
    processes = _by_kind(spans, SpanKind.CONSUMER, topic)
    failed = [s for s in processes if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == 1 and len(processes) == 2
    assert failed[0].attributes["error.type"] == "builtins.RuntimeError"
    assert failed[0].events[0].name == "exception"
    got = {a["deimos.status"]: p.value for a, p in points(
        reader, "deimos.consumer.handled.messages") if a["messaging.destination.name"] == topic}
    assert got == {"error": 1, "success": 1}
    (skipped,) = [p for a, p in points(reader, "deimos.consumer.skipped.messages")
                  if a["messaging.destination.name"] == topic]
    assert skipped.value == 1
