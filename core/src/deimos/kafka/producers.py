"""The producers shared by every producer class and thread of a process.

Two librdkafka producers per distinct configuration (librdkafka's producer is thread-safe,
and one per configuration keeps batching efficient):

* the **asynchronous** one has ``delivery.report.only.error`` on, so a successful message
  costs no Python callback;
* the **synchronous** one reports every delivery, so :func:`deliver` waits for the reports of
  exactly its own messages and fails only for its own failures. It is a producer of its own
  because librdkafka decides per producer, not per message, whether successes are reported:
  one producer for both would either cost every asynchronous message a Python callback or
  make a synchronous caller wait on everybody's traffic (``flush``).

Order is kept per key in call order, whichever kind sends: a synchronous call to a topic that
was also published to asynchronously first waits until the asynchronous producer has
delivered what it holds (only when it holds something), because two producers race each
other to the broker. That is the wait a
raw confluent-kafka user pays with ``produce(); flush()``. A producer that reports a fatal error (an
idempotent producer whose state the broker lost, say) fails every later message, so it is
replaced on its next use. So is a *stuck* one: librdkafka raises no fatal error when an
idempotent producer's id is unknown to a restarted broker (or a re-created topic), it only
times every message out. A delivery wait in which every message timed out (each has failed
for a whole ``message.timeout.ms``) while the broker still answers a metadata request marks
the producer stuck, and it is replaced like a fatal one (:meth:`SharedProducer.note_deliveries`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from deimos.config import Settings
from deimos.errors import PublishError
from deimos.kafka import connection as _connection
from deimos.kafka import transactions as _transactions
from deimos.kafka.config import producer_entry
from deimos.kafka.statistics import StatisticsForwarder
from deimos.message import Message
from deimos.partitioner import murmur2_partition

log = logging.getLogger("deimos.kafka")

#: how long the poll thread blocks in ``poll()`` (or waits, while publishers serve)
_POLL_INTERVAL = 0.1
#: an asynchronous publishing thread serves the callbacks every this many messages
SERVE_EVERY = 1000

#: delivery errors that say "not acknowledged in time" rather than "refused"
TIMEOUT_CODES = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT,
                           KafkaError.REQUEST_TIMED_OUT})


class SharedProducer:
    """A librdkafka producer plus a thread that serves its callbacks (the asynchronous
    one's publishing threads serve them too, see :meth:`serve`).

    ``reports``: whether every delivery is reported (the synchronous producer) or only
    failures (the asynchronous one).
    """

    def __init__(self, conf: dict[str, Any], *, reports: bool = False,
                 user_linger: bool = False, summary_interval: float | None = None) -> None:
        #: set when librdkafka reports a fatal error (e.g. an idempotent producer whose state
        #: the broker lost), or when the producer is stuck (see :meth:`note_deliveries`):
        #: such a producer fails every later message, so it is replaced
        self.fatal: KafkaError | None = None
        #: the last error librdkafka reported (named when a synchronous publish times out),
        #: when (``time.monotonic()``) and how many so far
        self.last_error: KafkaError | None = None
        self.last_error_at = 0.0
        self.error_count = 0
        self.reports = reports
        self.closed = False
        #: the topics this (asynchronous) producer was handed by a producer class: a
        #: synchronous publish to one of them waits for it first (call order per key)
        self.async_topics: set[str] = set()
        self.bootstrap = str(conf.get("bootstrap.servers", ""))
        #: the reachability of the cluster, where connection failures are logged (once)
        self.connection = _connection.connection(self.bootstrap, summary_interval)
        conf = _connection.instrument(
            conf, summary_interval=summary_interval, on_error=self._on_error,
            on_connection_error=self._note_error, on_stats=StatisticsForwarder(
                {"client": "producer", "bootstrap": self.bootstrap}))
        if reports:
            conf["delivery.report.only.error"] = False
            if not user_linger:
                # a synchronous caller is blocked until its acknowledgement: lingering only
                # adds latency (messages still batch while a request is in flight). Only
                # flush() makes librdkafka skip linger.ms, and waiting for our own reports
                # must not flush other callers' traffic.
                conf["linger.ms"] = 0
        #: the linger this producer was made with (0 for the synchronous one by default)
        self.linger_ms = conf.get("linger.ms")
        self.producer = Producer(conf)
        self._stop = threading.Event()
        #: a publishing thread served the callbacks since the poll thread last looked
        self._served = False
        #: messages queued through produce_all since the last serve() (asynchronous only)
        self._unserved = 0
        #: ``polling``: whether this thread is inside ``poll`` of this producer (serve())
        self._local = threading.local()
        self._partitions: dict[str, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._poll_loop, name="deimos-producer-poll",
                                        daemon=True)
        self._thread.start()

    def describe_last_error(self) -> str:
        """``; librdkafka's last error: ...`` for a message, or nothing."""
        last = self.last_error or self.connection.last_error
        return f"; librdkafka's last error: {last}" if last else ""

    def _note_error(self, err: KafkaError) -> None:
        self.last_error = err
        self.last_error_at = time.monotonic()
        self.error_count += 1

    def _on_error(self, err: KafkaError) -> None:
        self._note_error(err)
        if err.fatal():
            log.error("the Kafka producer hit a fatal error and will be replaced: %s", err)
            self.fatal = err
        else:
            log.warning("Kafka producer: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            if self._served:
                # a publishing thread served the callbacks within the last interval (see
                # serve()): stay out of its way rather than contend with it for the GIL
                self._served = False
                self._stop.wait(_POLL_INTERVAL)
                continue
            self._poll(_POLL_INTERVAL)

    def _poll(self, timeout: float) -> None:
        local = self._local
        local.polling = True
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:
            # confluent-kafka raises a fatal error from poll() rather than (only) handing
            # it to error_cb: such a producer is replaced all the same
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                if self.fatal is None:
                    self._on_error(err)
            else:
                log.exception("error while serving producer callbacks")
        except Exception:  # pragma: no cover - a callback bug must not stop polling
            log.exception("error while serving producer callbacks")
        finally:
            local.polling = False

    def serve(self) -> None:
        """Serve the asynchronous producer's callbacks on the calling (publishing) thread,
        as a raw confluent-kafka loop does with ``poll(0)``: called every
        :data:`SERVE_EVERY` messages a thread queues. Why: confluent-kafka takes the GIL once
        per delivered message (``delivery.report.only.error`` is applied in its callback,
        not in librdkafka), and on the poll thread each of those takes it from the
        publishing thread (measured: a raw loop served from a second thread is ~13%
        slower). While publishers serve, the poll thread only waits; it serves again within
        one interval of the last ``serve()``. Never for the synchronous producer: a
        synchronous caller waits for its reports and does not poll. Nor inside a callback
        this thread is serving (a ``delivery_failed`` that publishes again): confluent-kafka
        keeps one callback state per thread and a nested ``poll`` would end the outer's."""
        self._served = True
        if not getattr(self._local, "polling", False):
            self._poll(0)

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

    def note_deliveries(self, delivered: int, failures: Sequence[tuple[Any, Any]]) -> bool:
        """Called after a delivery wait with how many messages were acknowledged and the
        ``(message, KafkaError)`` failures: when none was acknowledged and every failure is
        a timeout while the broker answers a metadata request, the producer is stuck (an
        idempotent producer the restarted broker does not know, say; librdkafka reports
        no fatal error for it) and is marked for replacement. True when marked."""
        if delivered or not failures or self.fatal is not None:
            return False
        if not all(isinstance(e, KafkaError) and e.code() in TIMEOUT_CODES
                   for _, e in failures):
            return False
        try:
            self.producer.list_topics(timeout=2)
        except KafkaException:
            return False  # the broker is away: a new producer would not fare better
        log.error("every delivery of the Kafka producer timed out while the broker at %s "
                  "answers (%d message(s)); replacing the producer", self.bootstrap,
                  len(failures))
        self.fatal = KafkaError(KafkaError._MSG_TIMED_OUT,
                                "stuck: every delivery timed out while the broker answers")
        return True

    def produce_all(self, topic: str, messages: Sequence[Message], callback: Any,
                    blocks: Callable[[KafkaException], bool] | None = None
                    ) -> list[tuple[Message, KafkaException | None]]:
        """Queue ``messages``, waiting while librdkafka's local queue is full; the messages
        it refused (e.g. larger than ``message.max.bytes``) with their errors.

        With ``blocks``, a refused message whose error ``blocks(error)`` is true holds its
        key back: the later messages with the same key (``partition_key``, else the key) are
        not queued but returned with the error ``None``, so a refusal never lets a key's
        later messages overtake it."""
        start = self._queue_plain(topic, messages, callback)
        if not self.reports:
            self._unserved += start
            if self._unserved >= SERVE_EVERY:
                self._unserved = 0
                self.serve()
        if start == len(messages):
            return []
        queuing = Queuing(self, topic, messages, callback, blocks)
        queuing.next = start
        while not queuing.step():
            self._wait_for_room()
        return queuing.refused

    def _wait_for_room(self) -> None:
        """librdkafka's local queue is full: room comes as delivery reports are served.
        An asynchronous producer's publishing thread serves them itself meanwhile (the poll
        thread may be waiting out an interval, see :meth:`serve`); otherwise, and inside a
        callback, the poll thread does."""
        if self.reports or getattr(self._local, "polling", False):
            time.sleep(0.005)
        else:
            self._served = True
            self._poll(0.005)

    async def aproduce_all(self, topic: str, messages: Sequence[Message], callback: Any
                           ) -> list[tuple[Message, KafkaException | None]]:
        """:meth:`produce_all` from a coroutine: a full local queue is waited for without
        blocking the event loop, and so is a topic's partition count not known yet."""
        start = self._queue_plain(topic, messages, callback)
        if start == len(messages):
            return []
        if topic not in self._partitions and any(
                messages[j].partition_key is not None for j in range(start, len(messages))):
            await asyncio.to_thread(self.partition_count, topic)  # a metadata request
        queuing = Queuing(self, topic, messages, callback, None)
        queuing.next = start
        while not queuing.step():
            await asyncio.sleep(0.005)
        return queuing.refused

    def _queue_plain(self, topic: str, messages: Sequence[Message], callback: Any) -> int:
        """The common case of :meth:`produce_all` and :meth:`aproduce_all` in a tight loop
        (no partition key, room in the queue, nothing refused; measured: a generator step
        or a look-ahead per message costs a list publish more than this loop): how many
        messages were queued before the first that needs :class:`Queuing`."""
        produce = self.producer.produce
        i = 0
        try:
            for i, m in enumerate(messages):
                if m.partition_key is not None:
                    return i
                if m.headers is None:  # any keyword argument costs produce() ~0.4 µs
                    produce(topic, m.encoded_payload, m.encoded_key, -1, callback)
                else:
                    produce(topic, m.encoded_payload, m.encoded_key, -1, callback,
                            headers=m.headers)  # type: ignore[arg-type]
        except (BufferError, KafkaException):
            return i  # not queued (full) or refused: Queuing waits or reports
        return len(messages)

    def close(self, timeout: float) -> int:
        self.closed = True
        remaining = self.producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=1)
        return int(remaining)


class Queuing:
    """One :meth:`SharedProducer.produce_all` call, resumable: :meth:`step` queues what
    librdkafka takes and stops when its local queue is full, so a thread can sleep and a
    coroutine await before the next step."""

    __slots__ = ("blocked", "blocks", "callback", "count", "messages", "next", "refused", "sp",
                 "topic")

    def __init__(self, sp: SharedProducer, topic: str, messages: Sequence[Message],
                 callback: Any, blocks: Callable[[KafkaException], bool] | None) -> None:
        self.sp = sp
        self.topic = topic
        self.messages = messages
        self.callback = callback
        self.blocks = blocks
        self.refused: list[tuple[Message, KafkaException | None]] = []
        self.blocked: set[bytes] = set()
        self.count: int | None = None
        self.next = 0

    def step(self) -> bool:
        """Queue from where the last step stopped; True once every message was handled."""
        produce = self.sp.producer.produce
        topic, callback, blocked = self.topic, self.callback, self.blocked
        messages = self.messages
        for i in range(self.next, len(messages)):
            m = messages[i]
            if blocked:
                k = m.partition_key if m.partition_key is not None else m.encoded_key
                if k is not None and k in blocked:
                    self.refused.append((m, None))
                    continue
            partition = -1
            if m.partition_key is not None:
                if self.count is None:
                    self.count = self.sp.partition_count(topic)
                partition = murmur2_partition(m.partition_key, self.count)
            try:
                if m.headers is None:  # any keyword argument costs produce() ~0.4 µs
                    produce(topic, m.encoded_payload, m.encoded_key, partition, callback)
                else:
                    produce(topic, m.encoded_payload, m.encoded_key, partition, callback,
                            headers=m.headers)  # type: ignore[arg-type]
            except BufferError:
                self.next = i
                return False
            except KafkaException as exc:
                self.refused.append((m, exc))
                if self.blocks is not None and self.blocks(exc):
                    k = m.partition_key if m.partition_key is not None else m.encoded_key
                    if k is not None:
                        blocked.add(k)
        self.next = len(messages)
        return True


_pool_lock = threading.Lock()
_pool: dict[tuple[str, bool], SharedProducer] = {}
_exit_flush_timeout = 30.0
_atexit_registered = False


#: whether a process that lost messages at exit ends with status 1 (the pytest plugin turns
#: it off: a test session's status is pytest's)
EXIT_NONZERO_ON_LOSS = True


def _flush_at_exit() -> None:
    """Asynchronously sent messages must not vanish silently when a script simply ends: wait
    up to ``producers.flush_timeout`` for them (one deadline for every producer), then give
    up, say how many were lost and where they were going, and end with status 1."""
    with _pool_lock:
        producers = list(_pool.values())
    if not producers:
        return
    remaining = flush_all(_exit_flush_timeout)
    if not remaining:
        return
    where = sorted({sp.bootstrap for sp in producers})
    last = next((sp.describe_last_error() for sp in producers
                 if sp.describe_last_error()), "")
    log.error("gave up at exit after producers.flush_timeout (%gs): %d message(s) were not "
              "delivered and are lost (kafka.bootstrap_servers %s%s)", _exit_flush_timeout,
              remaining, ", ".join(repr(w) for w in where), last)
    if EXIT_NONZERO_ON_LOSS:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        # skips librdkafka's teardown too, which would otherwise wait on the dead brokers
        os._exit(1)


def shared_producer(settings: Settings, *, reports: bool = False) -> SharedProducer:
    """The shared producer for ``settings``: asynchronous (failures reported only) by
    default, synchronous (every delivery reported) with ``reports``. A producer that hit a
    fatal error is replaced here."""
    pool_key = (producer_entry(settings)[2], reports)
    sp = _pool.get(pool_key)
    if sp is None or sp.fatal is not None:
        sp = _replace(settings, pool_key)
    return sp


def _replace(settings: Settings, pool_key: tuple[str, bool]) -> SharedProducer:
    global _atexit_registered, _exit_flush_timeout
    with _pool_lock:
        sp = _pool.get(pool_key)
        if sp is not None and sp.fatal is not None:
            broken = sp
            sp = None
            threading.Thread(target=broken.close, args=(0,), daemon=True).start()
        if sp is None:
            config = settings.producers.config
            sp = _pool[pool_key] = SharedProducer(
                producer_entry(settings)[1], reports=pool_key[1],
                user_linger=any(k in config for k in ("linger.ms", "queue.buffering.max.ms")),
                summary_interval=settings.kafka.error_summary_interval)
            _exit_flush_timeout = settings.producers.flush_timeout
            if not _atexit_registered:
                atexit.register(_flush_at_exit)
                _atexit_registered = True
    return sp


def flush_all(timeout: float) -> int:
    """Flush every shared producer within ``timeout`` seconds in all (not each); the
    messages still undelivered."""
    with _pool_lock:
        producers = list(_pool.values())
    deadline = time.monotonic() + timeout
    return sum(int(sp.producer.flush(max(0.0, deadline - time.monotonic())))
               for sp in producers)


def close_all(timeout: float | None = None) -> int:
    """Flush and close every shared producer within ``timeout`` seconds in all (default: the
    last ``producers.flush_timeout``); the messages still undelivered."""
    timeout = _exit_flush_timeout if timeout is None else timeout
    with _pool_lock:
        producers = list(_pool.values())
        _pool.clear()
    deadline = time.monotonic() + timeout
    return sum(sp.close(max(0.0, deadline - time.monotonic())) for sp in producers)


class DeliveryWaiter:
    """The delivery reports of one synchronous call (called from the poll thread): the
    ``(message, error)`` failures and how many were ``delivered``; ``done`` is set once every
    message was reported."""

    __slots__ = ("_lock", "delivered", "done", "failures", "pending")

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.delivered = 0
        self.failures: list[tuple[Any, Any]] = []
        self.done = threading.Event()
        self._lock = threading.Lock()
        if not pending:
            self._finished()

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self.failures.append((msg, err))
            else:
                self.delivered += 1
            self.pending -= 1
            if self.pending <= 0:
                self._finished()

    def refused(self, n: int) -> None:
        """``n`` messages were never queued: no report will come for them."""
        if n:
            with self._lock:
                self.pending -= n
                if self.pending <= 0:
                    self._finished()

    def _finished(self) -> None:
        self.done.set()


class AsyncDeliveryWaiter(DeliveryWaiter):
    """A :class:`DeliveryWaiter` whose end also resolves an asyncio future, from the poll
    thread through ``loop.call_soon_threadsafe``: the event loop is woken once per call,
    not once per message."""

    __slots__ = ("future", "loop")

    def __init__(self, pending: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        super().__init__(pending)

    def _finished(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the awaiting coroutine may have been cancelled or timed out
        future.set_result(None)


def _async_backlog(settings: Settings, topic: str) -> SharedProducer | None:
    """The asynchronous producer when it holds messages that may be for ``topic``."""
    asp = _pool.get((producer_entry(settings)[2], False))
    if (asp is None or asp.fatal is not None or topic not in asp.async_topics
            or not len(asp.producer)):
        return None
    return asp


def _drain_async(settings: Settings, topic: str, timeout: float) -> None:
    """Messages published asynchronously before a synchronous call go to the broker first."""
    asp = _async_backlog(settings, topic)
    if asp is None:
        return
    remaining = int(asp.producer.flush(timeout))
    if remaining:
        last = asp.describe_last_error()
        raise PublishError(
            f"{remaining} message(s) published asynchronously earlier were not delivered "
            f"within {timeout}s, so the synchronous publish to {topic!r} was not sent (it "
            f"would overtake them; kafka.bootstrap_servers {asp.bootstrap!r}{last})", [])


def deliver(settings: Settings, topic: str, messages: Sequence[Message],
            timeout: float | None = None) -> None:
    """Send ``messages`` to ``topic`` and wait for the broker's acknowledgement of exactly
    these messages (other threads' traffic is not waited for); raises :class:`PublishError`
    naming the failures. Used by the ``kafka`` backend and for dead letters.

    Inside a Kafka transaction on the same cluster the messages are queued in it: the commit
    is their acknowledgement (a delivery failure fails it)."""
    if _transactions.OPEN.count and _in_transaction(settings, topic, messages):
        return
    timeout = settings.producers.sync_timeout if timeout is None else timeout
    sp = shared_producer(settings, reports=True)
    _drain_async(settings, topic, timeout)
    waiter = DeliveryWaiter(len(messages))
    refused = sp.produce_all(topic, messages, waiter)
    waiter.refused(len(refused))
    acknowledged = waiter.done.wait(timeout)
    if refused or waiter.failures or not acknowledged:
        _raise_failures(sp, topic, len(messages), refused, waiter, timeout)


async def adeliver(settings: Settings, topic: str, messages: Sequence[Message],
                   timeout: float | None = None) -> None:
    """:func:`deliver` from a coroutine: the delivery reports resolve a future of the
    running loop; what could block (an earlier asynchronous backlog to drain, a stuck
    producer's check) runs in a worker thread."""
    if _transactions.OPEN.count and _in_transaction(settings, topic, messages):
        return
    timeout = settings.producers.sync_timeout if timeout is None else timeout
    sp = shared_producer(settings, reports=True)
    if _async_backlog(settings, topic):
        await asyncio.to_thread(_drain_async, settings, topic, timeout)
    waiter = AsyncDeliveryWaiter(len(messages), asyncio.get_running_loop())
    refused = await sp.aproduce_all(topic, messages, waiter)
    waiter.refused(len(refused))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
    if refused or waiter.failures or not waiter.done.is_set():
        await asyncio.to_thread(_raise_failures, sp, topic, len(messages), refused, waiter,
                                timeout)


def _in_transaction(settings: Settings, topic: str, messages: Sequence[Message]) -> bool:
    """``messages`` queued in the context's open transaction on their cluster: True."""
    tx = _transactions.joining(settings)
    if tx is None:
        return False
    refused = tx.produce_all(topic, messages, None)
    if refused:
        raise PublishError(f"{len(refused)} of {len(messages)} message(s) to {topic!r} were "
                           f"refused by the client: {refused[0][1]}", list(refused),
                           failed=len(refused))
    return True


def _raise_failures(sp: SharedProducer, topic: str, n: int,
                    refused: list[tuple[Message, KafkaException | None]],
                    waiter: DeliveryWaiter, timeout: float) -> None:
    """The :class:`PublishError` of a delivery wait that did not end with every message
    acknowledged (may ask the broker whether the producer is stuck: blocking)."""
    if not waiter.done.is_set():
        sp.note_deliveries(waiter.delivered, waiter.failures)
        last = sp.describe_last_error()
        raise PublishError(
            f"{waiter.pending} of {n} message(s) to {topic!r} were not "
            f"acknowledged within {timeout}s (kafka.bootstrap_servers {sp.bootstrap!r}"
            f"{last})", list(refused) + list(waiter.failures), failed=n - waiter.delivered)
    failures: list[tuple[Any, Any]] = list(refused) + list(waiter.failures)
    if waiter.failures:
        sp.note_deliveries(waiter.delivered, waiter.failures)
    if failures:
        raise PublishError(
            f"{len(failures)} of {n} message(s) to {topic!r} were not "
            f"delivered: {failures[0][1]}", failures, failed=len(failures))
