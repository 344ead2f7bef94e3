"""Dead letters go out per batch, in one delivery wait, before their offsets are committed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kafka_helpers import LoopThread, committed, group_settings, read_all, wait_for

import deimos
from deimos.consumer import BatchConsumer, Consumer
from deimos.errors import PublishError
from deimos.kafka import producers as kafka_producers

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


def _publish(topic: str, values: list[str]) -> None:
    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(values, sync=True)


def test_a_batch_dead_letters_all_its_failures_in_one_delivery_wait(
        kafka: str, deimos_topic: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    topic, dlq = deimos_topic(), deimos_topic()
    values = [f"bad-{i}" if i % 3 == 0 else f"ok-{i}" for i in range(30)]
    _publish(topic, values)
    waits: list[list[bytes | None]] = []
    real = kafka_producers.deliver

    def counting(settings: Any, to: str, messages: Any, timeout: float | None = None) -> None:
        waits.append([m.encoded_payload for m in messages])
        real(settings, to, messages, timeout)

    monkeypatch.setattr(kafka_producers, "deliver", counting)
    handled: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            if payload.startswith("bad"):
                raise ValueError(payload)
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dlq,
                              retry={"attempts": 1}, max_batch_size=500, max_wait_time=1.0)
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 30, what="commit")
    finally:
        loop.stop()
    bad = [v for v in values if v.startswith("bad")]
    assert handled == [v for v in values if v.startswith("ok")]
    # one wait per polled batch (however the broker split the 30 messages into fetches)
    assert sum(len(w) for w in waits) == len(bad)
    assert len(waits) <= 3, waits
    assert [m.value().decode() for m in read_all(kafka, dlq, len(bad))] == bad


def test_an_unwritable_dead_letter_stops_the_consumer_before_its_offset_is_committed(
        kafka: str, deimos_topic: Any, deimos_reset: None) -> None:
    topic = deimos_topic()
    # published with the default timeouts: a new producer's first acknowledgement can take
    # longer than the 1 s the dead-letter write below is allowed on a loaded machine
    _publish(topic, ["ok-0", "ok-1", "bad-2", "ok-3"])
    deimos.configure(kafka={"bootstrap_servers": kafka},
                     producers={"sync_timeout": 1.0,
                                "config": {"allow.auto.create.topics": False,
                                           "message.timeout.ms": 3000}})
    handled: list[str] = []

    class B(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            if any(p.startswith("bad") for p in payloads):
                raise ValueError("bad in batch")
            handled.extend(payloads)

    B.topic = topic
    # the dead-letter topic does not exist and may not be created: the write cannot succeed
    settings = group_settings(B, on_error="dead_letter",
                              dead_letter_topic=f"missing-{uuid.uuid4().hex[:8]}",
                              retry={"attempts": 1}, max_wait_time=1.0)
    loop = LoopThread(B, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, PublishError)
    assert "could not write 1 message(s) to dead-letter topic" in str(loop.error)
    # ok-0 and ok-1 were handled one by one before it; nothing from bad-2 on is committed
    assert handled[:2] == ["ok-0", "ok-1"]
    assert committed(kafka, settings.group_id, topic) == 2
