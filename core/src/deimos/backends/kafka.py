"""The ``kafka`` (synchronous) and ``kafka_async`` producer backends, on confluent-kafka.

One librdkafka producer per distinct connection configuration is shared by every producer
class and thread (librdkafka's producer is thread-safe, and one per config keeps batching
efficient). ``delivery.report.only.error`` is on, so a successful message costs no Python
callback; failures reach the per-batch collector (sync) or ``context.on_error``, the log and
the ``publish_error`` metric (async).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from deimos.config import Settings
from deimos.errors import PublishError
from deimos.hookspecs import hookimpl
from deimos.message import Message, ProduceContext
from deimos.partitioner import murmur2_partition

log = logging.getLogger("deimos.backends.kafka")


def producer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka producer configuration deimos uses for ``settings``."""
    conf = settings.kafka.client_config()
    conf.setdefault("bootstrap.servers", "localhost:9092")
    conf.update({
        "enable.idempotence": settings.producers.idempotence,
        # Java clients' default partitioner, so keyed messages land where other clients put them.
        "partitioner": "murmur2_random",
        "delivery.report.only.error": True,
        "linger.ms": 5,
    })
    conf.update(settings.producers.config)
    return conf


class _SharedProducer:
    """A librdkafka producer plus a thread that serves its callbacks while idle."""

    def __init__(self, conf: dict[str, Any]) -> None:
        #: set when librdkafka reports a fatal error (e.g. an idempotent producer whose state
        #: the broker lost): such a producer fails every later message, so it is replaced
        self.fatal: KafkaError | None = None
        self.producer = Producer({**conf, "error_cb": self._on_error,
                                  "logger": logging.getLogger("deimos.librdkafka")})
        self._stop = threading.Event()
        self._partitions: dict[str, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._poll_loop, name="deimos-producer-poll",
                                        daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("the Kafka producer hit a fatal error and will be replaced: %s", err)
            self.fatal = err
        else:
            log.warning("Kafka producer: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.poll(0.1)
            except Exception:  # pragma: no cover - a callback bug must not stop polling
                log.exception("error while serving producer callbacks")

    def partition_count(self, topic: str) -> int:
        cached = self._partitions.get(topic)
        now = time.monotonic()
        if cached and now - cached[1] < 60:
            return cached[0]
        md = self.producer.list_topics(topic, timeout=10)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            err = tmd.error if tmd is not None else "unknown topic"
            raise PublishError(f"cannot read the partitions of topic {topic!r}: {err}")
        count = len(tmd.partitions)
        self._partitions[topic] = (count, now)
        return count

    def close(self, timeout: float) -> int:
        remaining = self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1)
        return int(remaining)


_pool_lock = threading.Lock()
_pool: dict[tuple[tuple[str, str], ...], _SharedProducer] = {}
_exit_flush_timeout = 30.0
_atexit_registered = False


def _flush_at_exit() -> None:
    """Asynchronously sent messages must not vanish when a script simply ends."""
    remaining = flush_all(_exit_flush_timeout)
    if remaining:
        log.error("%d message(s) were still undelivered at exit", remaining)


def shared_producer(settings: Settings) -> _SharedProducer:
    global _atexit_registered, _exit_flush_timeout
    conf = producer_config(settings)
    key = tuple(sorted((k, repr(v)) for k, v in conf.items()))
    sp = _pool.get(key)
    if sp is None or sp.fatal is not None:
        with _pool_lock:
            sp = _pool.get(key)
            if sp is not None and sp.fatal is not None:
                broken = sp
                sp = None
                threading.Thread(target=broken.close, args=(0,), daemon=True).start()
            if sp is None:
                sp = _pool[key] = _SharedProducer(conf)
                _exit_flush_timeout = settings.producers.flush_timeout
                if not _atexit_registered:
                    atexit.register(_flush_at_exit)
                    _atexit_registered = True
    return sp


def flush_all(timeout: float) -> int:
    with _pool_lock:
        producers = list(_pool.values())
    return sum(int(sp.producer.flush(timeout)) for sp in producers)


def close_all(timeout: float) -> int:
    with _pool_lock:
        producers = list(_pool.values())
        _pool.clear()
    return sum(sp.close(timeout) for sp in producers)


class _Collector:
    """Collects the failures of one synchronous batch (called from librdkafka's thread)."""

    __slots__ = ("failures", "message_for")

    def __init__(self) -> None:
        self.failures: list[tuple[Any, Any]] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failures.append((msg, err))


class _AsyncReporter:
    __slots__ = ("context",)

    def __init__(self, context: ProduceContext) -> None:
        self.context = context

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        ctx = self.context
        log.error("could not deliver a message to %s (partition %s): %s", msg.topic(),
                  msg.partition(), err)
        ctx.telemetry.increment("publish_error", 1, {"topic": msg.topic()})
        if ctx.on_error is not None:
            m = Message(msg.topic(), None, encoded_key=msg.key(), encoded_payload=msg.value(),
                        headers=msg.headers())
            try:
                ctx.on_error(m, KafkaException(err))
            except Exception:
                log.exception("on_error callback failed")


class KafkaBackend:
    """Sends through librdkafka; ``sync`` decides whether a call waits for acknowledgement."""

    default_sync = True

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        sp = shared_producer(context.settings)
        produce = sp.producer.produce
        poll = sp.producer.poll
        topic = context.topic
        callback: Any = _Collector() if sync else _AsyncReporter(context)
        refused: list[tuple[Message, BaseException]] = []
        count = None
        for m in messages:
            partition = -1
            if m.partition_key is not None:
                if count is None:
                    count = sp.partition_count(topic)
                partition = murmur2_partition(m.partition_key, count)
            while True:
                try:
                    if m.headers:
                        produce(topic, m.encoded_payload, m.encoded_key, partition,
                                callback, headers=m.headers)  # type: ignore[arg-type]
                    else:
                        produce(topic, m.encoded_payload, m.encoded_key, partition, callback)
                    break
                except BufferError:
                    poll(0.05)  # local queue full: let librdkafka drain, then retry
                except KafkaException as exc:  # e.g. message larger than message.max.bytes
                    refused.append((m, exc))
                    break
        if not sync:
            poll(0)
            for m, error in refused:
                callback(error.args[0] if error.args else KafkaError(KafkaError._FAIL),
                         _RefusedMsg(topic, m))
            if refused:
                raise PublishError(
                    f"{len(refused)} message(s) to {topic!r} were refused by the client: "
                    f"{refused[0][1]}", refused)
            return
        remaining = sp.producer.flush(context.settings.producers.sync_timeout)
        failures: list[tuple[Any, Any]] = list(refused) + list(callback.failures)
        if failures:
            raise PublishError(
                f"{len(failures)} of {len(messages)} message(s) to {topic!r} were not "
                f"delivered: {failures[0][1]}", failures)
        if remaining:
            raise PublishError(
                f"messages to {topic!r} were not acknowledged within "
                f"{context.settings.producers.sync_timeout}s ({remaining} still in flight)")

    @hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return flush_all(timeout)

    @hookimpl
    def deimos_backend_close(self) -> None:
        close_all(30)


class KafkaAsyncBackend(KafkaBackend):
    """``kafka`` that returns at once by default; failures reach ``on_error``, the log and the
    ``publish_error`` metric."""

    default_sync = False


class _RefusedMsg:
    """Looks like a confluent-kafka Message for a message the client refused to queue."""

    def __init__(self, topic: str, m: Message) -> None:
        self._t, self._m = topic, m

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return -1

    def key(self) -> bytes | None:
        return self._m.encoded_key

    def value(self) -> bytes | None:
        return self._m.encoded_payload

    def headers(self) -> Any:
        return self._m.headers
