"""Producers and consumers on the real broker (embedded Tansu, or DEIMOS_TEST_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kafka_helpers import LoopThread, committed, group_settings, read_all, wait_for

import deimos
from deimos.consumer import BatchConsumer, BatchError, Consumer
from deimos.errors import PublishError
from deimos.partitioner import murmur2_partition
from deimos.plugins import get_registry

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     metrics={"providers": ["mock"]})
    get_registry().get("metrics", "mock").obj.clear()
    return deimos_kafka


def mock_metrics() -> Any:
    return get_registry().get("metrics", "mock").obj


def test_keyed_messages_land_on_the_partition_of_kafkas_default_partitioner(kafka, deimos_topic):
    topic = deimos_topic(partitions=6)

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic
    keys = [f"key-{i}" for i in range(60)]
    P.publish_list([f"v{i}" for i in range(60)], keys=keys, sync=True)
    # partition_key overrides the key for partitioning
    P.publish("explicit", key="k", partition_key="route-me", sync=True)
    got = read_all(kafka, topic, 61)
    assert len(got) == 61
    for m in got:
        key = m.key().decode()
        expect_from = b"route-me" if m.value() == b"explicit" else key.encode()
        assert m.partition() == murmur2_partition(expect_from, 6), key


def test_tombstones_and_headers_round_trip_through_a_consumer(kafka, deimos_topic):
    topic = deimos_topic()

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic
    seen: list[tuple[Any, Any, dict[str, bytes]]] = []

    class C(Consumer):
        key_config = "plain"

        def consume(self, payload: Any, metadata: Any) -> None:
            seen.append((payload, metadata.key, metadata.headers))

    C.topic = topic
    P.publish("hello", key="a", headers={"trace": "t-1", "bin": b"\x00\x01"}, sync=True)
    P.publish(None, key="a", sync=True)
    P.publish_list([deimos.tombstone("b")], sync=True)
    loop = LoopThread(C, group_settings(C)).start()
    try:
        wait_for(lambda: len(seen) == 3, what="3 messages")
    finally:
        loop.stop()
    assert seen[0] == ("hello", "a", {"trace": b"t-1", "bin": b"\x00\x01"})
    assert seen[1] == (None, "a", {})
    assert seen[2] == (None, "b", {})


def test_sync_kafka_backend_raises_on_delivery_failure_and_counts_nothing_published(
        kafka, deimos_topic):
    topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": kafka}, metrics={"providers": ["mock"]},
                     producers={"backend": "kafka", "config": {"message.max.bytes": 2000}})
    mock_metrics().clear()

    class P(deimos.Producer):
        pass

    P.topic = topic
    with pytest.raises(PublishError, match=r"not delivered|refused"):
        P.publish("x" * 5000)
    assert mock_metrics().total("publish", topic=topic) == 0
    assert mock_metrics().total("publish_error", topic=topic) == 1
    P.publish("small")
    assert mock_metrics().total("publish", topic=topic) == 1
    assert [m.value() for m in read_all(kafka, topic, 1)] == [b"small"]


@pytest.mark.parametrize("backend", ["kafka", "kafka_async"])
def test_a_refused_message_counts_one_error_once_and_the_rest_of_its_list_as_published(
        kafka, deimos_topic, backend):
    topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": kafka}, metrics={"providers": ["mock"]},
                     producers={"backend": backend, "config": {"message.max.bytes": 2000}})
    mock_metrics().clear()
    failed: list[Any] = []

    class P(deimos.Producer):
        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            failed.append(message.encoded_payload)

    P.topic = topic
    with pytest.raises(PublishError, match=r"1 .*message") as info:
        P.publish_list(["a", "x" * 5000, "b"])
    assert info.value.failed == 1
    assert mock_metrics().total("publish_error", topic=topic) == 1
    assert mock_metrics().total("publish", topic=topic) == 2
    with pytest.raises(PublishError):
        P.publish("y" * 5000)  # the per-message path
    with pytest.raises(PublishError):
        asyncio.run(P.apublish_list(["c", "z" * 5000]))  # the awaited list path
    assert mock_metrics().total("publish_error", topic=topic) == 3
    assert mock_metrics().total("publish", topic=topic) == 3
    assert deimos.flush(10) == 0
    assert sorted(m.value() for m in read_all(kafka, topic, 3)) == [b"a", b"b", b"c"]
    if backend == "kafka_async":  # the asynchronous backend's failures reach the callback
        assert sorted(len(v) for v in failed) == [5000, 5000, 5000]


def test_async_backend_reports_failures_to_callback_log_and_metric(kafka, caplog):
    from deimos.testing.broker import _free_port

    # a broker that is not there: the messages time out after publish_list returned
    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     metrics={"providers": ["mock"]},
                     producers={"backend": "kafka_async",
                                "config": {"message.timeout.ms": 1000}})
    mock_metrics().clear()

    failures: list[Any] = []

    class P(deimos.Producer):
        topic = "unreachable"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            failures.append((message, error))

    P.publish_list(["a", "b"])  # returns at once
    wait_for(lambda: len(failures) == 2, timeout=20, what="delivery failures")
    assert mock_metrics().total("publish_error", topic="unreachable") == 2
    assert {m.encoded_payload for m, _ in failures} == {b"a", b"b"}
    assert "could not deliver a message to unreachable" in caplog.text


def test_failure_on_message_n_commits_before_n_and_redelivers_after_restart(kafka, deimos_topic):
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list([str(i) for i in range(10)], sync=True)
    handled: list[str] = []

    class Failing(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            if payload == "5":
                raise RuntimeError("boom on 5")
            handled.append(payload)

    Failing.topic = topic
    settings = group_settings(Failing)
    loop = LoopThread(Failing, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, RuntimeError)
    assert handled == [str(i) for i in range(5)]
    assert committed(kafka, settings.group_id, topic) == 5

    again: list[str] = []

    class Healthy(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            again.append(payload)

    Healthy.topic = topic
    loop2 = LoopThread(Healthy, settings).start()
    try:
        wait_for(lambda: len(again) == 5, what="redelivery")
    finally:
        loop2.stop()
    assert again == [str(i) for i in range(5, 10)]
    assert committed(kafka, settings.group_id, topic) == 10


def test_batch_error_index_commits_the_messages_before_it(kafka, deimos_topic):
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list([str(i) for i in range(10)], sync=True)

    class B(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            if "7" in payloads:
                raise BatchError(payloads.index("7"), ValueError("bad 7"))

    B.topic = topic
    settings = group_settings(B)
    loop = LoopThread(B, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, ValueError)
    assert committed(kafka, settings.group_id, topic) == 7


def test_retry_with_backoff_then_dead_letter_keeps_bytes_key_headers_and_error(
        kafka, deimos_topic):
    topic, dlq = deimos_topic(), deimos_topic()

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic
    P.publish_list(["ok-1", "poison", "ok-2"], keys=["k1", "k2", "k3"],
                   headers={"origin": "test"}, sync=True)
    attempts: list[str] = []
    handled: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            attempts.append(payload)
            if payload == "poison":
                raise ValueError("cannot handle poison")
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dlq,
                              retry={"attempts": 3, "backoff": 0.1, "multiplier": 2})
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: handled == ["ok-1", "ok-2"], what="healthy messages")
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 3, what="commit")
    finally:
        loop.stop()
    assert attempts.count("poison") == 3
    [dead] = read_all(kafka, dlq, 1)
    assert dead.value() == b"poison" and dead.key() == b"k2"
    headers = dict(dead.headers())
    assert headers["origin"] == b"test"
    assert headers["deimos-error-class"] == b"builtins.ValueError"
    assert headers["deimos-error-message"] == b"cannot handle poison"
    assert headers["deimos-original-topic"] == topic.encode()
    assert headers["deimos-original-partition"] == b"0"
    assert headers["deimos-original-offset"] == b"1"
    assert headers["deimos-attempts"] == b"3"
    assert mock_metrics().total("dead_lettered", topic=topic) == 1
    assert mock_metrics().total("retries", topic=topic) == 2


def test_skip_policy_counts_and_moves_on(kafka, deimos_topic):
    topic = deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(["a", "bad", "c"], sync=True)
    handled: list[str] = []

    class C(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            if "bad" in payloads:
                raise RuntimeError("bad in batch")
            handled.extend(payloads)

    C.topic = topic
    settings = group_settings(C, on_error="skip")
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 3, what="commit")
    finally:
        loop.stop()
    assert handled == ["a", "c"]
    assert mock_metrics().total("skipped", topic=topic) == 1
    assert mock_metrics().total("handler", topic=topic, status="batch_error") >= 1


def test_undecodable_message_follows_the_policy_instead_of_crash_looping(kafka, deimos_topic):
    topic, dlq = deimos_topic(), deimos_topic()
    from confluent_kafka import Producer as RawProducer

    raw = RawProducer({"bootstrap.servers": kafka})
    for v in (b"fine", b"\xff\xfe not utf-8", b"also fine"):
        raw.produce(topic, v)
    raw.flush(10)
    handled: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dlq)
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: handled == ["fine", "also fine"], what="decodable messages")
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 3, what="commit")
    finally:
        loop.stop()
    assert loop.error is None
    [dead] = read_all(kafka, dlq, 1)
    assert dead.value() == b"\xff\xfe not utf-8"
    assert dict(dead.headers())["deimos-error-class"] == b"deimos.errors.DecodeError"


def test_partition_keeps_flowing_while_another_is_paused_for_retry(kafka, deimos_topic):
    topic = deimos_topic(partitions=2)

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish("slow", partition_key=b"x", sync=True)
    p_slow = murmur2_partition(b"x", 2)
    other_key = next(k for k in (b"a", b"b", b"c", b"d") if murmur2_partition(k, 2) != p_slow)
    handled: list[str] = []
    released = threading.Event()

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            if payload == "slow" and not released.is_set():
                raise RuntimeError("not yet")
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C, retry={"attempts": 1000, "backoff": 0.2, "max_backoff": 0.2})
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: mock_metrics().total("retries", topic=topic) >= 1, what="a retry")
        P.publish_list([f"fast-{i}" for i in range(5)], partition_keys=[other_key] * 5,
                       sync=True)
        wait_for(lambda: len(handled) == 5, what="other partition")
        assert "slow" not in handled
        released.set()
        wait_for(lambda: "slow" in handled, what="retried message")
    finally:
        loop.stop()


def test_consumer_span_continues_the_producer_trace_and_failures_mark_it(kafka, deimos_topic):
    topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": kafka}, metrics={"providers": ["mock"]},
                     tracing={"providers": ["mock"]})
    tracer = get_registry().get("tracing", "mock").obj
    tracer.clear()
    mock_metrics().clear()

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(["ok", "fail"], sync=True)
    seen: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            seen.append(payload)
            if payload == "fail":
                raise RuntimeError("handler failed")

    C.topic = topic
    loop = LoopThread(C, group_settings(C, on_error="skip")).start()
    try:
        wait_for(lambda: seen == ["ok", "fail"], what="both messages")
        wait_for(lambda: len([s for s in tracer.spans if s.name.startswith("process")]) == 2,
                 what="consumer spans")
    finally:
        loop.stop()
    [publish] = [s for s in tracer.spans if s.name == f"send {topic}"]
    process = [s for s in tracer.spans if s.name == f"process {topic}"]
    assert {s.trace_id for s in process} == {publish.trace_id}
    assert all(s.parent_trace_id == publish.trace_id for s in process)
    assert [s.error is not None for s in process] == [False, True]
    assert process[0].attributes["messaging.destination.name"] == topic
    assert process[0].attributes["messaging.kafka.offset"] == 0
    assert mock_metrics().total("handler", topic=topic, status="error") == 1
    assert mock_metrics().total("handler", topic=topic, status="success") == 1
    assert mock_metrics().total("handler", topic=topic, status="received") == 2


def test_fatal_error_stops_the_consumer_whatever_the_policy_after_committing_what_succeeded(
        kafka, deimos_topic):
    topic, dlq = deimos_topic(), deimos_topic()

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(["a", "bad", "fatal", "d"], sync=True)

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            if payload in ("bad", "fatal"):
                raise ValueError(payload)

        def fatal_error(self, exc: BaseException, payload: Any, metadata: Any) -> bool:
            return str(exc) == "fatal"

    C.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dlq,
                              retry={"attempts": 3, "backoff": 0.05})
    loop = LoopThread(C, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, ValueError) and str(loop.error) == "fatal"
    assert committed(kafka, settings.group_id, topic) == 2  # "a" handled, "bad" dead-lettered
    assert [m.value() for m in read_all(kafka, dlq, 1)] == [b"bad"]
