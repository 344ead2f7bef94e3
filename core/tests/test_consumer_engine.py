"""The consumer engine's rules that need no broker: handler classes, the error policy's
names, the retry schedule and the librdkafka configuration of each group protocol."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage

import deimos
from deimos.config import ConsumerSettings
from deimos.consumer import BatchConsumer, Consumer, Outcome, RetryPolicy, resolve_settings
from deimos.errors import ConfigError, TransientError
from deimos.kafka import consumer_config
from deimos.retry import Backoff
from deimos.testing import consume_message, sent_messages, test_mode

pytestmark = pytest.mark.usefixtures("isolated_deimos")


def test_an_async_consume_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError) as info:
        class OrderConsumer(Consumer):
            async def consume(self, payload: Any, metadata: Any) -> None:
                pass
    message = str(info.value)
    assert "OrderConsumer.consume is 'async def'" in message
    assert "never be awaited" in message


def test_an_async_consume_batch_is_refused_too() -> None:
    with pytest.raises(TypeError, match=r"Orders\.consume_batch is 'async def'"):
        class Orders(BatchConsumer):
            async def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
                pass


class _Flaky(Consumer):
    topic = "orders"
    group_id = "orders"
    failures_left = 0
    handled: list[Any] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        if type(self).failures_left:
            type(self).failures_left -= 1
            raise RuntimeError("not yet")
        type(self).handled.append(payload)


def test_on_error_retry_keeps_trying_past_the_attempts_until_the_message_succeeds() -> None:
    deimos.configure()
    _Flaky.failures_left, _Flaky.handled = 5, []
    with test_mode():
        consume_message(_Flaky, "o-1", on_error="retry", retry={"attempts": 2})
    assert _Flaky.handled == ["o-1"] and _Flaky.failures_left == 0


def test_on_error_raise_gives_up_after_the_attempts() -> None:
    deimos.configure()
    _Flaky.failures_left, _Flaky.handled = 5, []
    with test_mode(), pytest.raises(RuntimeError, match="not yet"):
        consume_message(_Flaky, "o-1", on_error="raise", retry={"attempts": 2})
    assert _Flaky.failures_left == 3  # two attempts made, then the consumer stops
    assert _Flaky.handled == []


class _ServiceDown(_Flaky):
    def consume(self, payload: Any, metadata: Any) -> None:
        raise TransientError("the inventory service is down")


def test_a_handler_raising_a_transient_error_is_waited_on_never_dead_lettered() -> None:
    # the broker loop pauses the partition and retries without counting an attempt; the
    # test helpers do not wait, so the error comes out instead of a dead letter
    deimos.configure()
    with test_mode(), pytest.raises(TransientError, match="inventory service"):
        consume_message(_ServiceDown, "o-1", on_error="dead_letter",
                        dead_letter_topic="orders.dlq", retry={"attempts": 1})
    assert sent_messages() == []


def test_backoff_grows_and_its_jitter_never_passes_the_cap() -> None:
    b = Backoff(backoff=1.0, max_backoff=60.0, multiplier=2.0, jitter=0.5)
    for attempt in range(1, 12):
        delays = [b.delay(attempt) for _ in range(200)]
        expected = min(60.0, 2.0 ** (attempt - 1))
        assert max(delays) <= 60.0
        assert min(delays) >= min(60.0, expected * 0.5)
    assert Backoff(backoff=0.5, max_backoff=30.0).delay(1) == 0.5
    assert Backoff(backoff=0.5, max_backoff=30.0).delay(3) == 2.0
    assert Backoff(backoff=0.5, max_backoff=30.0).delay(1000) == 30.0  # no overflow


def _settings(**overrides: Any) -> ConsumerSettings:
    return resolve_settings(_Flaky, **overrides)


def test_an_outage_once_over_leaves_the_next_one_at_the_first_backoff() -> None:
    # f3b3459's loop forgot a partition's outage at its first pass not ended by a transient
    # error; RetryPolicy.done did so only while some message was also being retried
    policy = RetryPolicy(_settings(retry={"backoff": 1.0, "multiplier": 2.0}))
    down = TransientError("the schema registry is down")
    assert [policy.failed("orders", 0, 7, down).delay for _ in range(3)] == [1.0, 2.0, 4.0]
    msgs = [KafkaMessage(topic="orders", partition=0, offset=7 + i) for i in range(2)]
    policy.done("orders", 0, msgs, Outcome(0, down, 7))  # still down: still counting
    assert policy.failed("orders", 0, 7, down).delay == 8.0
    policy.done("orders", 0, msgs, Outcome(2))  # through
    assert policy.failed("orders", 0, 9, down).delay == 1.0


def test_classic_protocol_sends_session_and_heartbeat_timeouts() -> None:
    conf = consumer_config(deimos.configure(), _settings(session_timeout_ms=6000))
    assert "group.protocol" not in conf
    assert conf["session.timeout.ms"] == 6000 and conf["heartbeat.interval.ms"] == 1000


def test_consumer_protocol_sends_only_properties_librdkafka_accepts_for_it() -> None:
    conf = consumer_config(deimos.configure(), _settings(group_protocol="consumer"))
    assert conf["group.protocol"] == "consumer"
    for key in ("session.timeout.ms", "heartbeat.interval.ms",
                "partition.assignment.strategy"):
        assert key not in conf
    from confluent_kafka import Consumer as KafkaConsumer

    KafkaConsumer(conf).close()  # librdkafka accepts it (it refuses the classic timeouts)


def test_consumer_protocol_with_a_classic_only_property_is_a_settings_error() -> None:
    cs = _settings(group_protocol="consumer", config={"session.timeout.ms": 6000})
    with pytest.raises(ConfigError) as info:
        consumer_config(deimos.configure(), cs)
    assert "consumers._Flaky.config" in str(info.value)
    assert "session.timeout.ms cannot be set with group_protocol = 'consumer'" in str(
        info.value)


def test_librdkafka_itself_refuses_the_classic_timeouts_under_the_consumer_protocol() -> None:
    """Why the setting exists: a user's config could override but not remove them."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException):
        KafkaConsumer({"group.id": "g", "group.protocol": "consumer",
                       "session.timeout.ms": 6000}).close()


def _broker_api_keys(bootstrap: str) -> set[int]:
    """The API keys the broker advertises (a Kafka ApiVersions v0 request, by hand: no
    confluent-kafka API exposes them)."""
    import socket
    import struct

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    client = b"deimos-test"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    _corr, _err, n = struct.unpack(">ihi", data[:10])
    return {struct.unpack(">h", data[10 + 6 * i:12 + 6 * i])[0] for i in range(n)}


@pytest.mark.kafka
def test_a_consumer_on_the_consumer_group_protocol_consumes(deimos_kafka: str,
                                                             deimos_topic: Any) -> None:
    if 68 not in _broker_api_keys(deimos_kafka):
        pytest.skip("the broker does not implement KIP-848 (no ConsumerGroupHeartbeat, API "
                    "68): the embedded Tansu 0.6 doesn't; set DEIMOS_TEST_BOOTSTRAP_SERVERS "
                    "to a Kafka 4 cluster to run this")
    from kafka_helpers import LoopThread, wait_for

    topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})

    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(["a", "b", "c"], sync=True)
    seen: list[str] = []

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            seen.append(payload)

    C.topic = topic
    loop = LoopThread(C, resolve_settings(C, group_id=f"kip848-{topic}",
                                          group_protocol="consumer", max_wait_time=0.2))
    loop.start()
    try:
        wait_for(lambda: seen == ["a", "b", "c"], timeout=60, what="the messages")
    finally:
        loop.stop()
