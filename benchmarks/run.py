"""Throughput benchmarks: deimos against raw confluent-kafka, in the same run, same broker.

    python benchmarks/run.py [NAME ...] [--quick] [--messages N] [--rounds R]

Prints one JSON line per benchmark: ``{"bench", "deimos", "raw", "ratio", "ratio_min",
"ratio_max", ...}``. ``deimos`` and ``raw`` are the median messages per second of the rounds,
``ratio`` the median of the per-round ratios deimos/raw (min and max beside it). The method
is built so that it cannot flatter deimos:

* both sides are warm: each keeps one producer across rounds (deimos its shared producer,
  the raw side one ``confluent_kafka.Producer`` made once), and before its clock starts each
  sends one message to the round's fresh topic and waits for its acknowledgement (the
  idempotent producer id and the topic's metadata are never inside the timed window);
* both sides use the same librdkafka properties: the raw producer's configuration *is*
  deimos's (``deimos.backends.kafka.producer_config``), printed as ``producer_config``;
* rounds alternate (raw first in even rounds, deimos first in odd ones), 5 by default and 3
  with ``--quick``, and the median is reported, not the best round;
* every round verifies its count: a produce round reads its topic back and fails unless it
  holds exactly the messages sent; a consume round fails unless every message arrived.

Starts the embedded broker unless ``DEIMOS_TEST_BOOTSTRAP_SERVERS`` names a cluster.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition

import deimos
from deimos import config as _config
from deimos.consumer import BatchConsumer, Consumer, ConsumerLoop, resolve_settings
from deimos.kafka import producer_config
from deimos.kafka.producers import close_all
from deimos.testing.broker import GROUP_TIMEOUTS, broker, create_topic

BENCHES: dict[str, Callable[[Bench], dict[str, Any]]] = {}

#: consumer properties of every consume benchmark, raw and deimos alike: quick group joins on
#: the embedded broker, and deimos's default ``fetch.queue.backoff.ms`` (librdkafka's default
#: of 1000 ms stalls a consumer that drains its full prefetch queue in less than a second)
CONSUMER_CONFIG = {**GROUP_TIMEOUTS, "fetch.queue.backoff.ms": 50}

#: the plain consume benchmarks handle this many times ``--messages``: a plain no-op consumer
#: drains 300,000 messages in 0.13-0.25 s, a window in which the first fetches' ramp-up
#: weighs as much as the per-message cost (measured: consume_batch_plain 0.729 at 300,000
#: messages with CPU 1.20x raw's, 0.933 at 3,000,000 with CPU 1.03x); ten times as many
#: make a round last about a second, as the Avro ones do at the default size
PLAIN_CONSUME_SCALE = 10

#: what the producers of this run were configured with (shown once per JSON line)
_SHOWN_PRODUCER_KEYS = ("enable.idempotence", "acks", "linger.ms", "batch.size",
                        "partitioner", "delivery.report.only.error", "compression.type")


def bench(name: str) -> Callable[[Callable[[Bench], dict[str, Any]]], Any]:
    def register(fn: Callable[[Bench], dict[str, Any]]) -> Any:
        BENCHES[name] = fn
        return fn
    return register


@dataclass
class Run:
    """One timed pass: messages per second, and the timed thread's CPU seconds per message
    (None where the work is spread over threads that cannot be timed apart)."""

    rate: float
    cpu: float | None = None
    #: the whole process's CPU seconds per message (every thread: the Python ones and
    #: librdkafka's): a GIL hand-off between two Python threads shows here, not in ``cpu``
    proc: float | None = None


def _as_run(result: Run | float) -> Run:
    return result if isinstance(result, Run) else Run(float(result))


def timed(n: int, work: Callable[[], Any]) -> Run:
    """Run ``work`` (handling ``n`` messages) under the wall clock and the thread's CPU clock."""
    start, cpu, proc = time.perf_counter(), time.thread_time(), time.process_time()
    work()
    return Run(n / (time.perf_counter() - start), (time.thread_time() - cpu) / n,
               (time.process_time() - proc) / n)


