"""How deimos's asyncio API drives librdkafka: the measurement behind the choice.

    python benchmarks/asyncio_engine_choice.py [--messages N] [--rounds R]

Four ways to hand polled messages to an ``async def`` handler (a no-op per message), against
the raw synchronous loop of the same run, and three ways to publish from a coroutine and
learn of the delivery. Rounds alternate between the variants; medians are printed, and every
round checks that every message arrived (consume) or was delivered (produce).

consume:

* ``raw_sync``: ``Consumer.consume(500)`` and a plain function per message (the baseline);
* ``aio_consumer``: confluent-kafka's ``AIOConsumer`` (each call in its thread pool), the
  handler awaited per message;
* ``thread_own_loop``: the sync client in the consumer's thread, each polled batch run by
  ``loop.run_until_complete`` on an event loop of that thread (what deimos does for
  ``deimos run``);
* ``thread_user_loop``: the sync client in the consumer's thread, each batch handed to an
  event loop running in another thread (``run_coroutine_threadsafe``: what deimos does when
  it runs inside a user's event loop, e.g. a FastAPI app).

produce (each message's delivery awaited through a future):

* ``raw_sync``: ``Producer.produce`` per message, ``flush``;
* ``aio_producer``: ``AIOProducer.produce`` (batched in Python, sent from its thread pool);
* ``callback_future``: the sync client's ``produce`` on the event loop thread (it never
  blocks), an asyncio future resolved from the delivery callback through
  ``loop.call_soon_threadsafe`` once per message;
* ``callback_coalesced``: the same, but the delivery callbacks of one poll are queued and the
  loop is woken once for all of them (what ``apublish`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.aio import AIOConsumer, AIOProducer

from deimos.testing.broker import GROUP_TIMEOUTS, broker, create_topic

VALUE = b"x" * 100


def _conf(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
            "fetch.queue.backoff.ms": 50, **GROUP_TIMEOUTS}


async def _noop(m: Any) -> None:
    return None


def _sync_noop(m: Any) -> None:
    return None


def raw_sync(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer(_conf(bootstrap))
    c.subscribe([topic])
    got, start = 0, None
    while got < n:
        msgs = c.consume(500, 1.0)
        if msgs and start is None:
            start = time.perf_counter()
        for m in msgs:
            _sync_noop(m)
        got += len(msgs)
        if msgs:
            c.store_offsets(msgs[-1])
    end = time.perf_counter()
    c.close()
    assert got == n and start is not None, got
    return n / (end - start)


def aio_consumer(bootstrap: str, topic: str, n: int) -> float:
    async def main() -> float:
        c = AIOConsumer(_conf(bootstrap))
        await c.subscribe([topic])
        got, start = 0, None
        while got < n:
            msgs = await c.consume(500, 1.0)
            if msgs and start is None:
                start = time.perf_counter()
            for m in msgs:
                await _noop(m)
            got += len(msgs)
            if msgs:
                await c.store_offsets(msgs[-1])
        end = time.perf_counter()
        await c.close()
        assert got == n and start is not None, got
        return n / (end - start)

    return asyncio.run(main())


async def _batch(msgs: list[Any]) -> None:
    for m in msgs:
        await _noop(m)


def thread_own_loop(bootstrap: str, topic: str, n: int) -> float:
    out: list[float] = []

    def work() -> None:
        loop = asyncio.new_event_loop()
        c = Consumer(_conf(bootstrap))
        c.subscribe([topic])
        got, start = 0, None
        while got < n:
            msgs = c.consume(500, 1.0)
            if msgs and start is None:
                start = time.perf_counter()
            if msgs:
                loop.run_until_complete(_batch(msgs))
                c.store_offsets(msgs[-1])
            got += len(msgs)
        end = time.perf_counter()
        c.close()
        loop.close()
        assert got == n and start is not None, got
        out.append(n / (end - start))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out[0]


def thread_user_loop(bootstrap: str, topic: str, n: int) -> float:
    loop = asyncio.new_event_loop()
    lt = threading.Thread(target=loop.run_forever, daemon=True)
    lt.start()
    c = Consumer(_conf(bootstrap))
    c.subscribe([topic])
    got, start = 0, None
    while got < n:
        msgs = c.consume(500, 1.0)
        if msgs and start is None:
            start = time.perf_counter()
        if msgs:
            asyncio.run_coroutine_threadsafe(_batch(msgs), loop).result()
            c.store_offsets(msgs[-1])
        got += len(msgs)
    end = time.perf_counter()
    c.close()
    loop.call_soon_threadsafe(loop.stop)
    lt.join()
    loop.close()
    assert got == n and start is not None, got
    return n / (end - start)


def p_raw_sync(bootstrap: str, topic: str, n: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, b"warm")
    p.flush(30)
    errors: list[Any] = []

    def cb(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)

    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, VALUE, b"k%d" % (i % 1000), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.005)
    assert p.flush(60) == 0 and not errors
    return n / (time.perf_counter() - start)


def p_aio_producer(bootstrap: str, topic: str, n: int) -> float:
    async def main() -> float:
        p = AIOProducer({"bootstrap.servers": bootstrap})
        await (await p.produce(topic, b"warm"))
        start = time.perf_counter()
        futs = [await p.produce(topic, VALUE, b"k%d" % (i % 1000)) for i in range(n)]
        await p.flush()
        done = await asyncio.gather(*futs)
        rate = n / (time.perf_counter() - start)
        assert len(done) == n
        await p.close()
        return rate

    return asyncio.run(main())


def p_callback_future(bootstrap: str, topic: str, n: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap})
    stop = threading.Event()

    def serve() -> None:  # deimos's shared producers have such a poll thread
        while not stop.is_set():
            p.poll(0.1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def main() -> float:
        loop = asyncio.get_running_loop()

        def future() -> tuple[asyncio.Future[Any], Callable[[Any, Any], None]]:
            fut = loop.create_future()

            def settle(err: Any, msg: Any) -> None:
                if not fut.done():
                    if err is None:
                        fut.set_result(msg)
                    else:
                        fut.set_exception(RuntimeError(str(err)))

            return fut, lambda err, msg: loop.call_soon_threadsafe(settle, err, msg)

        fut, cb = future()
        p.produce(topic, b"warm", on_delivery=cb)
        await fut
        start = time.perf_counter()
        futs = []
        for i in range(n):
            fut, cb = future()
            while True:
                try:
                    p.produce(topic, VALUE, b"k%d" % (i % 1000), on_delivery=cb)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)
            futs.append(fut)
        done = await asyncio.gather(*futs)
        assert len(done) == n
        return n / (time.perf_counter() - start)

    try:
        return asyncio.run(main())
    finally:
        stop.set()
        t.join()
        p.flush(10)


def p_callback_coalesced(bootstrap: str, topic: str, n: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap})
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            p.poll(0.1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        inbox: list[Any] = []
        lock = threading.Lock()

        def drain() -> None:
            with lock:
                todo = inbox[:]
                inbox.clear()
            for fut, err, msg in todo:
                if not fut.done():
                    if err is None:
                        fut.set_result(msg)
                    else:
                        fut.set_exception(RuntimeError(str(err)))

        def future() -> tuple[asyncio.Future[Any], Callable[[Any, Any], None]]:
            fut = loop.create_future()

            def cb(err: Any, msg: Any) -> None:
                with lock:
                    inbox.append((fut, err, msg))
                    wake = len(inbox) == 1
                if wake:
                    loop.call_soon_threadsafe(drain)

            return fut, cb

        fut, cb = future()
        p.produce(topic, b"warm", on_delivery=cb)
        await fut
        start = time.perf_counter()
        futs = []
        for i in range(n):
            fut, cb = future()
            while True:
                try:
                    p.produce(topic, VALUE, b"k%d" % (i % 1000), on_delivery=cb)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)
            futs.append(fut)
        done = await asyncio.gather(*futs)
        assert len(done) == n
        return n / (time.perf_counter() - start)

    try:
        return asyncio.run(main())
    finally:
        stop.set()
        t.join()
        p.flush(10)


def fill(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for _ in range(n):
        while True:
            try:
                p.produce(topic, VALUE)
                break
            except BufferError:
                p.poll(0.005)
    assert p.flush(60) == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["consume", "produce"])
    args = ap.parse_args()
    n = args.messages
    consume = {"raw_sync": raw_sync, "aio_consumer": aio_consumer,
               "thread_own_loop": thread_own_loop, "thread_user_loop": thread_user_loop}
    produce = {"raw_sync": p_raw_sync, "aio_producer": p_aio_producer,
               "callback_future": p_callback_future,
               "callback_coalesced": p_callback_coalesced}
    with broker() as bootstrap:
        topic = create_topic(bootstrap)
        fill(bootstrap, topic, n)
        for kind, variants in (("consume", consume), ("produce", produce)):
            if args.only and kind != args.only:
                continue
            rates: dict[str, list[float]] = {k: [] for k in variants}
            for r in range(args.rounds):
                order = list(variants.items())
                if r % 2:
                    order.reverse()
                for name, fn in order:
                    t = topic if kind == "consume" else create_topic(bootstrap)
                    rates[name].append(fn(bootstrap, t, n))
            base = statistics.median(rates["raw_sync"])
            print(json.dumps({"kind": kind, "messages": n, "rounds": args.rounds, **{
                name: {"median": round(statistics.median(v)),
                       "ratio": round(statistics.median(v) / base, 3)}
                for name, v in rates.items()}}))


if __name__ == "__main__":
    main()
