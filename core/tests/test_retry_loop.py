"""The retry consumer's wait on the real broker: a message not yet due pauses only its own
partition, and a wait longer than max.poll.interval.ms keeps the consumer in its group."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Producer as RawProducer
from kafka_helpers import LoopThread, group_settings, wait_for

import deimos
from deimos.consumer import Consumer
from deimos.consumer.retry_loop import RetryTopicsLoop
from deimos.consumer.retry_topics import RETRY_ATTEMPT_HEADER, RETRY_DUE_HEADER, retry_topic
from deimos.testing.broker import create_topic

pytestmark = pytest.mark.kafka

#: one idle poll of the retry consumer plus the fetch, with room for a loaded machine
TOLERANCE_MS = 1500


class Recording(Consumer):
    handled: list[tuple[str, int, float]] = []
    both = threading.Event()

    def consume(self, payload: Any, metadata: Any) -> None:
        self.handled.append((payload, metadata.partition, time.time() * 1000))
        if len(self.handled) == 2:
            self.both.set()


def test_a_message_not_due_pauses_only_its_partition_past_max_poll_interval(
        deimos_kafka: str, deimos_reset: None) -> None:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    topic = create_topic(deimos_kafka)
    rung = create_topic(deimos_kafka, retry_topic(topic, 1), partitions=2)
    Recording.topic = topic
    Recording.handled, Recording.both = [], threading.Event()
    # max.poll.interval.ms as low as librdkafka allows with this session timeout: a wait
    # that blocked the poll loop would get the consumer thrown out of its group
    settings = group_settings(Recording, on_error="retry_topics", retry_topics=["1s"],
                              dead_letter_topic=create_topic(deimos_kafka),
                              config={"session.timeout.ms": 6000,
                                      "heartbeat.interval.ms": 1000,
                                      "max.poll.interval.ms": 6000})
    loop = RetryTopicsLoop(Recording, settings)
    revoked: list[Any] = []
    on_revoke = loop._on_revoke

    def recording_revoke(consumer: Any, partitions: Any) -> None:
        revoked.extend(partitions)
        on_revoke(consumer, partitions)

    loop._on_revoke = recording_revoke  # type: ignore[method-assign]
    running = LoopThread(Recording, settings, loop=loop).start()
    try:
        assert loop.assigned.wait(30)
        wait_for(lambda: len(loop.assignment) == 2, what="both partitions assigned")
        now = int(time.time() * 1000)
        later = now + 7000  # longer than max.poll.interval.ms
        p = RawProducer({"bootstrap.servers": deimos_kafka})
        for partition, payload, due in ((0, "later", later), (1, "now", now)):
            p.produce(rung, payload.encode(), partition=partition, headers=[
                ("deimos-original-topic", topic.encode()), (RETRY_ATTEMPT_HEADER, b"1"),
                (RETRY_DUE_HEADER, str(due).encode())])
            assert p.flush(10) == 0
        assert Recording.both.wait(30), Recording.handled
        revoked_while_waiting = list(revoked)  # closing revokes them too
    finally:
        running.stop()
    assert running.error is None and revoked_while_waiting == []
    by_payload = {name: (partition, at) for name, partition, at in Recording.handled}
    assert by_payload["now"][1] < later - 5000  # partition 1 did not wait for partition 0
    assert later <= by_payload["later"][1] <= later + TOLERANCE_MS