def summarize(raw: Sequence[Run], ours: Sequence[Run], **extra: Any) -> dict[str, Any]:
    """Medians of paired rounds: rates, the per-round ratio with min/max, and CPU."""
    ratios = [o.rate / r.rate for o, r in zip(ours, raw)]
    out: dict[str, Any] = {
        "deimos": round(statistics.median(o.rate for o in ours)),
        "raw": round(statistics.median(r.rate for r in raw)),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
    }
    # deimos's CPU per message over raw's (1.0: deimos adds nothing): the timed thread's,
    # then the whole process's
    for attr, prefix in (("cpu", "cpu"), ("proc", "process_cpu")):
        if all(getattr(x, attr) is not None for x in (*ours, *raw)):
            our_cpu = statistics.median(getattr(o, attr) for o in ours)
            raw_cpu = statistics.median(getattr(r, attr) for r in raw)
            out[f"{prefix}_us_per_message"] = {"deimos": round(our_cpu * 1e6, 2),
                                               "raw": round(raw_cpu * 1e6, 2)}
            out[f"{prefix}_vs_raw"] = round(our_cpu / raw_cpu, 3)
    out.update(extra)
    out["rounds"] = len(ratios)
    return out


class Bench:
    def __init__(self, bootstrap: str, messages: int, rounds: int, quick: bool) -> None:
        self.bootstrap = bootstrap
        self.messages = messages
        self.rounds = rounds
        self.quick = quick
        self._filled: dict[tuple[str, int], str] = {}
        self._raw_producers: dict[str, RawProducer] = {}
        #: CPU seconds per message of the last deimos consume run
        self.last_cpu_per_message: float | None = None

    def fresh_producers(self) -> None:
        """Close every producer of both sides: each benchmark starts with new ones.

        librdkafka finds a produce call's topic by a linear search of every topic its
        producer has known (measured: 0.56 µs a ``produce`` with no other topic, 1.42 µs
        with 200, 3.5 µs with 800), and every round writes to a fresh topic. Raw producers
        kept for the whole run (as until 2026-12-08) knew a hundred or more topics by the
        later produce benchmarks while deimos's, made anew after a reconfiguration, knew a
        few: a full run gave ``produce_protobuf`` 1.478 (0.978 alone) and ``produce_avro``
        1.161 (0.947 alone)."""
        for p in self._raw_producers.values():
            p.flush(30)
        self._raw_producers.clear()
        close_all(30)

    def configure(self, **sections: Any) -> None:
        _config.reset()
        deimos.configure(kafka={"bootstrap_servers": self.bootstrap}, **sections)

    def topic(self, partitions: int = 1) -> str:
        return create_topic(self.bootstrap, f"bench-{uuid.uuid4().hex[:10]}", partitions)

    # -- producing ----------------------------------------------------------------------------

    def producer_config(self) -> dict[str, Any]:
        """The librdkafka producer properties deimos uses under the current settings: the
        raw side's configuration, so both sides send with the same properties."""
        return producer_config(_config.get_settings())

    def shown_config(self) -> dict[str, Any]:
        conf = self.producer_config()
        return {k: conf[k] for k in _SHOWN_PRODUCER_KEYS if k in conf}

    def raw_producer(self, **overrides: Any) -> RawProducer:
        """One raw producer per configuration for a benchmark's rounds, as deimos keeps its
        own (both are dropped between benchmarks: :meth:`fresh_producers`)."""
        conf = {**self.producer_config(), **overrides}
        key = repr(sorted((k, repr(v)) for k, v in conf.items()))
        p = self._raw_producers.get(key)
        if p is None:
            p = self._raw_producers[key] = RawProducer(conf)
        return p

    @staticmethod
    def warm_raw(p: RawProducer, topic: str) -> None:
        """One acknowledged message before the clock starts (producer id, topic metadata)."""
        failures: list[Any] = []
        p.produce(topic, b"warm-up", on_delivery=lambda e, m: failures.append(e) if e else None)
        assert p.flush(30) == 0 and not failures, f"raw warm-up failed: {failures}"

    def raw_produce(self, topic: str, items: Sequence[Any], keys: Sequence[Any] | None = None,
                    encode: Callable[[Any], Any] | None = None,
                    headers: list[tuple[str, bytes]] | None = None,
                    producer: RawProducer | None = None) -> Run:
        """A raw ``produce`` loop, one call per message (``encode`` applied to each item
        inside the timed loop; ``headers`` on every message), up to the final ``flush``;
        warmed on ``topic`` first and its count verified afterwards."""
        p = producer or self.raw_producer()
        self.warm_raw(p, topic)
        produce = p.produce
        poll = p.poll
        extra = {"headers": headers} if headers else {}

        def loop() -> None:
            for i, item in enumerate(items):
                value = encode(item) if encode is not None else item
                key = keys[i] if keys is not None else None
                while True:
                    try:
                        produce(topic, value, key, **extra)
                        break
                    except BufferError:
                        poll(0.005)  # local queue full: the same wait deimos uses
                if i % 500 == 0:
                    poll(0)
            assert p.flush(60) == 0

        run = timed(len(items), loop)
        self.verify_count(topic, len(items) + 1)
        return run

    def deimos_produce(self, topic: str, n: int, warm: Callable[[], Any],
                       work: Callable[[], Any]) -> Run:
        """A deimos produce pass: ``warm`` publishes one message (flushed and acknowledged
        before the clock starts), ``work`` publishes ``n`` and flushes; the count verified."""
        warm()
        assert deimos.flush(30) == 0, "deimos warm-up message not delivered"

        def loop() -> None:
            work()
            assert deimos.flush(60) == 0

        run = timed(n, loop)
        self.verify_count(topic, n + 1)
        return run

    def verify_count(self, topic: str, expected: int, timeout: float = 60.0) -> None:
        """Fail unless ``topic`` holds exactly ``expected`` messages (read back from the
        start, not from watermarks: the embedded broker's are wrong after batched writes)."""
        c = RawConsumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-verify",
                         "enable.auto.commit": False, "fetch.queue.backoff.ms": 50})
        md = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        got = 0
        deadline = time.monotonic() + timeout
        try:
            while got < expected and time.monotonic() < deadline:
                got += sum(1 for m in c.consume(10_000, 0.5) if m.error() is None)
            # anything beyond the expected count (duplicates) shows up within a short wait
            got += sum(1 for m in c.consume(10_000, 0.3) if m.error() is None)
        finally:
            c.close()
        if got != expected:
            raise AssertionError(f"topic {topic} holds {got} messages, expected {expected}")

    # -- rounds -------------------------------------------------------------------------------

    @property
    def plain_consume_messages(self) -> int:
        """The message count of the plain consume benchmarks (see PLAIN_CONSUME_SCALE)."""
        return self.messages * PLAIN_CONSUME_SCALE

    def alternate(self, raw: Callable[[], Run | float], ours: Callable[[], Run | float],
                  messages: int | None = None, **extra: Any) -> dict[str, Any]:
        """Run raw and deimos alternately ``rounds`` times (raw first in even rounds);
        medians of the paired rounds (``messages``: the count of each round, when it is not
        ``--messages``)."""
        raw_runs: list[Run] = []
        our_runs: list[Run] = []
        for r in range(self.rounds):
            for side in ((raw, raw_runs), (ours, our_runs))[:: 1 if r % 2 == 0 else -1]:
                gc.collect()
                side[1].append(_as_run(side[0]()))
        return summarize(raw_runs, our_runs, messages=messages or self.messages, **extra)

    def median_rate(self, run: Callable[[], Run | float]) -> float:
        """Median messages/s of ``rounds`` runs of one side (a peer's API)."""
        return statistics.median(_as_run(run()).rate for _ in range(self.rounds))

    # -- consuming ----------------------------------------------------------------------------

    def filled_topic(self, values: list[bytes], keys: list[bytes] | None = None,
                     tag: str = "plain") -> str:
        """A topic holding ``values`` (made once per tag and size)."""
        cache_key = (tag, len(values))
        if cache_key in self._filled:
            return self._filled[cache_key]
        topic = self.topic()
        self.fill(topic, values, keys)
        self._filled[cache_key] = topic
        return topic

    def fill(self, topic: str, values: Sequence[bytes], keys: Sequence[bytes] | None = None
             ) -> None:
        """Write exactly ``values`` to ``topic`` (set-up of consume benchmarks, untimed)."""
        p = RawProducer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        for i, v in enumerate(values):
            while True:
                try:
                    p.produce(topic, v, keys[i] if keys is not None else None)
                    break
                except BufferError:
                    p.poll(0.005)
        assert p.flush(60) == 0

    def raw_consume(self, topic: str, n: int, decode: Callable[[Any], Any],
                    per_message: bool = False) -> Run:
        """A raw ``consume(num_messages=500)`` loop, from the first message: ``decode`` turns
        each value into what deimos hands its handler; the handler counts (per message, or
        per batch) exactly as the deimos benchmark handlers do; offsets are stored after each
        batch as deimos does. The consumer properties are deimos's for the same settings."""
        from deimos.kafka import consumer_config

        cs = resolve_settings(_NoopBatch, topics=[topic], group_id=f"raw-{uuid.uuid4().hex[:8]}",
                              config=dict(CONSUMER_CONFIG), max_batch_size=500)
        c = RawConsumer(consumer_config(_config.get_settings(), cs))
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
        return Run(counter.rate(), counter.cpu_per_message())

    def deimos_consume(self, cls: type, topic: str, n: int, **settings: Any) -> Run:
        """A deimos consumer class ``cls`` over ``topic``, from its first call.

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
        return Run(counter.rate(), self.last_cpu_per_message)


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
        if self.count != self.target:
            raise RuntimeError(f"{self.count} messages handled, expected {self.target}")
        return self.count / (self.end - self.start)

    def cpu_per_message(self) -> float:
        """Seconds of the handling thread's CPU per message after the first count."""
        return (self.cpu_end - self.cpu_start) / max(1, self.count - self.first)


