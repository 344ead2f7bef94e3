"""The ``kafka`` (synchronous) and ``kafka_async`` producer backends, on confluent-kafka.

Both send through the shared producers of :mod:`deimos.kafka.producers`: ``sync`` calls wait
for the delivery reports of exactly their own messages (:func:`deimos.kafka.deliver`);
asynchronous calls return once librdkafka queued the messages, and a failure reaches the
producer's ``delivery_failed`` (``context.on_error``), the log and the ``publish_error``
metric. The per-message path looks nothing up: the producer and failure reporter of a
pipeline are kept on its produce context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from deimos.errors import PublishError
from deimos.hookspecs import hookimpl
from deimos.kafka import transactions
from deimos.kafka.config import producer_config
from deimos.kafka.producers import (
    SERVE_EVERY,
    SharedProducer,
    adeliver,
    close_all,
    deliver,
    flush_all,
    shared_producer,
)
from deimos.message import Message, ProduceContext

log = logging.getLogger("deimos.backends.kafka")

__all__ = ["KafkaAsyncBackend", "KafkaBackend", "deliver", "producer_config",
           "shared_producer"]


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


def _async_producer(context: ProduceContext) -> tuple[SharedProducer, _AsyncReporter]:
    """The asynchronous shared producer and the failure reporter of a produce context (a
    pipeline's), kept on the context so a per-message publish does not look them up; a
    producer replaced (fatal error) or closed since is looked up again."""
    hit = context.extra.get("kafka.async")
    if hit is None or hit[0].fatal is not None or hit[0].closed:
        reporter = hit[1] if hit is not None else _AsyncReporter(context)
        hit = context.extra["kafka.async"] = (shared_producer(context.settings), reporter)
        hit[0].async_topics.add(context.topic)  # before its first message: see deliver()
    return hit


#: what an aborted transaction's queued messages fail with: expected, not reported
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})


class _TransactionReporter(_AsyncReporter):
    """Reports a transaction's delivery failures, but not the purge of an aborted one's."""

    __slots__ = ()

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None and err.code() not in _PURGED:
            super().__call__(err, msg)


def _in_transaction(context: ProduceContext, messages: Sequence[Message]) -> bool:
    """Queue ``messages`` in the Kafka transaction open in this context, when one is open
    on the producer's cluster: True then (refusals raised as outside one).

    Whether the context's transaction is joined is decided once per transaction and
    producer context (kept on the context, as the asynchronous producer is), and a single
    message goes straight to ``produce``: a transactional consumer publishes per message."""
    open_tx = transactions.current()
    hit = context.extra.get("kafka.tx")
    if hit is None or hit[0] is not open_tx:
        reporter = hit[2] if hit is not None else _TransactionReporter(context)
        hit = context.extra["kafka.tx"] = (open_tx, transactions.joining(context.settings),
                                           reporter)
    tx, reporter = hit[1], hit[2]
    if tx is None or tx.ended:
        return False
    if len(messages) == 1 and messages[0].partition_key is None:
        m = messages[0]
        try:
            if m.headers is None:  # any keyword argument costs produce() ~0.4 µs
                tx.producer.sp.producer.produce(context.topic, m.encoded_payload,
                                                m.encoded_key, -1, reporter)
            else:
                tx.producer.sp.producer.produce(context.topic, m.encoded_payload,
                                                m.encoded_key, -1, reporter,
                                                headers=m.headers)  # type: ignore[arg-type]
            tx.queued += 1
            return True
        except (BufferError, KafkaException):
            pass  # a full queue or a refusal: the general path waits or reports
    _report_refused(context.topic, tx.produce_all(context.topic, messages, reporter), reporter)
    return True


#: the open-transaction count: a publish outside any transaction reads one attribute of it
_TX = transactions.OPEN


def _queue_one(context: ProduceContext, messages: Sequence[Message]
               ) -> tuple[SharedProducer, _AsyncReporter] | None:
    """A per-message asynchronous publish queued at once (no loop, no partition lookup):
    None. Otherwise (several messages, a partition key, a full queue or a refusal) the
    producer and reporter for the general path, which waits or reports."""
    hit = context.extra.get("kafka.async")
    if hit is None or hit[0].fatal is not None or hit[0].closed:
        hit = _async_producer(context)
    if len(messages) == 1 and messages[0].partition_key is None:
        m = messages[0]
        try:
            if m.headers is None:  # any keyword argument costs produce() ~0.4 µs
                hit[0].producer.produce(context.topic, m.encoded_payload, m.encoded_key, -1,
                                        hit[1])
            else:
                hit[0].producer.produce(context.topic, m.encoded_payload, m.encoded_key, -1,
                                        hit[1], headers=m.headers)  # type: ignore[arg-type]
            return None
        except (BufferError, KafkaException):
            pass
    return hit


class KafkaBackend:
    """Sends through librdkafka; ``sync`` decides whether a call waits for acknowledgement."""

    default_sync = True
    #: librdkafka batches by itself: a publish is handed over whole, so a synchronous one
    #: waits once for all its messages (not once per ``max_batch_size`` chunk)
    chunked = False

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        if _TX.count and _in_transaction(context, messages):
            return  # in a transaction: the commit is the acknowledgement
        if sync:
            deliver(context.settings, context.topic, messages)
            return
        hit = _queue_one(context, messages)
        if hit is not None:
            _report_refused(context.topic, hit[0].produce_all(context.topic, messages, hit[1]),
                            hit[1])

    @hookimpl
    async def deimos_backend_execute_async(self, context: ProduceContext,
                                           messages: Sequence[Message], sync: bool) -> None:
        """``apublish``: ``produce`` never blocks (a full local queue is awaited), so it runs
        on the event loop; ``sync`` awaits the delivery reports (:func:`adeliver`)."""
        if _TX.count and _in_transaction(context, messages):
            return
        if sync:
            await adeliver(context.settings, context.topic, messages)
            return
        hit = _queue_one(context, messages)
        if hit is not None:
            _report_refused(context.topic,
                            await hit[0].aproduce_all(context.topic, messages, hit[1]), hit[1])

    @hookimpl
    def deimos_backend_sender(self, context: ProduceContext) -> Callable[[Message], None]:
        """``publish()``'s path: one ``produce`` call, falling back to the general path
        when librdkafka's queue is full or refuses the message (it waits or reports)."""
        topic = context.topic
        tx = _TX
        # the shared producer in use, its bound produce and the failure reporter: closure
        # cells (the fastest reads), refreshed when that producer is replaced or closed
        sp: SharedProducer | None = None
        produce: Any = None
        reporter: Any = None
        #: messages since this thread last served the callbacks (SharedProducer.serve); a
        #: count shared by the threads that use this sender, approximate by design
        unserved = 0

        def send(m: Message) -> None:
            nonlocal sp, produce, reporter, unserved
            if tx.count and _in_transaction(context, (m,)):
                return
            if sp is None or sp.fatal is not None or sp.closed:
                sp, reporter = _async_producer(context)
                produce = sp.producer.produce
            try:
                if m.headers is None:
                    produce(topic, m.encoded_payload, m.encoded_key, -1, reporter)
                else:
                    produce(topic, m.encoded_payload, m.encoded_key, -1, reporter,
                            headers=m.headers)
            except (BufferError, KafkaException):  # full or refused: the general path
                _report_refused(topic, sp.produce_all(topic, (m,), reporter), reporter)
                return
            unserved += 1
            if unserved >= SERVE_EVERY:
                unserved = 0
                sp.serve()

        return send

    @hookimpl
    def deimos_backend_async_sender(self, context: ProduceContext
                                    ) -> Callable[[Message], bool]:
        """``apublish()``'s path: one ``produce`` call on the event loop's thread (it never
        blocks). Everything that may wait or report (a full queue, a refusal, an open
        transaction) is left to :meth:`deimos_backend_execute_async`: False."""
        topic = context.topic
        state: list[Any] = [None, None]  # the shared producer in use, its bound produce
        tx = _TX

        def send(m: Message) -> bool:
            if tx.count:
                return False
            hit = context.extra.get("kafka.async")
            if hit is None or hit[0].fatal is not None or hit[0].closed:
                hit = _async_producer(context)
            if hit[0] is not state[0]:
                state[0], state[1] = hit[0], hit[0].producer.produce
            try:
                if m.headers is None:  # any keyword argument costs produce() ~0.4 µs
                    state[1](topic, m.encoded_payload, m.encoded_key, -1, hit[1])
                else:
                    state[1](topic, m.encoded_payload, m.encoded_key, -1, hit[1],
                             headers=m.headers)
            except (BufferError, KafkaException):
                return False
            return True

        return send

    @hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return flush_all(timeout)

    @hookimpl
    def deimos_backend_close(self) -> None:
        transactions.close_all()  # deimos.transaction()'s producers: nothing open is kept
        close_all()  # within producers.flush_timeout, for all producers together


class KafkaAsyncBackend(KafkaBackend):
    """``kafka`` that returns at once by default; failures reach ``on_error``, the log and the
    ``publish_error`` metric."""

    default_sync = False


def _report_refused(topic: str, refused: list[Any], reporter: _AsyncReporter) -> None:
    """Messages the client refused to queue: reported as failed deliveries are, then raised
    (the caller learns of them at once, not only through ``delivery_failed``)."""
    if not refused:
        return
    for m, error in refused:
        reporter(error.args[0] if error is not None and error.args
                 else KafkaError(KafkaError._FAIL), _RefusedMsg(topic, m))
    raise PublishError(
        f"{len(refused)} message(s) to {topic!r} were refused by the client: "
        f"{refused[0][1]}", refused, failed=len(refused), reported=True)


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
