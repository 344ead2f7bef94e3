"""Asyncio consumers without a broker: the class rules, ``consume_message`` from plain tests,
``aconsume_message``/``aconsume_batch`` from pytest-asyncio and anyio tests (the handler
awaits on the test's own loop), and ``max_concurrency``'s concurrency and per-key order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import deimos
from deimos.errors import ConfigError
from deimos.testing import (
    TestModeError,
    aconsume_batch,
    aconsume_message,
    assert_sent,
    consume_batch,
    consume_message,
    test_mode,
)

pytestmark = pytest.mark.usefixtures("isolated_deimos")


@pytest.fixture
def helpers() -> Any:
    deimos.configure()
    with test_mode():
        yield


def test_a_plain_def_on_an_asyncio_class_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Orders\.consume is a plain 'def', but AsyncConsumer "
                                        r"awaits it"):
        class Orders(deimos.AsyncConsumer):
            def consume(self, payload: Any, metadata: Any) -> None:  # type: ignore[override]
                pass


def test_max_concurrency_on_a_batch_consumer_is_a_settings_error(helpers: None) -> None:
    class B(deimos.AsyncBatchConsumer):
        topic = "t"

        async def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            pass

    with pytest.raises(ConfigError, match=r"consumers\.B\.max_concurrency"):
        consume_batch(B, ["a"], max_concurrency=4)


class Recorder(deimos.AsyncConsumer):
    topic = "orders"
    key_config = "plain"
    seen: list[tuple[str, str]] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def consume(self, payload: Any, metadata: Any) -> None:
        await asyncio.sleep(0)
        self.loops.append(asyncio.get_running_loop())
        if payload == "poison":
            raise ValueError("poison")
        self.seen.append((metadata.key, payload))


def test_consume_message_runs_an_asyncio_consumer_from_a_plain_test(helpers: None) -> None:
    Recorder.seen, Recorder.loops = [], []
    consume_message(Recorder, "a", key="k1")
    consume_batch(Recorder, ["b", "c"], keys=["k2", "k3"])
    assert Recorder.seen == [("k1", "a"), ("k2", "b"), ("k3", "c")]


@pytest.mark.asyncio
async def test_aconsume_message_awaits_the_handler_on_the_tests_loop(helpers: None) -> None:
    Recorder.seen, Recorder.loops = [], []
    await aconsume_message(Recorder, "a", key="k1")
    handler = await aconsume_batch(Recorder, ["b", "poison", "c"], keys=["k2", "k3", "k4"],
                                   on_error="dead_letter", dead_letter_topic="orders.dlq",
                                   retry={"attempts": 2})
    assert handler.seen == [("k1", "a"), ("k2", "b"), ("k4", "c")]  # type: ignore[attr-defined]
    assert set(Recorder.loops) == {asyncio.get_running_loop()}
    assert_sent("orders.dlq", b"poison", key=b"k3")


@pytest.mark.asyncio
async def test_consume_message_inside_a_running_loop_points_to_aconsume(helpers: None) -> None:
    with pytest.raises(TestModeError, match=r"await deimos\.testing\.aconsume_message"):
        consume_message(Recorder, "a", key="k1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_aconsume_message_under_anyio(helpers: None) -> None:
    gate = asyncio.Event()  # bound to the test's loop: only a handler there can wait on it

    class Gated(deimos.AsyncConsumer):
        topic = "gated"
        got: list[str] = []

        async def consume(self, payload: Any, metadata: Any) -> None:
            await asyncio.wait_for(gate.wait(), 5)
            self.got.append(payload)

    asyncio.get_running_loop().call_soon(gate.set)
    await aconsume_message(Gated, "x")
    assert Gated.got == ["x"]


def test_async_max_concurrency_runs_keys_at_once_and_each_key_in_order(helpers: None) -> None:
    """Key ``a``'s first message waits for key ``b``'s: it can only finish if both run at
    once; and no key ever has two messages in flight."""
    order: list[str] = []
    in_flight: dict[str, int] = {}
    overlaps: list[str] = []

    class Concurrent(deimos.AsyncConsumer):
        topic = "c"
        key_config = "plain"
        b_started: asyncio.Event | None = None

        async def consume(self, payload: Any, metadata: Any) -> None:
            key = metadata.key
            in_flight[key] = in_flight.get(key, 0) + 1
            if in_flight[key] > 1:
                overlaps.append(payload)
            if type(self).b_started is None:
                type(self).b_started = asyncio.Event()
            started = type(self).b_started
            if payload == "b1":
                started.set()
            if payload == "a1":
                await asyncio.wait_for(started.wait(), 5)
            await asyncio.sleep(0.001)
            order.append(payload)
            in_flight[key] -= 1

    consume_batch(Concurrent, ["a1", "a2", "b1", "a3", "b2"], keys=["a", "a", "b", "a", "b"],
                  max_concurrency=4)
    assert not overlaps
    assert [p for p in order if p[0] == "a"] == ["a1", "a2", "a3"]
    assert [p for p in order if p[0] == "b"] == ["b1", "b2"]
    assert order.index("b1") < order.index("a1")


def test_thread_max_concurrency_runs_keys_at_once(helpers: None) -> None:
    barrier = threading.Barrier(2, timeout=5)  # broken (an error) unless two run at once
    ran: list[str] = []

    class Threads(deimos.Consumer):
        topic = "t"
        key_config = "plain"

        def consume(self, payload: Any, metadata: Any) -> None:
            if payload in ("a1", "b1"):
                barrier.wait()
            ran.append(payload)

    consume_batch(Threads, ["a1", "a2", "b1"], keys=["a", "a", "b"], max_concurrency=2)
    assert sorted(ran) == ["a1", "a2", "b1"]
    assert ran.index("a1") < ran.index("a2")


def test_messages_finished_ahead_of_a_failure_are_not_run_again_on_its_retry(
        helpers: None) -> None:
    """Message 1 fails once after 0, 2 and 3 (other keys, quicker) finished: its retry runs
    it alone."""
    runs: dict[str, int] = {}
    finished: set[str] = set()

    class Ahead(deimos.AsyncConsumer):
        topic = "ahead"
        key_config = "plain"
        failed = False

        async def consume(self, payload: Any, metadata: Any) -> None:
            runs[payload] = runs.get(payload, 0) + 1
            if payload == "m1" and not type(self).failed:
                while len(finished) < 3:  # fails once the others finished (no timing)
                    await asyncio.sleep(0.001)
                type(self).failed = True
                raise RuntimeError("once")
            await asyncio.sleep(0)
            finished.add(payload)

    consume_batch(Ahead, ["m0", "m1", "m2", "m3"], keys=["a", "b", "c", "d"],
                  max_concurrency=4, retry={"attempts": 3})
    assert runs == {"m0": 1, "m1": 2, "m2": 1, "m3": 1}


def test_an_async_batch_error_hands_the_messages_before_it_and_retries_from_it(
        helpers: None) -> None:
    batches: list[list[str]] = []

    class B(deimos.AsyncBatchConsumer):
        topic = "b"

        async def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            await asyncio.sleep(0)
            batches.append(list(payloads))
            if "7" in payloads:
                raise deimos.BatchError(payloads.index("7"), ValueError("bad 7"))

    with pytest.raises(ValueError, match="bad 7"):
        consume_batch(B, [str(i) for i in range(10)], retry={"attempts": 2})
    # the retry starts at the failed message (0..6 were handled); once its attempts are
    # used up the rest is tried one at a time, and on_error=raise stops at 7
    assert batches == [[str(i) for i in range(10)], [str(i) for i in range(7, 10)], ["7"]]


def test_thread_max_concurrency_keeps_per_key_order_and_stops_at_the_lowest_failure(
        helpers: None) -> None:
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()

    class Threads(deimos.Consumer):
        topic = "t"
        key_config = "plain"

        def consume(self, payload: Any, metadata: Any) -> None:
            with lock:
                seen.setdefault(metadata.key, []).append(int(payload))
            if payload == "20":
                raise RuntimeError("fails on 20")

    with pytest.raises(RuntimeError, match="fails on 20"):
        consume_batch(Threads, [str(i) for i in range(30)],
                      keys=[f"k{i % 4}" for i in range(30)], max_concurrency=4,
                      retry={"attempts": 1})
    for ran in seen.values():
        assert ran == sorted(ran)
    assert seen["k0"][-1] == 20  # nothing of the failed key after it
