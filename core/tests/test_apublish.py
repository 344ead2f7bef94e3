"""``apublish``/``apublish_list``: accepted or delivered without blocking the event loop,
delivery errors raised in the awaiting coroutine, under asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from kafka_helpers import read_all

import deimos
from deimos.errors import PublishError
from deimos.plugins import get_registry
from deimos.testing import assert_sent, sent_messages, test_mode

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dev dependency off Windows
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop is not installed"))]


def run(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``main()`` on a fresh event loop of ``kind``."""
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class _Ticker:
    """Counts how often the event loop ran it: a publish that blocked the loop while it
    waited would leave the count at zero."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> int:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.ticks


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"backend": "kafka_async"}, metrics={"providers": ["mock"]})
    get_registry().get("metrics", "mock").obj.clear()
    return deimos_kafka


@pytest.mark.kafka
@pytest.mark.parametrize("loop_kind", LOOPS)
def test_apublish_delivers_without_blocking_the_loop(kafka, deimos_topic, loop_kind):
    topic = deimos_topic()

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic

    async def main() -> tuple[int, int]:
        ticker = _Ticker()
        ticker.start()
        await P.apublish("one", key="k1", headers={"h": "v"})  # accepted (kafka_async)
        await P.apublish_list(["two", "three"], keys=["k2", "k3"])
        before = ticker.ticks
        await P.apublish("four", key="k4", sync=True)  # delivered: awaited, not blocked on
        waited = ticker.ticks - before
        await P.apublish_list(["five", "six"], keys=["k5", "k6"], sync=True)
        return waited, await ticker.stop()

    waited, _ = run(loop_kind, main)
    assert waited > 0, "the event loop ran nothing while apublish(sync=True) waited"
    got = read_all(kafka, topic, 6)
    assert [m.value() for m in got] == [b"one", b"two", b"three", b"four", b"five", b"six"]
    assert [m.key() for m in got] == [b"k1", b"k2", b"k3", b"k4", b"k5", b"k6"]
    assert dict(got[0].headers()) == {"h": b"v"}
    metrics = get_registry().get("metrics", "mock").obj
    assert metrics.total("publish", topic=topic) == 6


def test_a_delivery_failure_raises_in_the_awaiting_coroutine(deimos_reset):
    from deimos.testing.broker import _free_port

    # nobody listens there: each message times out after message.timeout.ms
    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     producers={"backend": "kafka_async",
                                "config": {"message.timeout.ms": 500}})

    class P(deimos.Producer):
        topic = "nowhere"

    async def main() -> tuple[BaseException | None, int]:
        ticker = _Ticker()
        ticker.start()
        error = None
        try:
            await P.apublish_list(["a", "b"], sync=True)
        except PublishError as exc:
            error = exc
        return error, await ticker.stop()

    error, ticks = run("asyncio", main)
    assert isinstance(error, PublishError)
    assert "2 of 2 message(s) to 'nowhere' were not delivered" in str(error)
    assert ticks > 0


@pytest.mark.kafka
@pytest.mark.parametrize("one", [False, True], ids=["apublish_list", "apublish"])
def test_a_refused_message_raises_at_once(kafka, one):
    deimos.configure(kafka={"bootstrap_servers": kafka},
                     producers={"backend": "kafka_async", "config": {"message.max.bytes": 2000}})
    failed: list[Any] = []

    class P(deimos.Producer):
        topic = "anywhere"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            failed.append(message)

    async def main() -> None:
        await P.apublish("x" * 5000) if one else await P.apublish_list(["x" * 5000])

    with pytest.raises(PublishError, match="refused by the client"):
        asyncio.run(main())
    assert len(failed) == 1  # reported once, though apublish's fast path tried it first


@pytest.mark.parametrize("one", [True, False], ids=["apublish", "apublish_list"])
def test_apublish_awaits_a_full_local_queue(deimos_reset, one):
    """An apublish that finds librdkafka's queue full awaits room (the loop keeps
    running) instead of blocking; the messages end as delivery failures here (no broker),
    reported once each."""
    from deimos.testing.broker import _free_port

    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     producers={"backend": "kafka_async",
                                "config": {"message.timeout.ms": 300,
                                           "queue.buffering.max.messages": 1}})
    failed: list[Any] = []

    class P(deimos.Producer):
        topic = "nowhere"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            failed.append(message.encoded_payload)

    async def main() -> int:
        ticker = _Ticker()
        ticker.start()
        await P.apublish("a")  # queued at once
        before = ticker.ticks
        if one:
            await P.apublish("b")  # queue full until "a" times out: awaited
        else:
            await P.apublish_list(["b", "c"])
        waited = ticker.ticks - before
        await ticker.stop()
        return waited

    assert run("asyncio", main) > 0, "the event loop ran nothing while the queue was full"
    assert deimos.flush(10) == 0
    assert sorted(failed) == ([b"a", b"b"] if one else [b"a", b"b", b"c"])


@pytest.mark.asyncio
async def test_assert_sent_sees_what_apublish_sent(deimos_reset):
    deimos.configure()

    class Orders(deimos.Producer):
        topic = "orders"
        key_config = "plain"

    with test_mode():
        await Orders.apublish("o-1", key="1")
        await Orders.apublish_list(["o-2", "o-3"], keys=["2", "3"], sync=True)
        assert_sent("orders", "o-1", key="1")
        assert_sent("orders", "o-3", key="3")
        assert len(sent_messages("orders")) == 3
