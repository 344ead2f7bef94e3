"""Throughput benchmarks: deimos against raw confluent-kafka, in the same run, same broker.

    python benchmarks/run.py [NAME ...] [--quick] [--messages N] [--rounds R]

Prints one JSON line per benchmark: ``{"bench", "deimos", "raw", "ratio", ...}`` where
``deimos`` and ``raw`` are messages per second (best of the rounds; raw and deimos run
alternately so drift on a shared machine hits both) and ``ratio`` is deimos/raw. Starts the
embedded broker unless ``DEIMOS_TEST_BOOTSTRAP_SERVERS`` names a cluster.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer

import deimos
from deimos import config as _config
from deimos.consumer import BatchConsumer, Consumer, ConsumerLoop, resolve_settings
from deimos.testing.broker import GROUP_TIMEOUTS, broker, create_topic

BENCHES: dict[str, Callable[[Bench], dict[str, Any]]] = {}

#: consumer properties of every consume benchmark, raw and deimos alike: quick group joins on
#: the embedded broker, and deimos's default ``fetch.queue.backoff.ms`` (librdkafka's default
#: of 1000 ms stalls a consumer that drains its full prefetch queue in less than a second)
CONSUMER_CONFIG = {**GROUP_TIMEOUTS, "fetch.queue.backoff.ms": 50}


def bench(name: str) -> Callable[[Callable[[Bench], dict[str, Any]]], Any]:
    def register(fn: Callable[[Bench], dict[str, Any]]) -> Any:
        BENCHES[name] = fn
        return fn
    return register


class Bench:
    def __init__(self, bootstrap: str, messages: int, rounds: int, quick: bool) -> None:
        self.bootstrap = bootstrap
        self.messages = messages
        self.rounds = rounds
        self.quick = quick
        self._filled: dict[tuple[str, int], str] = {}
        #: CPU seconds per message of the last deimos run that measured it
        self.last_cpu_per_message: float | None = None

    def configure(self, **sections: Any) -> None:
        _config.reset()
        deimos.configure(kafka={"bootstrap_servers": self.bootstrap}, **sections)

    def topic(self, partitions: int = 1) -> str:
        return create_topic(self.bootstrap, f"bench-{uuid.uuid4().hex[:10]}", partitions)

    def raw_producer(self, **conf: Any) -> RawProducer:
        return RawProducer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                            "enable.idempotence": True, **conf})

    def raw_produce(self, topic: str, items: list[Any], keys: list[Any] | None = None,
                    encode: Callable[[Any], Any] | None = None,
                    headers: list[tuple[str, bytes]] | None = None, **conf: Any) -> float:
        """Messages/s of a raw ``produce`` loop (``encode`` applied to each item inside the
        timed loop; ``headers`` on every message) including the final ``flush``."""
        p = self.raw_producer(**conf)
        start = time.perf_counter()
        produce = p.produce
        extra = {"headers": headers} if headers else {}
        for i, item in enumerate(items):
            value = encode(item) if encode is not None else item
            key = keys[i] if keys is not None else None
            while True:
                try:
                    produce(topic, value, key, **extra)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        return len(items) / (time.perf_counter() - start)

    def alternate(self, raw: Callable[[], float], ours: Callable[[], float]) -> dict[str, Any]:
        """Run raw and deimos alternately ``rounds`` times; best rate of each."""
        raw_rates, our_rates = [], []
        for _ in range(self.rounds):
            gc.collect()
            raw_rates.append(raw())
            gc.collect()
            our_rates.append(ours())
        best_raw, best_ours = max(raw_rates), max(our_rates)
        return {"deimos": round(best_ours), "raw": round(best_raw),
                "ratio": round(best_ours / best_raw, 3), "messages": self.messages,
                "rounds": self.rounds}

    def filled_topic(self, values: list[bytes], keys: list[bytes] | None = None,
                     tag: str = "plain") -> str:
        """A topic holding ``values`` (made once per tag and size)."""
        cache_key = (tag, len(values))
        if cache_key in self._filled:
            return self._filled[cache_key]
        topic = self.topic()
        self.raw_produce(topic, values, keys)
        self._filled[cache_key] = topic
        return topic

    def raw_consume(self, topic: str, n: int, decode: Callable[[Any], Any],
                    per_message: bool = False) -> float:
        """Messages/s of a raw ``consume(num_messages=500)`` loop, from the first message:
        ``decode`` turns each value into what deimos hands its handler; the handler counts
        (per message, or per batch) exactly as the deimos benchmark handlers do; offsets are
        stored after each batch as deimos does."""
        from confluent_kafka import TopicPartition

        c = RawConsumer({"bootstrap.servers": self.bootstrap,
                         "group.id": f"raw-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "enable.auto.offset.store": False, **CONSUMER_CONFIG})
        c.subscribe([topic])
        counter = Counter(n)
        while not counter.done.is_set():
            msgs = c.consume(500, 1.0)
            if not msgs:
                continue
            if per_message:
                for m in msgs:
                    payload = decode(m.value())  # noqa: F841
                    counter.add(1)
            else:
                payloads = [decode(m.value()) for m in msgs]
                counter.add(len(payloads))
            last = msgs[-1]
            c.store_offsets(offsets=[TopicPartition(last.topic(), last.partition(),
                                                    last.offset() + 1)])
        c.close()
        return counter.rate()

    def deimos_consume(self, cls: type, topic: str, n: int, **settings: Any) -> float:
        """Messages/s of deimos consumer class ``cls`` over ``topic``, from its first call.

        ``cls`` counts with :class:`Counter` exactly as the raw loop's handler does."""
        counter = Counter(n)
        cls.counter = counter  # type: ignore[attr-defined]
        cs = resolve_settings(cls, topics=[topic], group_id=f"d-{uuid.uuid4().hex[:8]}",
                              config=dict(CONSUMER_CONFIG), max_batch_size=500, **settings)
        loop = ConsumerLoop(cls, cs)
        t = threading.Thread(target=loop.run, daemon=True)
        t.start()
        counter.done.wait(300)
        loop.stop()
        t.join(30)
        self.last_cpu_per_message = counter.cpu_per_message()
        return counter.rate()


