"""Kafka transactions: a transactional producer per ``transactional.id``, and the transaction
open in the current context, which the ``kafka`` backends' publishes join.

A transaction is bound to a :mod:`contextvars` context, not to a producer class: whatever a
handler (or a ``with deimos.transaction():`` block) publishes through the ``kafka`` backends
to the transaction's cluster goes through its producer, in any thread or coroutine that
inherited the context; messages for another cluster go the usual way (a transaction cannot
span clusters). :data:`OPEN` counts the transactions open in the process, so a publish
outside any transaction pays one attribute read for all this.

librdkafka's errors are sorted as its transactional API documents: a *retriable* error
(a timeout) retries the call, an *abortable* one aborts the transaction
(:class:`TransactionAborted`: its work may be done again in a new one), a *fatal* one (fenced
by a newer instance with the same ``transactional.id``) ends the producer
(:class:`TransactionFenced`, a :class:`~deimos.errors.FatalError`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from deimos.errors import ConfigError, DeimosError, FatalError
from deimos.kafka.config import producer_entry

if TYPE_CHECKING:
    from deimos.config import Settings
    from deimos.kafka.producers import SharedProducer
    from deimos.message import Message

log = logging.getLogger("deimos.kafka")


class TransactionAborted(DeimosError):
    """The transaction was aborted (an abortable error of librdkafka's): nothing it held
    became visible; its work may be done again in a new transaction."""


class TransactionFenced(FatalError):
    """The transactional producer cannot go on: fenced by another instance with the same
    ``transactional.id``, or another fatal error. Nothing of its open transaction commits."""

    def __init__(self, message: str, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        super().__init__(message)


#: what a producer fenced by a newer instance with its transactional.id is told
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                          KafkaError.INVALID_PRODUCER_EPOCH})


class _Open:
    """How many transactions are open in this process (the publish path's one check)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


OPEN = _Open()
_count_lock = threading.Lock()
_current: ContextVar[Transaction | None] = ContextVar("deimos_kafka_transaction", default=None)


def current() -> Transaction | None:
    """The transaction open in this context, if any."""
    return _current.get() if OPEN.count else None


def joining(settings: Settings) -> Transaction | None:
    """The open transaction a publish with ``settings`` (its producer's view: cluster,
    properties) joins: the context's, when it is on the same cluster."""
    tx = _current.get()
    if tx is None or tx.ended:
        return None
    if producer_entry(settings)[1]["bootstrap.servers"] != tx.producer.bootstrap:
        return None
    return tx


class Transaction:
    """One open transaction of a :class:`TransactionalProducer`."""

    __slots__ = ("_token", "ended", "producer", "queued")

    def __init__(self, producer: TransactionalProducer) -> None:
        self.producer = producer
        self.ended = False
        #: messages queued in this transaction so far
        self.queued = 0
        self._token: Token[Transaction | None] | None = None

    def produce_all(self, topic: str, messages: Sequence[Message], callback: Any
                    ) -> list[tuple[Message, KafkaException | None]]:
        """Queue ``messages`` in the transaction; the refused ones (as
        :meth:`SharedProducer.produce_all`). Delivery failures fail the commit."""
        self.queued += len(messages)
        return self.producer.sp.produce_all(topic, messages, callback)

    def _enter(self) -> None:
        self._token = _current.set(self)
        with _count_lock:
            OPEN.count += 1

    def _exit(self) -> None:
        if self.ended:
            return
        self.ended = True
        with _count_lock:
            OPEN.count -= 1
        if self._token is not None:
            with contextlib.suppress(ValueError):  # reset from another context
                _current.reset(self._token)
            self._token = None


class TransactionalProducer:
    """A librdkafka producer with a ``transactional.id``, initialised (fencing older
    instances with the same id, aborting what they left open), one transaction at a time."""

    def __init__(self, settings: Settings, transactional_id: str,
                 timeout: float | None = None) -> None:
        from deimos.kafka.producers import SharedProducer

        self.transactional_id = transactional_id
        self.timeout = settings.producers.sync_timeout if timeout is None else timeout
        conf = dict(producer_entry(settings)[1])
        conf.update({"transactional.id": transactional_id, "enable.idempotence": True})
        if not any(k in settings.producers.config for k in ("linger.ms",
                                                            "queue.buffering.max.ms")):
            # the commit waits for every message of the transaction, and librdkafka's
            # commit does not cut the linger short: sent at once, they are acknowledged
            # while the handler goes on (measured: a batch of 500 committed in 2.3 ms
            # instead of 11 ms on the embedded broker)
            conf["linger.ms"] = 0
        producer = self

        class _Transactional(SharedProducer):
            def _on_error(self, err: KafkaError) -> None:
                self._note_error(err)
                if err.fatal():
                    self.fatal = err
                    log.error("transactional producer %r: fatal error: %s",
                              producer.transactional_id, err)
                else:
                    log.warning("transactional producer %r: %s",
                                producer.transactional_id, err)

        self.sp: SharedProducer = _Transactional(
            conf, summary_interval=settings.kafka.error_summary_interval)
        self.bootstrap = self.sp.bootstrap
        self.open: Transaction | None = None
        try:
            self._call("init_transactions", self.sp.producer.init_transactions)
        except BaseException:
            self.sp.close(0)
            raise

    def __repr__(self) -> str:
        return f"transactional producer {self.transactional_id!r}"

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A transactional API call, retried while librdkafka says it is retriable (within
        the timeout); abortable errors raise :class:`TransactionAborted` (the caller aborts),
        fatal ones :class:`TransactionFenced`."""
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                return fn(*args, remaining)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError):
                    raise
                if err.fatal() or self.sp.fatal is not None or err.code() in FENCED_CODES:
                    # a fencing error can come as abortable first (the offsets' commit
                    # refused): the producer is done all the same
                    raise self.fenced(what, err) from None
                if err.retriable() and time.monotonic() < deadline:
                    continue
                if err.txn_requires_abort():
                    raise TransactionAborted(
                        f"{self}: {what} failed, the transaction must be aborted: {err}"
                    ) from None
                raise DeimosError(f"{self}: {what} failed: {err}") from None

    def fenced(self, what: str, err: Any) -> TransactionFenced:
        """The error of a producer that cannot go on."""
        fenced = getattr(err, "code", lambda: None)() in FENCED_CODES
        why = ("fenced by another instance with the same transactional.id (another process "
               "running this consumer with the same transactional_id, or a newer one)"
               if fenced else "a fatal error")
        return TransactionFenced(f"{self}: {what}: {why}: {err}", self.transactional_id)

    def begin(self) -> Transaction:
        """Begin a transaction, open in the calling context until it commits or aborts."""
        if self.sp.fatal is not None:
            raise self.fenced("begin_transaction", self.sp.fatal)
        try:
            self.sp.producer.begin_transaction()
        except KafkaException as exc:
            raise self.fenced("begin_transaction", exc.args[0]) from None
        tx = self.open = Transaction(self)
        tx._enter()
        return tx

    def commit(self, offsets: Sequence[TopicPartition] = (), group_metadata: Any = None
               ) -> None:
        """Commit the open transaction, with consumed ``offsets`` of the group whose
        ``group_metadata`` is given (KIP-447: the group's generation fences zombie consumers).
        An abortable error aborts it and raises :class:`TransactionAborted`."""
        tx = self.open
        if tx is None:
            raise DeimosError(f"{self}: no transaction is open")
        tx._exit()
        try:
            if offsets:
                self._call("send_offsets_to_transaction",
                           self.sp.producer.send_offsets_to_transaction, list(offsets),
                           group_metadata)
            self._call("commit_transaction", self.sp.producer.commit_transaction)
        except TransactionAborted:
            self._abort()
            raise
        finally:
            self.open = None

    def abort(self) -> None:
        """Abort the open transaction (nothing it holds becomes visible)."""
        tx = self.open
        if tx is None:
            return
        tx._exit()
        try:
            self._abort()
        finally:
            self.open = None

    def _abort(self) -> None:
        if self.sp.fatal is not None:
            raise self.fenced("abort_transaction", self.sp.fatal)
        self._call("abort_transaction", self.sp.producer.abort_transaction)

    def close(self, timeout: float = 5.0) -> None:
        """Abort what is open (when the producer still can) and close the producer."""
        if self.open is not None:
            with contextlib.suppress(DeimosError):
                self.abort()
        self.sp.close(timeout)


# ---------------------------------------------------------------------------------------------
# deimos.transaction(): plain publishing in a transaction
# ---------------------------------------------------------------------------------------------

_plain_lock = threading.Lock()
_plain: dict[tuple[str, str], TransactionalProducer] = {}


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Everything published inside the block through the ``kafka`` backends to the default
    cluster commits in one Kafka transaction on exit, or is aborted if the block raises (the
    exception propagates). Uses ``producers.transactional_id``; one block at a time per
    process (a second thread waits), not nested, not inside a transactional consumer."""
    from deimos.runtime import get_runtime

    settings = get_runtime().settings
    tid = settings.producers.transactional_id
    if not tid:
        raise ConfigError([("producers.transactional_id", (
            "deimos.transaction() needs a transactional.id: set producers.transactional_id, "
            "unique per running process"))])
    if current() is not None:
        raise DeimosError("deimos.transaction(): a Kafka transaction is already open here "
                          "(blocks do not nest; a transactional consumer's handler is in "
                          "its batch's transaction already)")
    key = (tid, str(producer_entry(settings)[2]))
    with _plain_lock:
        tp = _plain.get(key)
        if tp is None or tp.sp.fatal is not None:
            if tp is not None:
                tp.close(0)
            tp = _plain[key] = TransactionalProducer(settings, tid)
        tx = tp.begin()
        try:
            yield tx
        except BaseException:
            try:
                tp.abort()
            except TransactionFenced:
                _plain.pop(key, None)
                raise
            raise
        else:
            try:
                tp.commit()
            except TransactionFenced:
                _plain.pop(key, None)
                raise
        finally:
            tx._exit()


def close_all(timeout: float = 5.0) -> None:
    """Close the producers of :func:`transaction` (aborting what is open)."""
    with _plain_lock:
        producers = list(_plain.values())
        _plain.clear()
    for tp in producers:
        tp.close(timeout)
