"""The inbox: which messages a consumer has applied, kept in ``deimos_inbox`` in the same
transaction as what applying them wrote, so a redelivered message is skipped.

Two users share the statements here: the record consumer (``RecordConsumer.inbox``), which
records the offsets inside its own bulk transactions, and :class:`DbInbox`, what any consumer
with ``inbox = true`` gets through the ``deimos_consumer_inbox`` hook: each handler call (a
message, or a batch of a batch consumer) runs in one ``Session`` transaction, bound with
:func:`deimos_db.transaction` so that the handler's writes (:func:`deimos_db.session`) and
the outbox rows of its ``publish`` calls through the ``db`` backend commit with the inbox row,
or not at all. The consumer commits the Kafka offset only after the call returned, i.e. after
the database commit; a crash between the two redelivers messages the inbox then skips.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from deimos import events
from deimos.config import ConsumerSettings, get_settings
from deimos.consumer import BatchError, BatchMetadata, Metadata
from deimos.consumer.inbox import Consume, ConsumeBatch
from deimos.errors import ConfigError
from deimos.runtime import get_runtime

from .deadlock import DEFAULT_BACKOFF, DEFAULT_RETRIES, retry_transaction
from .engine import begin_now, database_engine, transaction, utcnow
from .models import deimos_inbox

log = logging.getLogger("deimos_db.inbox")

_I = deimos_inbox.c

#: the producer backends that write into the caller's transaction (this plugin's)
OUTBOX_BACKENDS = frozenset({"db", "outbox"})


def applied(conn: sa.Connection, consumer: str, topic: str, partition: int,
            offsets: Sequence[int]) -> set[int]:
    """The offsets among ``offsets`` that ``consumer`` has applied already."""
    if not offsets:
        return set()
    rows = conn.execute(sa.select(_I.offset).where(
        _I.consumer == consumer, _I.topic == topic, _I.partition == partition,
        _I.offset.between(min(offsets), max(offsets))))
    wanted = set(offsets)
    return {o for (o,) in rows if int(o) in wanted}


def record(conn: sa.Connection, consumer: str, topic: str, partition: int,
           offsets: Sequence[int]) -> None:
    """Record ``offsets`` as applied by ``consumer``, in ``conn``'s transaction (a second
    writer of the same message fails on the unique key: its transaction rolls back)."""
    if offsets:
        now = utcnow()
        conn.execute(deimos_inbox.insert(), [
            {"consumer": consumer, "topic": topic, "partition": partition, "offset": o,
             "consumed_at": now} for o in offsets])


def prune_inbox(engine: sa.Engine, older_than: _dt.timedelta) -> int:
    """Delete inbox rows older than ``older_than`` (keep longer than any redelivery window:
    the topic's retention is safe); the number deleted."""
    with engine.begin() as conn:
        result = conn.execute(deimos_inbox.delete().where(
            _I.consumed_at < utcnow() - older_than))
        return int(result.rowcount or 0)


def inbox_name(handler: Any, settings: ConsumerSettings | None = None) -> str:
    """A consumer's name in ``deimos_inbox``: its ``inbox_name``, else its group, else its
    class name (a group's members share one inbox: any of them may get a redelivery)."""
    group = settings.group_id if settings is not None else None
    return (getattr(handler, "inbox_name", None) or group
            or getattr(handler, "group_id", None) or type(handler).__name__)


class PassThrough:
    """The inbox of a record consumer: it records offsets inside its own transactions, at
    the grain of its rows, so its calls are not wrapped again."""

    def wrap_consume(self, consume: Consume) -> Consume:
        return consume

    def wrap_consume_batch(self, consume_batch: ConsumeBatch) -> ConsumeBatch:
        return consume_batch


class DbInbox:
    """``inbox = true`` for a ``Consumer`` (a transaction per message) or a ``BatchConsumer``
    (a transaction per batch call) on ``database_url`` (class attribute) or ``db.url``.

    A transaction that hits a deadlock or lock timeout runs again (the handler too: its
    writes were rolled back), ``deadlock_retries`` times; a lost database connection becomes
    a :class:`deimos.errors.TransientError`, so the consumer waits instead of dead-lettering.
    """

    def __init__(self, handler: Any, settings: ConsumerSettings) -> None:
        if getattr(handler, "_is_async", False):
            raise ConfigError([(f"consumers.{settings.name}.inbox",
                                "an asyncio consumer cannot have an inbox yet: use a "
                                "Consumer or BatchConsumer (docs/exactly-once.md)")])
        self.name = inbox_name(handler, settings)
        self.label = type(handler).__name__
        self.retries = int(getattr(handler, "deadlock_retries", DEFAULT_RETRIES))
        self.backoff = float(getattr(handler, "deadlock_backoff", DEFAULT_BACKOFF))
        self._url: str | None = getattr(handler, "database_url", None)
        self._engine: sa.Engine | None = None
        backend = get_settings().producers.backend
        if backend not in OUTBOX_BACKENDS:
            log.warning(
                "%s has inbox = true but producers.backend is %r: what its handler publishes "
                "is sent at once, outside the message's transaction (again when the handler "
                "is retried); publish through the db backend for exactly-once messages",
                self.label, backend)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = database_engine(self._url)
        return self._engine

    def _committed(self, topic: str, partition: int, offsets: list[int]) -> None:
        emit = get_runtime().events.emitter(events.INBOX_COMMITTED)
        if emit is not None:
            emit({"consumer": self.name, "topic": topic, "partition": partition,
                  "offsets": offsets})

    def wrap_consume(self, consume: Consume) -> Consume:
        name = self.name

        def consume_in_transaction(payload: Any, metadata: Metadata) -> None:
            topic, partition, offset = metadata.topic, metadata.partition, metadata.offset

            def attempt() -> bool:
                with Session(self.engine) as session, session.begin(), transaction(session):
                    conn = session.connection()
                    begin_now(conn)  # a handler's savepoints stay inside it on SQLite
                    if applied(conn, name, topic, partition, [offset]):
                        return False
                    consume(payload, metadata)
                    session.flush()
                    record(conn, name, topic, partition, [offset])
                return True

            if retry_transaction(attempt, retries=self.retries, backoff=self.backoff,
                                 name=self.label):
                self._committed(topic, partition, [offset])
            else:
                log.info("%s: %s[%d]@%d is in the inbox already: skipped", self.label, topic,
                         partition, offset)

        return consume_in_transaction

    def wrap_consume_batch(self, consume_batch: ConsumeBatch) -> ConsumeBatch:
        name = self.name

        def consume_batch_in_transaction(payloads: list[Any], metadata: BatchMetadata
                                         ) -> None:
            topic, partition = metadata.topic, metadata.partition
            offsets = metadata.offsets

            def attempt() -> list[int]:
                with Session(self.engine) as session, session.begin(), transaction(session):
                    conn = session.connection()
                    begin_now(conn)  # a handler's savepoints stay inside it on SQLite
                    done = applied(conn, name, topic, partition, offsets)
                    keep = [i for i, o in enumerate(offsets) if o not in done]
                    if not keep:
                        return []
                    if len(keep) == len(offsets):
                        todo, md = payloads, metadata
                    else:
                        msgs, keys = metadata.messages, metadata.keys
                        todo = [payloads[i] for i in keep]
                        md = BatchMetadata([msgs[i] for i in keep], [keys[i] for i in keep],
                                           topic, partition)
                    try:
                        consume_batch(todo, md)
                        session.flush()
                    except BatchError as exc:
                        # the whole transaction rolls back: nothing before the failed
                        # message committed, so the batch fails from its first new message
                        raise BatchError(keep[0], exc.cause) from exc
                    except Exception as exc:
                        if keep[0] == 0:
                            raise
                        raise BatchError(keep[0], exc) from exc
                    wrote = [offsets[i] for i in keep]
                    record(conn, name, topic, partition, wrote)
                return wrote

            wrote = retry_transaction(attempt, retries=self.retries, backoff=self.backoff,
                                      name=self.label)
            if wrote:
                self._committed(topic, partition, wrote)
            if len(wrote) < len(offsets):
                log.info("%s: %d message(s) of %s[%d] are in the inbox already: skipped",
                         self.label, len(offsets) - len(wrote), topic, partition)

        return consume_batch_in_transaction


def consumer_inbox(handler: Any, settings: ConsumerSettings) -> DbInbox | PassThrough:
    """What the ``deimos_consumer_inbox`` hook answers for a consumer with ``inbox =
    true``."""
    from .record_consumer import RecordConsumer

    if isinstance(handler, RecordConsumer):
        handler.inbox = True  # type: ignore[misc]  # the setting may come from [[consumers]], not the class
        return PassThrough()
    return DbInbox(handler, settings)
