"""Non-blocking retry topics: the settings, the test helpers, and the ladder on the real broker
started as ``deimos run`` starts it (due times, order of attempts, the dead letter after the
last rung, the main partition never paused, a forward that cannot be written)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any, ClassVar

import pytest
from kafka_helpers import LoopThread, committed, group_settings, read_all, wait_for

import deimos
from deimos.consumer import Consumer, ConsumerLoop, consumer_settings_for, resolve_settings
from deimos.consumer.retry_loop import RetryTopicsLoop
from deimos.consumer.retry_topics import (
    RETRY_ATTEMPT_HEADER,
    RETRY_DUE_HEADER,
    parse_duration,
    retry_topic,
)
from deimos.errors import ConfigError, PublishError
from deimos.runner import Executor, consumer_factories, run_until_stopped
from deimos.runtime import get_runtime
from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

#: how late after its due time a rung may handle a message: one idle poll of the retry
#: consumer (RETRY_POLL_SECONDS) plus the fetch and the handler, with room for a loaded
#: two-core machine
TOLERANCE_MS = 1500


class Flaky(Consumer):
    """``"name:N"`` fails its first N deliveries (counted across the main topic and every
    rung: one class, two loops); ``"name"`` never fails."""

    calls: ClassVar[list[tuple[str, str, float, dict[str, bytes]]]] = []
    seen: ClassVar[Counter[str]] = Counter()
    lock = threading.Lock()
    #: set once every payload of :attr:`expect` had its deliveries
    settled = threading.Event()
    expect: ClassVar[dict[str, int]] = {}

    def consume(self, payload: Any, metadata: Any) -> None:
        name, _, fails = payload.partition(":")
        with self.lock:
            self.seen[name] += 1
            n = self.seen[name]
            self.calls.append((name, metadata.topic, time.time() * 1000, metadata.headers))
            if self.expect and all(self.seen[k] >= v for k, v in self.expect.items()):
                self.settled.set()
        if fails and n <= int(fails):
            raise ValueError(f"{name} fails {fails} time(s)")

    @classmethod
    def reset(cls, expect: dict[str, int]) -> None:
        cls.calls, cls.seen, cls.expect = [], Counter(), expect
        cls.settled = threading.Event()


def _headers(pairs: Any) -> dict[str, str]:
    return {k: bytes(v).decode() for k, v in (pairs.items() if isinstance(pairs, dict)
                                              else pairs)}


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


class Plain(Consumer):
    topic = "orders"
    group_id = "g"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"on_error": "retry_topics", "dead_letter_topic": "d"},
     "consumers.Plain.retry_topics: on_error 'retry_topics' needs retry_topics"),
    ({"on_error": "retry_topics", "retry_topics": ["5s"]},
     "consumers.Plain.dead_letter_topic: on_error 'retry_topics' needs dead_letter_topic"),
    ({"on_error": "retry_topics", "retry_topics": ["5s", "soon"], "dead_letter_topic": "d"},
     "retry_topics\n  Value error, rung 2 ('soon'): not a duration"),
    ({"on_error": "retry_topics", "retry_topics": ["0s"], "dead_letter_topic": "d"},
     "rung 1 ('0s'): a rung's delay must be longer than 0"),
    ({"retry_topics": ["5s"], "on_error": "skip"},
     "consumers.Plain.retry_topics: set, but on_error is 'skip'"),
    ({"on_error": "retry_topics", "retry_topics": ["5s"], "dead_letter_topic": "d",
      "topics": [], "topic_pattern": "orders.*"},
     "consumers.Plain.topic_pattern: on_error 'retry_topics' needs its topics named"),
    ({"on_error": "retry_topics", "retry_topics": ["5s"], "dead_letter_topic": "d",
      "transactional": True, "transactional_id": "svc"},
     "consumers.Plain.transactional: on_error 'retry_topics' forwards a failed message"),
])
def test_retry_topics_settings_are_refused_with_what_is_wrong(overrides: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises((ValueError, ConfigError)) as raised:
        resolve_settings(Plain, **overrides)
    assert message in str(raised.value)


def test_an_entry_may_set_only_the_ladder_of_a_class_that_chose_retry_topics(
        deimos_reset: None) -> None:
    deimos.configure(consumers=[{"class": "test_retry_topics:Ladder",
                                 "retry_topics": ["1s"]}])
    [(_, cs)] = consumer_settings_for(get_runtime())
    assert (cs.on_error, cs.retry_topics, cs.dead_letter_topic) == (
        "retry_topics", ["1s"], "orders.dlq")


def test_a_bad_rung_names_the_setting_in_the_configuration_error(deimos_reset: None) -> None:
    with pytest.raises(deimos.errors.ConfigError) as raised:
        deimos.configure(consumers=[{"class": "test_retry_topics:Plain", "on_error":
                                     "retry_topics", "retry_topics": ["1m", "10 minutes"],
                                     "dead_letter_topic": "d"}])
    assert "consumers.0.retry_topics" in str(raised.value)
    assert "rung 2 ('10 minutes')" in str(raised.value)


def test_durations_take_units_and_bare_seconds() -> None:
    assert [parse_duration(v) for v in ("500ms", "5s", "1m", "10m", "1.5h", "2", " 3 s")] == \
        [0.5, 5.0, 60.0, 600.0, 5400.0, 2.0, 3.0]
    ladder = resolve_settings(Plain, on_error="retry_topics", retry_topics="5s, 1m, 30",
                              dead_letter_topic="d").retry_topics
    assert ladder == ["5s", "1m", "30"]


def test_deimos_run_starts_a_retry_consumer_of_every_rung_in_its_own_group(
        deimos_reset: None) -> None:
    deimos.configure(consumers=[{"class": "test_retry_topics:Plain", "on_error":
                                 "retry_topics", "retry_topics": ["5s", "1m"],
                                 "dead_letter_topic": "orders.dlq", "concurrency": 2}])
    loops = [make() for make in consumer_factories()]
    assert [type(loop) for loop in loops] == [ConsumerLoop] * 2 + [RetryTopicsLoop] * 2
    retry = loops[2]
    assert retry.settings.topics == ["orders.retry.1", "orders.retry.2"]
    assert retry.settings.group_id == "g.retry"
    assert retry.settings.start_from_beginning
    assert retry.cls is Plain


def test_topics_implied_by_the_settings_include_the_retry_topics(deimos_reset: None) -> None:
    from deimos.topics import implied_topics

    deimos.configure(consumers=[{"class": "test_retry_topics:Plain", "on_error":
                                 "retry_topics", "retry_topics": ["5s", "1m"],
                                 "dead_letter_topic": "orders.dlq"}])
    assert {"orders", "orders.retry.1", "orders.retry.2", "orders.dlq"} <= set(
        implied_topics(deimos.get_settings()))


# ---------------------------------------------------------------------------------------------
# the test helpers
# ---------------------------------------------------------------------------------------------


class Ladder(Flaky):
    topic = "orders"
    group_id = "orders-service"
    on_error = "retry_topics"
    retry_topics: ClassVar[list[str]] = ["5s", "1m"]
    dead_letter_topic = "orders.dlq"


def test_consume_message_records_the_forward_to_the_first_rung(deimos_test_mode: Any) -> None:
    Ladder.reset({})
    before = int(time.time() * 1000)
    deimos_test_mode.consume_message(Ladder, "a:9", key="k1", headers={"trace": "t1"},
                                     offset=7)
    sent = deimos_test_mode.assert_sent("orders.retry.1", b"a:9", key=b"k1")
    h = _headers(sent.headers)
    assert h["trace"] == "t1"
    assert h["deimos-original-topic"] == "orders"
    assert h["deimos-original-offset"] == "7"
    assert h["deimos-error-class"] == "builtins.ValueError"
    assert h["deimos-attempts"] == "1"  # no in-process retry unless retry.attempts is set
    assert h[RETRY_ATTEMPT_HEADER] == "1"
    assert before + 5000 <= int(h[RETRY_DUE_HEADER]) <= time.time() * 1000 + 5000
    deimos_test_mode.assert_not_sent("orders.dlq")
    assert Ladder.seen["a"] == 1


def test_consume_message_on_the_last_rung_dead_letters_with_the_first_read(
        deimos_test_mode: Any) -> None:
    Ladder.reset({})
    forwarded = [("deimos-original-topic", b"orders"), ("deimos-original-partition", b"3"),
                 ("deimos-original-offset", b"7"), ("deimos-attempts", b"2"),
                 (RETRY_ATTEMPT_HEADER, b"2"), (RETRY_DUE_HEADER, b"1"), ("trace", b"t1")]
    deimos_test_mode.consume_message(Ladder, "a:9", topic="orders.retry.2", headers=forwarded)
    dead = deimos_test_mode.assert_sent("orders.dlq", b"a:9")
    h = _headers(dead.headers)
    assert (h["deimos-original-topic"], h["deimos-original-partition"],
            h["deimos-original-offset"], h["deimos-attempts"]) == ("orders", "3", "7", "3")
    assert h["trace"] == "t1" and RETRY_ATTEMPT_HEADER not in h
    # the rung's message succeeding sends nothing further
    deimos_test_mode.clear()
    deimos_test_mode.consume_message(Ladder, "b", topic="orders.retry.1", headers=forwarded)
    assert deimos_test_mode.sent_messages == []


# ---------------------------------------------------------------------------------------------
# on the broker
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


def _publish(topic: str, values: list[str]) -> None:
    class P(deimos.Producer):
        pass

    P.topic = topic
    P.publish_list(values, sync=True)


pytest_kafka = pytest.mark.kafka


@pytest_kafka
def test_the_ladder_under_deimos_run(kafka: str) -> None:
    """a:1 succeeds on rung 1, b:2 on rung 2 (not dead-lettered), c:9 is dead-lettered after
    rung 2; x, y, z between them are handled at once, the main partition never paused."""
    topic = create_topic(kafka)
    for n in (1, 2):
        create_topic(kafka, retry_topic(topic, n))
    dlq = create_topic(kafka)
    group = f"g-{uuid.uuid4().hex[:10]}"
    deimos.configure(kafka={"bootstrap_servers": kafka}, consumers=[{
        "class": "test_retry_topics:Flaky", "topics": [topic], "group_id": group,
        "on_error": "retry_topics", "retry_topics": ["1s", "2s"], "dead_letter_topic": dlq,
        "max_wait_time": 0.2, "config": dict(GROUP_TIMEOUTS)}])
    Flaky.reset({"a": 2, "b": 3, "c": 3, "x": 1, "y": 1, "z": 1})
    scheduled: list[Any] = []

    def spying(make: Any) -> Any:
        def build() -> Any:
            loop = make()
            if type(loop) is ConsumerLoop:  # the main loop: record any pause for a retry
                loop._schedule_retry = lambda *a: scheduled.append(a)  # type: ignore
            return loop
        return build

    executor = Executor([spying(f) for f in consumer_factories()], restart_delay=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=run_until_stopped, args=(executor,),
                              kwargs={"install_signals": False, "until": stop}, daemon=True)
    runner.start()
    try:
        wait_for(lambda: len(executor.current()) == 2 and all(
            loop.assigned.is_set() for loop in executor.current().values()),  # type: ignore
            what="both groups joined")
        _publish(topic, ["a:1", "x", "b:2", "y", "c:9", "z"])
        assert Flaky.settled.wait(30), Flaky.seen
        dead = read_all(kafka, dlq, 1)
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive() and executor.crashes == 0
    assert scheduled == []

    main_topic = deimos.get_settings().producers.topic_prefix + topic
    calls = Flaky.calls
    main = [c for c in calls if c[1] == main_topic]
    assert [c[0] for c in main] == ["a", "x", "b", "y", "c", "z"]
    rung1 = [c for c in calls if c[1] == retry_topic(main_topic, 1)]
    rung2 = [c for c in calls if c[1] == retry_topic(main_topic, 2)]
    assert [c[0] for c in rung1] == ["a", "b", "c"]  # in order within a retry topic
    assert [c[0] for c in rung2] == ["b", "c"]
    # order of attempts per message: main, rung 1, rung 2; each rung its own attempt number
    for name in ("b", "c"):
        assert [c[1] for c in calls if c[0] == name] == [
            main_topic, retry_topic(main_topic, 1), retry_topic(main_topic, 2)]
    for _, _, at, headers in rung1 + rung2:
        due = int(headers[RETRY_DUE_HEADER])
        assert due <= at <= due + TOLERANCE_MS, (at - due, headers)
    # the main partition moved on at once: everything after a failure was handled before the
    # first rung was even due
    first_due = min(int(h[RETRY_DUE_HEADER]) for _, _, _, h in rung1)
    assert max(c[2] for c in main) < first_due
    assert {c[0]: int(c[3][RETRY_ATTEMPT_HEADER]) for c in rung2} == {"b": 2, "c": 2}
    # rung 2 was due 2 s after rung 1's failure
    b1, b2 = (next(c for c in r if c[0] == "b") for r in (rung1, rung2))
    assert b2[2] - b1[2] >= 2000 - 1

    assert len(dead) == 1 and dead[0].value() == b"c:9"
    h = _headers(dead[0].headers())
    c_offset = 4
    assert (h["deimos-original-topic"], h["deimos-original-partition"],
            h["deimos-original-offset"], h["deimos-attempts"]) == (
        main_topic, "0", str(c_offset), "3")
    assert h["deimos-error-class"] == "builtins.ValueError"
    assert h["deimos-error-message"] == "c fails 9 time(s)"
    assert RETRY_ATTEMPT_HEADER not in h and RETRY_DUE_HEADER not in h
    # a and b succeeded on a rung: no other dead letter
    assert committed(kafka, group, main_topic) == 6


@pytest_kafka
def test_a_forward_that_cannot_be_written_stops_the_consumer_before_its_offset(
        kafka: str) -> None:
    topic = create_topic(kafka)  # its retry topic does not exist and may not be created
    _publish(topic, ["x", "a:9", "y"])
    deimos.configure(kafka={"bootstrap_servers": kafka},
                     producers={"sync_timeout": 1.0,
                                "config": {"allow.auto.create.topics": False,
                                           "message.timeout.ms": 2000}})
    Flaky.reset({})

    class C(Flaky):
        pass

    C.topic = topic
    settings = group_settings(C, on_error="retry_topics", retry_topics=["1s"],
                              dead_letter_topic=create_topic(kafka))
    loop = LoopThread(C, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, PublishError)
    assert "could not write 1 message(s)" in str(loop.error)
    assert [c[0] for c in Flaky.calls][:2] == ["x", "a"]
    assert committed(kafka, settings.group_id, topic) == 1  # a:9 is read again after restart