# ---------------------------------------------------------------------------------------------
# plain benchmarks
# ---------------------------------------------------------------------------------------------

VALUE = "x" * 100


class _PlainProducer(deimos.Producer):
    key_config = "plain"


def _plain(n: int) -> tuple[list[str], list[str]]:
    return [VALUE] * n, [f"key-{i % 1000}" for i in range(n)]


def _produce_plain(b: Bench, per_message: bool) -> dict[str, Any]:
    n = b.messages
    values, keys = _plain(n)
    b.configure(producers={"backend": "kafka_async"})

    def raw() -> Run:
        # confluent-kafka takes str values and keys itself (UTF-8, in C): the best a user does
        return b.raw_produce(b.topic(), values, keys=keys)

    def ours() -> Run:
        topic = _PlainProducer.topic = b.topic()
        if per_message:
            def work() -> None:
                publish = _PlainProducer.publish
                for i in range(n):
                    publish(values[i], key=keys[i])
        else:
            def work() -> None:
                for i in range(0, n, 500):
                    _PlainProducer.publish_list(values[i:i + 500], keys=keys[i:i + 500])
        return b.deimos_produce(topic, n, lambda: _PlainProducer.publish("warm-up", key="w"),
                                work)

    return b.alternate(raw, ours, producer_config=b.shown_config())


