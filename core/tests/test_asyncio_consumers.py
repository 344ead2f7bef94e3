"""Asyncio consumers and ``max_concurrency`` on the real broker: the sync engine's commit
rules, retries and dead letters for ``async def`` handlers, per-key order under concurrency,
and sync and asyncio consumers side by side in one ``deimos.run``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from kafka_helpers import LoopThread, committed, group_settings, read_all, wait_for

import deimos
from deimos.plugins import get_registry
from deimos.testing.broker import GROUP_TIMEOUTS

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     metrics={"providers": ["mock"]})
    get_registry().get("metrics", "mock").obj.clear()
    return deimos_kafka


def _publish(topic: str, payloads: list[str], keys: list[str] | None = None) -> None:
    class P(deimos.Producer):
        key_config = "plain" if keys is not None else "none"

    P.topic = topic
    P.publish_list(payloads, keys=keys, sync=True)


def test_a_failing_coroutine_on_message_n_commits_before_n_and_the_rest_follows_a_restart(
        kafka, deimos_topic):
    topic = deimos_topic()
    _publish(topic, [str(i) for i in range(10)])
    handled: list[str] = []
    loops: set[int] = set()

    class Failing(deimos.AsyncConsumer):
        async def consume(self, payload: Any, metadata: Any) -> None:
            await asyncio.sleep(0)  # a real suspension: the handler runs on an event loop
            loops.add(id(asyncio.get_running_loop()))
            if payload == "5":
                raise RuntimeError("boom on 5")
            handled.append(payload)

    Failing.topic = topic
    settings = group_settings(Failing, retry={"attempts": 2, "backoff": 0.05})
    loop = LoopThread(Failing, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, RuntimeError) and str(loop.error) == "boom on 5"
    assert handled == [str(i) for i in range(5)]
    assert committed(kafka, settings.group_id, topic) == 5
    assert len(loops) == 1

    again: list[str] = []

    class Healthy(deimos.AsyncConsumer):
        async def consume(self, payload: Any, metadata: Any) -> None:
            again.append(payload)

    Healthy.topic = topic
    loop2 = LoopThread(Healthy, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 10, what="commit")
    finally:
        loop2.stop()
    assert again == [str(i) for i in range(5, 10)]


def test_async_retries_then_dead_letter_and_metrics(kafka, deimos_topic):
    topic, dlq = deimos_topic(), deimos_topic()
    _publish(topic, ["ok-1", "poison", "ok-2"], keys=["k1", "k2", "k3"])
    attempts: list[str] = []
    handled: list[str] = []

    class C(deimos.AsyncConsumer):
        async def consume(self, payload: Any, metadata: Any) -> None:
            await asyncio.sleep(0)
            attempts.append(payload)
            if payload == "poison":
                raise ValueError("cannot handle poison")
            handled.append(payload)

    C.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dlq,
                              retry={"attempts": 3, "backoff": 0.05, "multiplier": 2})
    loop = LoopThread(C, settings).start()
    try:
        wait_for(lambda: committed(kafka, settings.group_id, topic) == 3, what="commit")
    finally:
        loop.stop()
    assert handled == ["ok-1", "ok-2"] and attempts.count("poison") == 3
    [dead] = read_all(kafka, dlq, 1)
    assert dead.value() == b"poison" and dead.key() == b"k2"
    headers = dict(dead.headers())
    assert headers["deimos-error-class"] == b"builtins.ValueError"
    assert headers["deimos-attempts"] == b"3"
    metrics = get_registry().get("metrics", "mock").obj
    assert metrics.total("dead_lettered", topic=topic) == 1
    assert metrics.total("retries", topic=topic) == 2


def test_an_async_batch_consumer_commits_up_to_its_batch_error(kafka, deimos_topic):
    topic = deimos_topic()
    _publish(topic, [str(i) for i in range(10)])

    class B(deimos.AsyncBatchConsumer):
        async def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            await asyncio.sleep(0)
            if "7" in payloads:
                raise deimos.BatchError(payloads.index("7"), ValueError("bad 7"))

    B.topic = topic
    settings = group_settings(B, retry={"attempts": 1})
    loop = LoopThread(B, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, ValueError)
    assert committed(kafka, settings.group_id, topic) == 7


KEYS = 6
PER_KEY = 8


class _Order:
    """Records, per key, the order messages ran in and whether two ever overlapped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[bytes, list[int]] = {}
        self.in_flight: dict[bytes, int] = {}
        self.overlap = 0  # same key at once: must stay 0
        self.peak = 0  # messages at once, over all keys
        self.now = 0

    def enter(self, key: bytes, n: int) -> None:
        with self.lock:
            self.seen.setdefault(key, []).append(n)
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            if self.in_flight[key] > 1:
                self.overlap += 1
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self, key: bytes) -> None:
        with self.lock:
            self.in_flight[key] -= 1
            self.now -= 1


