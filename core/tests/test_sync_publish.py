"""A synchronous publish waits for its own messages only, on the real broker.

The other thread's messages are made undeliverable without touching the broker: the
producers may not auto-create topics (``allow.auto.create.topics = false``, which the
embedded broker honours like Kafka), so messages to a missing topic wait in librdkafka's
queue until ``message.timeout.ms``.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kafka_helpers import read_all, wait_for

import deimos
from deimos.config import get_settings
from deimos.errors import PublishError
from deimos.kafka import shared_producer

pytestmark = pytest.mark.kafka

STUCK_FOR_MS = 6000


@pytest.fixture
def no_auto_create(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"backend": "kafka_async", "sync_timeout": 2.0,
                                "config": {"allow.auto.create.topics": False,
                                           "message.timeout.ms": STUCK_FOR_MS}})
    return deimos_kafka


def test_sync_publish_is_not_delayed_or_failed_by_another_threads_undeliverable_async_messages(
        no_auto_create: str, deimos_topic: Any) -> None:
    good_topic = deimos_topic()
    failed: list[Any] = []

    class Stuck(deimos.Producer):
        topic = f"missing-{uuid.uuid4().hex[:8]}"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            failed.append(error)

    class Good(deimos.Producer):
        topic = good_topic

    Good.publish("warm-up", sync=True)  # the synchronous producer's id handshake, untimed
    other = threading.Thread(target=lambda: Stuck.publish_list(["x"] * 200))
    other.start()
    other.join(10)
    assert shared_producer(get_settings()).producer.flush(0) == 200  # all still queued

    start = time.monotonic()
    Good.publish("mine", sync=True)
    Good.publish_list(["a", "b"], sync=True)
    elapsed = time.monotonic() - start

    assert elapsed < 1.5, f"the synchronous publishes took {elapsed:.2f}s"
    assert not failed, "the other thread's messages were still waiting, not failed"
    assert shared_producer(get_settings()).producer.flush(0) == 200
    assert [m.value() for m in read_all(no_auto_create, good_topic, 4)] == [
        b"warm-up", b"mine", b"a", b"b"]
    # and the other thread's messages fail on their own, later, through their own path
    wait_for(lambda: len(failed) == 200, timeout=STUCK_FOR_MS / 1000 + 10,
             what="the stuck messages to time out")


def test_a_failing_sync_publish_reports_only_its_own_messages(
        no_auto_create: str, deimos_topic: Any) -> None:
    class Stuck(deimos.Producer):
        topic = f"missing-{uuid.uuid4().hex[:8]}"

    class AlsoMissing(deimos.Producer):
        topic = f"missing-{uuid.uuid4().hex[:8]}"

    Stuck.publish_list(["x"] * 50)  # another caller's asynchronous traffic, stuck
    start = time.monotonic()
    with pytest.raises(PublishError) as info:
        AlsoMissing.publish_list(["one", "two"], sync=True)
    elapsed = time.monotonic() - start
    assert 1.9 < elapsed < 5.0  # producers.sync_timeout, not the other traffic's 6 s
    message = str(info.value)
    assert f"2 of 2 message(s) to {AlsoMissing.topic!r} were not acknowledged within 2.0s" \
        in message
    assert no_auto_create in message  # names the bootstrap servers it was talking to


def test_a_synchronous_publish_list_waits_once_for_all_its_messages(
        deimos_kafka: str, deimos_reset: None, deimos_topic: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from deimos.backends import kafka as kafka_backend

    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"max_batch_size": 500})
    waits: list[int] = []
    real = kafka_backend.deliver

    def counting(settings: Any, topic: str, messages: Any, timeout: float | None = None) -> None:
        waits.append(len(messages))
        real(settings, topic, messages, timeout)

    monkeypatch.setattr(kafka_backend, "deliver", counting)

    class P(deimos.Producer):
        topic = deimos_topic()

    P.publish_list([str(i) for i in range(1200)], sync=True)
    assert waits == [1200]  # not one wait per 500-message chunk
    sync_producer = shared_producer(get_settings(), reports=True)
    assert sync_producer.linger_ms == 0
    assert len(read_all(deimos_kafka, P.topic, 1200)) == 1200


def test_a_synchronous_publish_follows_the_asynchronous_ones_before_it_on_the_same_topic(
        deimos_kafka: str, deimos_reset: None, deimos_topic: Any) -> None:
    # two librdkafka producers (asynchronous, synchronous) would race to the broker; the
    # asynchronous one lingers, so without the wait the synchronous message lands first
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"config": {"linger.ms": 200}})

    class P(deimos.Producer):
        topic = deimos_topic()
        key_config = "plain"

    P.publish_list([f"async-{i}" for i in range(100)], keys=["k"] * 100, sync=False)
    P.publish("sync", key="k", sync=True)
    P.publish(None, key="k", sync=False)  # after a synchronous call: queued behind it anyway
    deimos.flush()
    values = [m.value() for m in read_all(deimos_kafka, P.topic, 102)]
    assert values == [f"async-{i}".encode() for i in range(100)] + [b"sync", None]