@bench("produce_plain")
def produce_plain(b: Bench) -> dict[str, Any]:
    """deimos ``publish_list`` (kafka_async, plain, keyed, 100-byte values, 500 per call)
    vs a raw ``produce`` loop."""
    return _produce_plain(b, per_message=False)


@bench("produce_plain_message")
def produce_plain_message(b: Bench) -> dict[str, Any]:
    """deimos ``publish`` once per message (kafka_async, plain, keyed, 100-byte values) vs a
    raw ``produce`` loop."""
    return _produce_plain(b, per_message=True)


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
    n = b.plain_consume_messages
    topic = b.filled_topic([VALUE.encode()] * n)
    b.configure()
    return b.alternate(lambda: b.raw_consume(topic, n, bytes.decode),
                       lambda: b.deimos_consume(_NoopBatch, topic, n), messages=n)


@bench("consume_message_plain")
def consume_message_plain(b: Bench) -> dict[str, Any]:
    """deimos per-message Consumer (plain, no-op handler) vs raw consume loop."""
    n = b.plain_consume_messages
    topic = b.filled_topic([VALUE.encode()] * n)
    b.configure()
    return b.alternate(lambda: b.raw_consume(topic, n, bytes.decode, per_message=True),
                       lambda: b.deimos_consume(_NoopMessage, topic, n), messages=n)


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
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (50,000 messages), 3 rounds")
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
    rounds = args.rounds or (3 if args.quick else 5)
    with broker() as bootstrap:
        b = Bench(bootstrap, messages, rounds, args.quick)
        for name in names:
            result = {"bench": name, **BENCHES[name](b)}
            print(json.dumps(result), flush=True)
            _config.reset()
            b.fresh_producers()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
