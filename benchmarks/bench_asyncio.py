"""asyncio benchmarks: asyncio consumers and ``apublish`` against the raw *synchronous*
loops of the same run (the ratios of issue 17), and ``max_concurrency`` for I/O-bound
handlers against the same handler one message at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bench_avro import (
    _configure,
    _keys,
    _records,
    _WidgetProducer,
    filled_avro_topic,
    raw_avro_decoder,
    raw_avro_produce,
)
from run import VALUE, Bench, Counter, Run, bench

import deimos


class _AsyncWidgets(deimos.AsyncBatchConsumer):
    schema = "Widget"
    namespace = "com.bench"
    counter: Counter

    async def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        self.counter.add(len(payloads))


class _AsyncNoopMessage(deimos.AsyncConsumer):
    counter: Counter

    async def consume(self, payload: Any, metadata: Any) -> None:
        self.counter.add(1)


@bench("consume_batch_avro_async")
def consume_batch_avro_async(b: Bench) -> dict[str, Any]:
    """deimos AsyncBatchConsumer (avro_schema_registry) vs the raw sync consume + fastavro
    schemaless_reader loop (target ratio 0.85)."""
    n = b.messages
    topic = filled_avro_topic(b, n)
    _configure(b)
    decode = raw_avro_decoder()
    return b.alternate(lambda: b.raw_consume(topic, n, decode),
                       lambda: b.deimos_consume(_AsyncWidgets, topic, n))


@bench("consume_message_plain_async")
def consume_message_plain_async(b: Bench) -> dict[str, Any]:
    """deimos AsyncConsumer (plain, no-op ``async def consume``) vs the raw sync consume loop
    calling a function per message (target ratio 0.6)."""
    n = b.plain_consume_messages
    topic = b.filled_topic([VALUE.encode()] * n)
    b.configure()
    return b.alternate(lambda: b.raw_consume(topic, n, bytes.decode, per_message=True),
                       lambda: b.deimos_consume(_AsyncNoopMessage, topic, n), messages=n)


def _apublish(b: Bench, per_message: bool) -> dict[str, Any]:
    n = b.messages
    records = _records(n)
    keys = _keys(n)
    client = _configure(b)

    def ours() -> Run:
        topic = _WidgetProducer.topic = b.topic()
        loop = asyncio.new_event_loop()

        async def many() -> None:
            if per_message:
                apublish = _WidgetProducer.apublish
                for i in range(n):
                    await apublish(records[i], key=keys[i])
            else:
                for i in range(0, n, 500):
                    await _WidgetProducer.apublish_list(records[i:i + 500],
                                                        keys=keys[i:i + 500])

        try:
            return b.deimos_produce(topic, n, lambda: _WidgetProducer.publish(records[0],
                                                                              key="w"),
                                    lambda: loop.run_until_complete(many()))
        finally:
            loop.close()

    return b.alternate(lambda: raw_avro_produce(b, client, records, keys), ours,
                       producer_config=b.shown_config())


@bench("produce_avro_async")
def produce_avro_async(b: Bench) -> dict[str, Any]:
    """``await apublish_list`` (kafka_async: returns once accepted; 500 keyed Avro records per
    call) vs the raw sync fastavro + produce loop (target ratio 0.85)."""
    return _apublish(b, per_message=False)


@bench("produce_avro_message_async")
def produce_avro_message_async(b: Bench) -> dict[str, Any]:
    """``await apublish`` once per keyed Avro record vs the same raw sync loop (target 0.6)."""
    return _apublish(b, per_message=True)


#: messages of the I/O-bound benchmarks (a handler waits 1 ms per message: a fixed count
#: keeps the sequential side's rounds to a few seconds whatever --messages says)
IO_MESSAGES = 3000
IO_KEYS = 500


class _Order:
    """Per-key order check of the I/O benchmarks: each key's sequence numbers must arrive
    increasing, and no key may have two messages in flight."""

    def __init__(self) -> None:
        self.last: dict[bytes, int] = {}
        self.busy: set[bytes] = set()
        self.lock = threading.Lock()
        self.violations = 0

    def enter(self, key: bytes, seq: int) -> None:
        with self.lock:
            if key in self.busy or self.last.get(key, -1) >= seq:
                self.violations += 1
            self.busy.add(key)
            self.last[key] = seq

    def leave(self, key: bytes) -> None:
        with self.lock:
            self.busy.discard(key)


class _AsyncIO(deimos.AsyncConsumer):
    counter: Counter
    order: _Order

    async def consume(self, payload: Any, metadata: Any) -> None:
        self.order.enter(metadata.raw_key, int(payload))
        await asyncio.sleep(0.001)
        self.order.leave(metadata.raw_key)
        self.counter.add(1)


class _SyncIO(deimos.Consumer):
    counter: Counter
    order: _Order

    def consume(self, payload: Any, metadata: Any) -> None:
        self.order.enter(metadata.raw_key, int(payload))
        time.sleep(0.001)
        self.order.leave(metadata.raw_key)
        with self.order.lock:  # Counter is not thread-safe: worker threads count in turn
            self.counter.add(1)


def _io(b: Bench, cls: type, concurrency: int, target: float) -> dict[str, Any]:
    n = IO_MESSAGES
    topic = b.filled_topic([str(i).encode() for i in range(n)],
                           [f"k{i % IO_KEYS}".encode() for i in range(n)], tag="io")
    b.configure()

    def run(c: int) -> Run:
        cls.order = order = _Order()  # type: ignore[attr-defined]
        result = b.deimos_consume(cls, topic, n, max_concurrency=c)
        if order.violations:
            raise AssertionError(f"{order.violations} per-key order violation(s) at "
                                 f"max_concurrency={c}")
        return result

    # "raw" here is the same handler one message at a time: the ratio is the speed-up
    out = b.alternate(lambda: run(1), lambda: run(concurrency),
                      max_concurrency=concurrency, target_speedup=target)
    out["messages"] = n
    out["keys"] = IO_KEYS
    out["per_key_order"] = "checked"
    return out


@bench("consume_io_async_concurrency")
def consume_io_async_concurrency(b: Bench) -> dict[str, Any]:
    """AsyncConsumer awaiting ``asyncio.sleep(0.001)`` per message, max_concurrency 100 vs 1
    (500 keys; per-key order checked; target speed-up 20)."""
    return _io(b, _AsyncIO, 100, 20)


@bench("consume_io_thread_concurrency")
def consume_io_thread_concurrency(b: Bench) -> dict[str, Any]:
    """Consumer sleeping 1 ms per message on 16 worker threads vs 1 (500 keys; per-key order
    checked; target speed-up 8)."""
    return _io(b, _SyncIO, 16, 8)