@pytest.mark.parametrize("kind", ["async", "threads"])
def test_max_concurrency_keeps_per_key_order_and_commits_below_the_lowest_failure(
        kafka, deimos_topic, kind):
    topic = deimos_topic()
    payloads = [str(i) for i in range(KEYS * PER_KEY)]
    keys = [f"k{i % KEYS}" for i in range(KEYS * PER_KEY)]
    _publish(topic, payloads, keys)
    order = _Order()
    fail_at = len(payloads) - 5  # on_error=raise: the consumer stops there

    def check(payload: str) -> None:
        if int(payload) == fail_at:
            raise RuntimeError(f"fails on {payload}")

    if kind == "async":
        class C(deimos.AsyncConsumer):
            async def consume(self, payload: Any, metadata: Any) -> None:
                order.enter(metadata.key, int(payload))
                try:
                    await asyncio.sleep(0.002 * (int(payload) % 3))
                    check(payload)
                finally:
                    order.leave(metadata.key)
        cls: type = C
    else:
        class S(deimos.Consumer):
            def consume(self, payload: Any, metadata: Any) -> None:
                order.enter(metadata.key, int(payload))
                try:
                    time.sleep(0.002 * (int(payload) % 3))
                    check(payload)
                finally:
                    order.leave(metadata.key)
        cls = S

    cls.topic = topic
    settings = group_settings(cls, max_concurrency=8, retry={"attempts": 1})
    loop = LoopThread(cls, settings).start()
    loop.thread.join(60)
    assert isinstance(loop.error, RuntimeError)
    assert order.overlap == 0
    for key, ran in order.seen.items():
        assert ran == sorted(ran), f"key {key!r} ran out of order: {ran}"
    # the failed message's key ran nothing after it; offsets stored stop below it
    failed_key = keys[fail_at].encode()
    assert order.seen[failed_key][-1] == fail_at
    assert committed(kafka, settings.group_id, topic) == fail_at


class AsyncRecorder(deimos.AsyncConsumer):
    """For the mixed ``deimos.run`` test: configured by class path."""

    seen: list[str] = []
    threads: set[str] = set()

    async def consume(self, payload: Any, metadata: Any) -> None:
        await asyncio.sleep(0)
        type(self).threads.add(threading.current_thread().name)
        type(self).seen.append(payload)


class SyncRecorder(deimos.Consumer):
    seen: list[str] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        type(self).seen.append(payload)


def test_sync_and_asyncio_consumers_run_side_by_side_in_one_process(kafka, deimos_topic):
    t_async, t_sync = deimos_topic(), deimos_topic()
    _publish(t_async, ["a1", "a2", "a3"])
    _publish(t_sync, ["s1", "s2"])
    AsyncRecorder.seen, AsyncRecorder.threads, SyncRecorder.seen = [], set(), []
    common = {"config": dict(GROUP_TIMEOUTS), "max_wait_time": 0.2}
    deimos.configure(deimos.get_settings(), consumers=[
        {"class": f"{__name__}:AsyncRecorder", "topics": [t_async], "group_id": "mixed-a",
         **common},
        {"class": f"{__name__}:SyncRecorder", "topics": [t_sync], "group_id": "mixed-s",
         **common}])
    done = threading.Event()
    result: list[bool] = []
    runner = threading.Thread(target=lambda: result.append(
        deimos.run(install_signals=False, until=done)))
    runner.start()
    try:
        wait_for(lambda: len(AsyncRecorder.seen) == 3 and len(SyncRecorder.seen) == 2,
                 what="both consumers")
    finally:
        done.set()
        runner.join(30)
    assert result == [True]
    assert AsyncRecorder.seen == ["a1", "a2", "a3"] and SyncRecorder.seen == ["s1", "s2"]
    assert len(AsyncRecorder.threads) == 1  # its own consumer thread's event loop
    assert committed(kafka, "mixed-a", t_async) == 3
    assert committed(kafka, "mixed-s", t_sync) == 2
