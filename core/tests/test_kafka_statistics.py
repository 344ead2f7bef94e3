"""librdkafka's statistics reach the metrics providers (Ruby Deimos's ``rd_kafka_metrics``):
broker round trips and request queues, a shared producer's queue, and a group consumer's lag
per partition as librdkafka sees it, with its change between reports; on the real broker,
through the ``mock`` provider."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from kafka_helpers import LoopThread, group_settings, wait_for

import deimos
from deimos.consumer import Consumer
from deimos.plugins import get_registry

pytestmark = pytest.mark.kafka


def _gauges(name: str, **tags: str) -> list[tuple[float, dict[str, str]]]:
    records = get_registry().get("metrics", "mock").obj.records
    return [(v, t) for kind, n, v, t in list(records)
            if kind == "gauge" and n == name and all(t.get(k) == w for k, w in tags.items())]


def test_statistics_arrive_as_gauges(deimos_kafka: str, deimos_topic: Any,
                                     deimos_reset: None) -> None:
    topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka,
                            "config": {"statistics.interval.ms": 100}},
                     metrics={"providers": ["mock"]})
    get_registry().get("metrics", "mock").obj.clear()

    class P(deimos.Producer):
        pass

    P.topic = topic
    for value in ("a", "b", "c"):  # one record per request: Tansu's watermarks
        P.publish(value, sync=True)

    handled: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C)
    loop = LoopThread(C, settings).start()
    try:
        # a report after every message was handled (and its offset stored): lag 0
        wait_for(lambda: len(handled) == 3 and any(v == 0 for v, _ in _gauges(
            "consumer.lags", topic=topic, partition="0")), what="consumer.lags 0")
    finally:
        loop.stop()
    assert loop.error is None
    group = {"client": "consumer", "consumer_group": str(settings.group_id),
             "bootstrap": deimos_kafka}
    lags = _gauges("consumer.lags", topic=topic, partition="0", **group)
    deltas = _gauges("consumer.lags_delta", topic=topic, partition="0", **group)
    assert lags and len(deltas) == len(lags)
    values = [v for v, _ in lags]
    # each delta is the change since the previous report (0 for the first)
    assert [v for v, _ in deltas] == [0] + [b - a for a, b in itertools.pairwise(values)]
    assert all(0 <= v <= 3 for v in values)
    for client in ("producer", "consumer"):
        rtt = _gauges("kafka.broker.rtt_avg", client=client, bootstrap=deimos_kafka)
        assert rtt and all(0 < v < 10 for v, _ in rtt), client  # seconds, not microseconds
        assert all(t["broker"] for _, t in rtt)
        assert _gauges("kafka.broker.outbuf_requests", client=client)
        assert _gauges("kafka.broker.waitresp_requests", client=client)
    queued = _gauges("kafka.producer.queue_messages", client="producer",
                     bootstrap=deimos_kafka)
    assert queued and all(v >= 0 for v, _ in queued)
    assert _gauges("kafka.producer.queue_bytes", client="producer")

