"""The datadog providers across a real broker: DogStatsD datagrams (read from a real UDP
socket) for a produce and a consume, and ddtrace spans whose trace crosses Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from datadog_helpers import StatsdServer, flush_metrics, run_consumer, wait_for

import deimos
from deimos.consumer import BatchConsumer, Consumer

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None, statsd: StatsdServer) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     metrics={"providers": ["datadog"], "tags": {"service": "orders"}},
                     datadog={"host": "127.0.0.1", "port": statsd.port, "tags": {"env": "test"},
                              "flush_interval": 0.1})
    return deimos_kafka


def _on(statsd: StatsdServer, topic: str) -> list[Any]:
    return [m for m in statsd.metrics() if m.tags.get("topic") == topic]


def test_produce_and_consume_send_the_catalogue_datagrams(kafka: str, deimos_topic: Any,
                                                          statsd: StatsdServer) -> None:
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    got: list[Any] = []

    class B(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            got.extend(payloads)

    P.publish_list(["a", "b", "c"], sync=True)
    run_consumer(B, topic, lambda: len(got) == 3, "three messages")
    flush_metrics()

    def counted(name: str, **tags: str) -> float:
        return sum(m.value for m in _on(statsd, topic)
                   if m.name == name and m.type == "c"
                   and all(m.tags.get(k) == v for k, v in tags.items()))

    wait_for(lambda: counted("deimos.handler", status="success") == 3, what="handler success")
    assert counted("deimos.publish") == 3
    assert counted("deimos.handler", status="received") == 3
    assert counted("deimos.handler", status="batch_received") >= 1
    assert counted("deimos.handler", status="batch_success") == counted(
        "deimos.handler", status="batch_received")
    assert counted("deimos.handler", status="error") == 0
    timings = {m.tags["time"]: m for m in _on(statsd, topic)
               if m.name == "deimos.handler" and m.type == "ms"}
    assert set(timings) == {"consume_batch", "time_delayed"}
    assert 0 <= timings["consume_batch"].value < 10_000  # milliseconds
    sample = next(m for m in _on(statsd, topic) if m.name == "deimos.publish")
    # global tags from metrics.tags, constant tags from datadog.tags
    assert sample.tags["service"] == "orders" and sample.tags["env"] == "test"
    handler = next(m for m in _on(statsd, topic) if m.name == "deimos.handler")
    assert handler.tags["consumer_group"].startswith("g-")


def test_a_failing_handler_counts_status_error(kafka: str, deimos_topic: Any,
                                               statsd: StatsdServer) -> None:
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
    flush_metrics()

    def counted(name: str, status: str | None = None) -> float:
        return sum(m.value for m in _on(statsd, topic) if m.name == name and m.type == "c"
                   and (status is None or m.tags.get("status") == status))

    wait_for(lambda: counted("deimos.skipped") == 1, what="the skipped counter")
    assert counted("deimos.handler", "error") == 1
    assert counted("deimos.handler", "success") == 1
    assert counted("deimos.handler", "received") == 2


@pytest.fixture
def traced(deimos_kafka: str, deimos_reset: None, dd_spans: Any) -> Any:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     tracing={"providers": ["datadog"]}, datadog={"service": "orders-svc"})
    dd_spans.spans.clear()
    return dd_spans


def test_the_consumer_span_continues_the_producer_trace(traced: Any, deimos_topic: Any
                                                        ) -> None:
    from ddtrace.trace import tracer

    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    seen: list[dict[str, bytes]] = []
    calls: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            seen.append(metadata.headers)
            calls.append(payload)
            # the handler runs inside the consumer span
            assert tracer.current_span() is not None
            if payload == "bad":
                raise RuntimeError("cannot handle bad")

    P.publish_list(["good", "bad"], sync=True)
    run_consumer(C, topic, lambda: calls == ["good", "bad"], "both messages",
                 on_error="skip", retry={"attempts": 1})
    tracer.flush()
    wait_for(lambda: len([s for s in traced.spans if s.resource == topic]) >= 3,
             what="three finished spans")
    spans = [s for s in traced.spans if s.resource == topic]
    (produce,) = [s for s in spans if s.name == "kafka.produce"]
    processes = [s for s in spans if s.name == "kafka.process"]
    assert len(processes) == 2
    for s in processes:
        assert s.trace_id == produce.trace_id
        assert s.parent_id == produce.span_id
        assert s.get_tag("span.kind") == "consumer" and s.service == "orders-svc"
        assert s.get_tag("messaging.destination.name") == topic
    assert produce.get_tag("span.kind") == "producer"
    assert produce.get_tag("messaging.system") == "kafka"
    # only the W3C headers travelled with the message (datadog.propagation's default)
    assert set(seen[0]) == {"traceparent", "tracestate"}
    parent_id = seen[0]["traceparent"].decode().split("-")[2]
    assert int(parent_id, 16) == produce.span_id
    errors = [s for s in processes if s.error]
    assert len(errors) == 1
    assert errors[0].get_tag("error.type") == "builtins.RuntimeError"
    assert "cannot handle bad" in errors[0].get_tag("error.message")


def test_a_batch_span_links_the_producer_spans(traced: Any, deimos_topic: Any) -> None:
    from ddtrace.trace import tracer

    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    got: list[Any] = []

    class B(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            got.extend(payloads)

    P.publish_list(["a", "b"], sync=True)
    P.publish_list(["c"], sync=True)
    run_consumer(B, topic, lambda: len(got) == 3, "three messages")
    tracer.flush()
    wait_for(lambda: any(s.name == "kafka.process" and s.resource == topic
                         for s in traced.spans), what="the batch span")
    produces = [s for s in traced.spans if s.resource == topic and s.name == "kafka.produce"]
    processes = [s for s in traced.spans if s.resource == topic and s.name == "kafka.process"]
    # ddtrace exposes links only privately; they are sent to the agent in _dd.span_links
    linked = {link.span_id for s in processes for link in s._get_links()}
    assert linked == {s.span_id for s in produces}