class Counter:
    """Counts handled messages; the same object serves raw loops and deimos handlers.

    Besides wall time it takes the handling thread's CPU time between the first and last
    count: throughput against the embedded broker swings with fetch timing on a shared
    2-core machine, while the CPU a consumer spends per message is what deimos adds."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.start: float | None = None
        self.end: float | None = None
        self.cpu_start = 0.0
        self.cpu_end = 0.0
        self.first = 0  # counted by the first call, before the CPU clock started
        self.done = threading.Event()

    def add(self, k: int) -> None:
        if self.start is None:
            self.start = time.perf_counter()
            self.cpu_start = time.thread_time()
            self.first = k
        self.count += k
        if self.count >= self.target and self.end is None:
            self.end = time.perf_counter()
            self.cpu_end = time.thread_time()
            self.done.set()

    def rate(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError(f"only {self.count} of {self.target} messages arrived")
        return self.count / (self.end - self.start)

    def cpu_per_message(self) -> float:
        """Seconds of the handling thread's CPU per message after the first count."""
        return (self.cpu_end - self.cpu_start) / max(1, self.count - self.first)


# ---------------------------------------------------------------------------------------------
# plain benchmarks
# ---------------------------------------------------------------------------------------------

VALUE = "x" * 100


@bench("produce_plain")
def produce_plain(b: Bench) -> dict[str, Any]:
    """deimos Producer (kafka_async, plain, keyed, 100-byte values) vs raw produce loop."""
    n = b.messages
    values = [VALUE] * n
    keys = [f"key-{i % 1000}" for i in range(n)]
    b.configure(producers={"backend": "kafka_async"})

    def raw() -> float:
        return b.raw_produce(b.topic(), values, keys, partitioner="murmur2_random")

    class Bench(deimos.Producer):
        key_config = "plain"

    def ours() -> float:
        Bench.topic = b.topic()
        start = time.perf_counter()
        for i in range(0, n, 500):
            Bench.publish_list(values[i:i + 500], keys=keys[i:i + 500])
        deimos.flush(60)
        return n / (time.perf_counter() - start)

    return b.alternate(raw, ours)


class _NoopBatch(BatchConsumer):
    counter: Counter

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        self.counter.add(len(payloads))


class _NoopMessage(Consumer):
    counter: Counter

    def consume(self, payload: Any, metadata: Any) -> None:
        self.counter.add(1)


@bench("consume_batch_plain")
def consume_batch_plain(b: Bench) -> dict[str, Any]:
    """deimos BatchConsumer (plain, no-op handler) vs raw consume(num_messages=500) loop."""
    n = b.messages
    topic = b.filled_topic([VALUE.encode()] * n)
    b.configure()
    return b.alternate(lambda: b.raw_consume(topic, n, bytes.decode),
                       lambda: b.deimos_consume(_NoopBatch, topic, n))


@bench("consume_message_plain")
def consume_message_plain(b: Bench) -> dict[str, Any]:
    """deimos per-message Consumer (plain, no-op handler) vs raw consume loop."""
    n = b.messages
    topic = b.filled_topic([VALUE.encode()] * n)
    b.configure()
    return b.alternate(lambda: b.raw_consume(topic, n, bytes.decode, per_message=True),
                       lambda: b.deimos_consume(_NoopMessage, topic, n))


@bench("consume_rss")
def consume_rss(b: Bench) -> dict[str, Any]:
    """Peak RSS of a deimos batch consumer process draining a backlog, sampled as it goes."""
    n = 100_000 if b.quick else 1_000_000
    topic = b.filled_topic([VALUE.encode()] * n, tag="rss")
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "rss_child.py"), b.bootstrap, topic,
         str(n)], capture_output=True, text=True, timeout=900, check=True)
    samples = json.loads(out.stdout.strip().splitlines()[-1])
    first, last = samples["rss_mb"][0], samples["rss_mb"][-1]
    return {"messages": n, "rss_mb_samples": samples["rss_mb"], "peak_rss_mb": samples["peak_mb"],
            "growth_ratio_last_vs_first": round(last / first, 3)}


def _load_plugins() -> None:
    """Benchmarks of plugins live beside this file (bench_<plugin>.py) and register here."""
    # bench_*.py import ``run``: make that this very module even when run as a script
    sys.modules.setdefault("run", sys.modules[__name__])
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        __import__(path.stem)


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks ({', '.join(BENCHES)}); all if none")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (<1 minute)")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES)}")
    names = args.names or list(BENCHES)
    if args.quick and not args.names:
        names = [n for n in names if n != "consume_rss"] + ["consume_rss"]
    messages = args.messages or (50_000 if args.quick else 300_000)
    rounds = args.rounds or (1 if args.quick else 3)
    with broker() as bootstrap:
        b = Bench(bootstrap, messages, rounds, args.quick)
        for name in names:
            result = {"bench": name, **BENCHES[name](b)}
            print(json.dumps(result), flush=True)
            _config.reset()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
