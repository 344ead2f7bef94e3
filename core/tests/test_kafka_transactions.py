"""Kafka transactions: a transactional consumer's outputs and offsets commit together, per
batch; a failed handler call's outputs are aborted; ``deimos.transaction()`` commits or
aborts; a second instance with the same transactional.id fences the first.

On the embedded Tansu a ``read_committed`` reader also sees aborted records (its Fetch
responses list no aborted transactions), so the tests whose aborted records reach the
broker are expected to fail there and run normally against a real cluster
(``DEIMOS_TEST_BOOTSTRAP_SERVERS``). Their twins keep the aborted records in the client
(a linger longer than the test, so an abort purges them before they are sent) and hold on
both.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer as RawProducer
from kafka_helpers import (
    ON_TANSU,
    LoopThread,
    aborted_records_visible_on_tansu,
    committed,
    read_values,
    wait_for,
)
from kafka_helpers import group_settings as _group_settings
from pydantic import ValidationError

import deimos
from deimos.config import ConsumerSettings
from deimos.consumer import BatchConsumer, Consumer
from deimos.errors import ConfigError
from deimos.kafka import transactions
from deimos.kafka.config import consumer_config
from deimos.kafka.transactions import TransactionFenced

pytestmark = pytest.mark.kafka

#: aborted messages stay in the client (purged by the abort); commits flush regardless
KEEP_QUEUED = {"linger.ms": 20000}


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


def _produce(bootstrap: str, topic: str, values: list[str], partition: int = 0) -> None:
    p = RawProducer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, v.encode(), partition=partition)
    assert p.flush(30) == 0


def group_settings(cls: type, **overrides: Any) -> Any:
    """A fresh group; on the embedded broker, which allows them, short sessions: a group
    join takes a few heartbeats."""
    quick = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 400} if ON_TANSU else {}
    return _group_settings(cls, **({"config": quick} if quick else {}), **overrides)


def _output_producer(topic: str) -> type[deimos.Producer]:
    return type("Out", (deimos.Producer,), {"topic": topic})


def _flush_transaction() -> None:
    """What the open transaction queued goes to the broker now (still uncommitted)."""
    tx = transactions.current()
    assert tx is not None
    assert tx.producer.sp.producer.flush(10) == 0


# --- settings ---------------------------------------------------------------------------------

def test_transactional_settings_name_what_is_wrong() -> None:
    base = {"name": "c", "topics": ["t"], "group_id": "g"}
    with pytest.raises(ValidationError, match="transactional = true needs transactional_id"):
        ConsumerSettings.model_validate({**base, "transactional": True})
    with pytest.raises(ValidationError, match="max_concurrency 4 cannot be used"):
        ConsumerSettings.model_validate({**base, "transactional": True,
                                         "transactional_id": "svc", "max_concurrency": 4})
    with pytest.raises(ValidationError, match=r"enable\.auto\.commit cannot be set"):
        ConsumerSettings.model_validate({**base, "transactional": True,
                                         "transactional_id": "svc",
                                         "config": {"enable.auto.commit": True}})
    with pytest.raises(ValidationError, match="isolation_level"):
        ConsumerSettings.model_validate({**base, "isolation_level": "committed"})
    with pytest.raises(ConfigError, match=r"consumers\.0: .*needs transactional_id"):
        deimos.configure(consumers=[{**base, "transactional": True}], replace=True)


def test_a_transactional_consumer_turns_off_its_own_offset_commits(deimos_reset: None) -> None:
    settings = deimos.configure(kafka={"bootstrap_servers": "k:9092"})
    cs = ConsumerSettings.model_validate({"name": "c", "topics": ["t"], "group_id": "g",
                                          "transactional": True, "transactional_id": "svc",
                                          "isolation_level": "read_uncommitted"})
    conf = consumer_config(settings, cs)
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_uncommitted"
    plain = consumer_config(settings, ConsumerSettings.model_validate(
        {"name": "c", "topics": ["t"], "group_id": "g"}))
    assert plain["isolation.level"] == "read_committed"
    assert plain["enable.auto.commit"] is True


def test_deimos_transaction_needs_producers_transactional_id(deimos_reset: None) -> None:
    deimos.configure(kafka={"bootstrap_servers": "k:9092"})
    with pytest.raises(ConfigError, match=r"producers\.transactional_id"), \
            deimos.transaction():
        pass


# --- a transactional consumer -----------------------------------------------------------------

def test_a_transactional_consumers_outputs_and_offsets_commit_together(
        kafka: str, deimos_topic: Any) -> None:
    source, out = deimos_topic(partitions=2), deimos_topic()
    values = [f"v{i}" for i in range(300)]
    _produce(kafka, source, values[:150], partition=0)
    _produce(kafka, source, values[150:], partition=1)
    Out = _output_producer(out)

    class Transform(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            Out.publish(f"{payload}-out")

    Transform.topic = source
    settings = group_settings(Transform, transactional=True,
                              transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    loop = LoopThread(Transform, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, source, 0)
                 + committed(kafka, settings.group_id, source, 1) == 300, what="commits")
    finally:
        loop.stop()
    assert loop.error is None
    seen = read_values(kafka, out, "read_committed", until=300)
    assert sorted(seen) == sorted(f"{v}-out" for v in values)
    # per input partition in order
    assert [s for s in seen if int(s[1:-4]) < 150] == [f"v{i}-out" for i in range(150)]


def test_outputs_of_an_open_transaction_are_invisible_to_read_committed_until_it_commits(
        kafka: str, deimos_topic: Any) -> None:
    source, out = deimos_topic(), deimos_topic()
    _produce(kafka, source, [f"v{i}" for i in range(20)])
    Out = _output_producer(out)
    inside, release = threading.Event(), threading.Event()

    class Held(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            Out.publish_list([f"{p}-out" for p in payloads])
            _flush_transaction()
            inside.set()
            assert release.wait(30)

    Held.topic = source
    settings = group_settings(Held, transactional=True,
                              transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    loop = LoopThread(Held, settings).start()
    try:
        assert inside.wait(30)
        # on the broker, uncommitted: read_uncommitted sees the outputs, read_committed not
        assert len(read_values(kafka, out, "read_uncommitted", until=20)) == 20
        assert read_values(kafka, out, "read_committed", timeout=3) == []
        release.set()
        wait_for(lambda: committed(kafka, settings.group_id, source) == 20, what="commit")
    finally:
        release.set()
        loop.stop()
    assert len(read_values(kafka, out, "read_committed", until=20)) == 20


def _retried_once(kafka: str, deimos_topic: Any, send_before_failing: bool) -> None:
    """Message v5 publishes its output, then fails once: the batch's transaction is
    aborted, v5 retried; read_committed sees every output once, in order."""
    source, out = deimos_topic(), deimos_topic()
    _produce(kafka, source, [f"v{i}" for i in range(10)])
    Out = _output_producer(out)
    calls: list[str] = []

    class Flaky(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            calls.append(payload)
            Out.publish(f"{payload}-out")
            if payload == "v5" and calls.count("v5") == 1:
                if send_before_failing:
                    _flush_transaction()
                raise ValueError("first attempt")

    Flaky.topic = source
    settings = group_settings(Flaky, transactional=True,
                              transactional_id=f"t-{uuid.uuid4().hex[:8]}",
                              retry={"attempts": 3, "backoff": 0})
    loop = LoopThread(Flaky, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, source) == 10, what="commit")
    finally:
        loop.stop()
    assert loop.error is None
    assert calls.count("v5") == 2
    assert read_values(kafka, out, "read_committed", until=10) == [f"v{i}-out" for i in range(10)]


def test_a_failure_rewinds_every_batch_of_the_open_transaction_and_a_stop_commits_it(
        kafka: str, deimos_topic: Any) -> None:
    """transaction_interval spans batches: a failure in the fifth batch aborts the four
    before it too, so they are handled again; stopping commits what the open one holds."""
    deimos.configure(producers={"config": KEEP_QUEUED})
    source, out = deimos_topic(), deimos_topic()
    _produce(kafka, source, [f"v{i}" for i in range(30)])
    Out = _output_producer(out)
    calls: list[str] = []

    class Flaky(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            calls.append(payload)
            Out.publish(f"{payload}-out")
            if payload == "v22" and calls.count("v22") == 1:
                raise ValueError("first attempt")

    Flaky.topic = source
    settings = group_settings(Flaky, transactional=True, max_batch_size=5,
                              transaction_interval=600,  # nothing commits before the stop
                              transactional_id=f"t-{uuid.uuid4().hex[:8]}",
                              retry={"attempts": 3, "backoff": 0})
    loop = LoopThread(Flaky, settings).start()
    try:
        wait_for(lambda: len(calls) == 23 + 30, what="the rewound transaction handled")
        assert committed(kafka, settings.group_id, source) < 0  # still open: nothing stored
    finally:
        loop.stop()
    assert loop.error is None
    assert calls == [f"v{i}" for i in range(23)] + [f"v{i}" for i in range(30)]
    assert committed(kafka, settings.group_id, source) == 30
    assert read_values(kafka, out, "read_committed", until=30) == [f"v{i}-out" for i in range(30)]


def test_a_failing_handlers_queued_outputs_are_aborted_and_the_message_retried(
        kafka: str, deimos_topic: Any) -> None:
    deimos.configure(producers={"config": KEEP_QUEUED})
    _retried_once(kafka, deimos_topic, send_before_failing=False)


@aborted_records_visible_on_tansu
def test_a_failing_handlers_sent_outputs_are_never_visible_to_read_committed(
        kafka: str, deimos_topic: Any) -> None:
    _retried_once(kafka, deimos_topic, send_before_failing=True)


def test_a_message_given_up_on_is_dead_lettered_in_the_next_transaction(
        kafka: str, deimos_topic: Any) -> None:
    deimos.configure(producers={"config": KEEP_QUEUED})
    source, out, dlq = deimos_topic(), deimos_topic(), deimos_topic()
    _produce(kafka, source, [f"v{i}" for i in range(6)])
    Out = _output_producer(out)

    class Bad(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            Out.publish(f"{payload}-out")
            if payload == "v3":
                raise ValueError("never")

    Bad.topic = source
    settings = group_settings(Bad, transactional=True,
                              transactional_id=f"t-{uuid.uuid4().hex[:8]}",
                              on_error="dead_letter", dead_letter_topic=dlq,
                              retry={"attempts": 2, "backoff": 0})
    loop = LoopThread(Bad, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, source) == 6, what="commit")
    finally:
        loop.stop()
    assert loop.error is None
    assert read_values(kafka, out, "read_committed", until=5) == [
        f"v{i}-out" for i in range(6) if i != 3]
    assert read_values(kafka, dlq, "read_committed", until=1) == ["v3"]


def test_a_second_instance_with_the_same_transactional_id_fences_the_consumer(
        kafka: str, deimos_topic: Any) -> None:
    source, out = deimos_topic(), deimos_topic()
    _produce(kafka, source, [f"v{i}" for i in range(5)])
    Out = _output_producer(out)
    inside, release = threading.Event(), threading.Event()

    class Held(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            inside.set()
            assert release.wait(30)
            Out.publish_list([f"{p}-out" for p in payloads])

    Held.topic = source
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    settings = group_settings(Held, transactional=True, transactional_id=prefix)
    loop = LoopThread(Held, settings).start()
    try:
        assert inside.wait(30)
        full_id = f"{prefix}-{settings.name}-0"
        newer = RawProducer({"bootstrap.servers": kafka, "transactional.id": full_id})
        newer.init_transactions(10)  # fences the consumer's producer
        release.set()
        loop.thread.join(30)
        assert not loop.thread.is_alive()
    finally:
        release.set()
        loop.stop()
    assert isinstance(loop.error, TransactionFenced)
    assert full_id in str(loop.error) and "fenced" in str(loop.error)
    assert committed(kafka, settings.group_id, source) < 0  # nothing committed
    assert read_values(kafka, out, "read_uncommitted", timeout=5) == []


# --- deimos.transaction() ---------------------------------------------------------------------

def _plain_transactions(kafka: str, deimos_topic: Any, send_before_raising: bool) -> None:
    out = deimos_topic()
    deimos.configure(producers={"transactional_id": f"p-{uuid.uuid4().hex[:8]}"})
    Out = _output_producer(out)
    with deimos.transaction():
        Out.publish("a")
        Out.publish_list(["b", "c"], sync=True)
    with pytest.raises(ValueError, match="boom"), deimos.transaction():
        Out.publish("aborted")
        if send_before_raising:
            _flush_transaction()
        raise ValueError("boom")
    with deimos.transaction():
        Out.publish("d")
    assert transactions.current() is None
    assert read_values(kafka, out, "read_committed", until=4) == ["a", "b", "c", "d"]


def test_deimos_transaction_commits_on_exit_and_drops_queued_messages_on_exception(
        kafka: str, deimos_topic: Any) -> None:
    deimos.configure(producers={"config": KEEP_QUEUED})
    _plain_transactions(kafka, deimos_topic, send_before_raising=False)


@aborted_records_visible_on_tansu
def test_deimos_transaction_aborts_sent_messages_on_exception(
        kafka: str, deimos_topic: Any) -> None:
    _plain_transactions(kafka, deimos_topic, send_before_raising=True)


def test_deimos_transaction_does_not_nest(kafka: str) -> None:
    deimos.configure(producers={"transactional_id": f"p-{uuid.uuid4().hex[:8]}"})
    with deimos.transaction(), pytest.raises(deimos.DeimosError, match="do not nest"), \
            deimos.transaction():
        pass
