"""Record consumers: a :class:`deimos.BatchConsumer` that writes messages into a SQLAlchemy
model's table (Ruby Deimos's ``ActiveRecordConsumer``).

**Batch mode** (``bulk_import = True``, the default): per batch of one topic-partition,
``should_consume`` filters, ``pre_process`` may rewrite, then the messages are *compacted*
(the last message per key) or, with ``compacted = False``, cut into key-distinct slices (the
n-th message of every key goes in slice n, so a key's messages apply in order). Each slice is
one native bulk upsert (PostgreSQL/SQLite ``INSERT .. ON CONFLICT DO UPDATE``, MySQL/MariaDB
``INSERT .. ON DUPLICATE KEY UPDATE``) in chunks of ``max_db_batch_size``, plus one bulk
``DELETE`` for the tombstones; the whole batch is one transaction, retried with backoff on a
deadlock or lock timeout.

When the bulk write fails otherwise (a row breaks a constraint), the batch is written again
row by row, each row in a savepoint: every good row is committed, every failed message is
logged with its offset, key and error, and the first one is raised as
:class:`deimos.consumer.BatchError`, so the consumer's error policy (retries, then
``on_error``: ``raise``, ``dead_letter`` or ``skip``) applies to exactly the failed messages
and one bad record neither loses nor blocks the rest.

**Per-message mode** (``bulk_import = False``): ``process_message``, ``fetch_record``,
``assign_key``, ``record_attributes`` and ``save_record`` per message (``delete_record`` for
a tombstone), one transaction per message.

**Tombstones** delete what :meth:`RecordConsumer.deleted_query` says (the rows of their key
columns by default). ``truncate_columns = True`` cuts strings to their column's length.
``batch_message_fallback = False`` fails a batch whose bulk write failed instead of writing it
row by row. A payload may carry rows of the model's relationships, written in the same
transaction (:mod:`deimos_db.associations`, batch mode).

**Inbox** (``inbox = True``): the (consumer, topic, partition, offset) of every applied
message is written to ``deimos_inbox`` (:mod:`deimos_db.inbox`) in the same transaction as
the rows, and messages already there are skipped, so a redelivered message is never applied
twice. Every transaction is bound with :func:`deimos_db.transaction`, so a hook that
publishes through the ``db`` backend (``post_process_batch``, ``save_record`` ...) writes its
outbox rows in it too: rows, inbox rows and outbox rows commit together.
"""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from deimos import events
from deimos.consumer import BatchConsumer, BatchError, BatchMetadata
from deimos.errors import TransientError
from deimos.producer import _to_dict
from deimos.runtime import get_runtime

from .associations import Writer, associations_of
from .deadlock import describe, is_disconnect, is_retryable, retry_transaction
from .engine import begin_now, database_engine, transaction
from .inbox import applied, inbox_name, prune_inbox, record
from .records import (
    Stamps,
    column_attrs,
    converter_for,
    primary_key_names,
    string_limits,
    table_of,
    truncate_strings,
)
from .upserts import Statements, execute_upserts

log = logging.getLogger("deimos_db.record_consumer")

__all__ = ["FailedMessage", "RecordConsumer", "RecordMessage", "prune_inbox"]

class RecordMessage:
    """One message as the record consumer's hooks see it.

    ``payload``: the decoded payload as a dict (None for a tombstone); ``key``: the decoded
    key; ``index``: its position in the batch handed to ``consume_batch`` (what
    ``BatchError`` reports); ``offset``; ``key_values``: the key columns' values
    (:meth:`RecordConsumer.record_key`). A plain class with slots: one is made per message.
    """

    __slots__ = ("index", "key", "key_values", "offset", "payload", "row")

    def __init__(self, payload: dict[str, Any] | None, key: Any, index: int, offset: int,
                 key_values: dict[str, Any] | None = None) -> None:
        self.payload = payload
        self.key = key
        self.index = index
        self.offset = offset
        self.key_values: dict[str, Any] = key_values if key_values is not None else {}
        #: the row to upsert when already built (the default hooks' fast path)
        self.row: dict[str, Any] | None = None

    @property
    def tombstone(self) -> bool:
        return self.payload is None

    def __repr__(self) -> str:
        return (f"RecordMessage(index={self.index}, offset={self.offset}, key={self.key!r}, "
                f"payload={self.payload!r})")


@dataclass
class FailedMessage:
    """A message the row-by-row fallback could not write."""

    index: int
    offset: int
    key: Any
    error: BaseException


class RecordConsumer(BatchConsumer):
    """Consume a topic into the table of :attr:`model` (a mapped class or a ``Table``)."""

    model: ClassVar[Any]
    #: batch mode (bulk upserts); False: the per-message hooks, a transaction per message
    bulk_import: ClassVar[bool] = True
    #: keep only the last message per key of a batch
    compacted: ClassVar[bool] = True
    #: the columns identifying a row (default: the primary key); they need a unique index
    key_columns: ClassVar[Sequence[str] | None] = None
    #: the columns written (default: every column); key columns are always written
    columns: ClassVar[Sequence[str] | None] = None
    #: rows per upsert statement (default: the whole slice)
    max_db_batch_size: ClassVar[int | None] = None
    #: retries of a transaction that hit a deadlock or lock timeout
    deadlock_retries: ClassVar[int] = 3
    deadlock_backoff: ClassVar[float] = 0.05
    #: record applied offsets in ``deimos_inbox`` and skip redelivered ones
    inbox: ClassVar[bool] = False
    #: the consumer's name in ``deimos_inbox`` (default: group_id, else the class name)
    inbox_name: ClassVar[str | None] = None
    #: the database (default: ``db.url``)
    database_url: ClassVar[str | None] = None
    #: when a batch's bulk write fails, write it again row by row so the good rows land and
    #: only the bad messages fail; False fails the whole batch with the bulk error (the
    #: consumer's error policy then retries it, and finds the bad message one at a time)
    batch_message_fallback: ClassVar[bool] = True
    #: cut strings longer than their column to the column's length instead of failing
    truncate_columns: ClassVar[bool] = False
    #: multi-table records (:mod:`deimos_db.associations`): the column of a related table
    #: stamped with a generated id, to read back the rows' own ids and to find the children
    #: a batch replaced
    bulk_import_id_column: ClassVar[str | None] = "bulk_import_id"
    #: the children of a parent whose payload carries them become exactly those given;
    #: False merges them into the existing ones
    replace_associations: ClassVar[bool] = True
    #: relationship name -> the related table's key columns to upsert on (default: its
    #: primary key)
    association_keys: ClassVar[Mapping[str, Sequence[str]]] = {}

    @staticmethod
    def bulk_import_id_generator() -> str:
        """A fresh ``bulk_import_id_column`` value (Ruby's ``bulk_import_id_generator``)."""
        return str(uuid.uuid4())

    def __init__(self) -> None:
        self.table = table_of(self.model)
        self.key_cols = list(self.key_columns or primary_key_names(self.model))
        cols = self.table.c
        wanted = list(self.columns) if self.columns else [c.name for c in cols]
        self.write_cols = list(dict.fromkeys([*self.key_cols, *wanted]))
        self._converters: dict[str, Callable[[Any], Any]] = {
            c.name: conv for c in cols if (conv := converter_for(c)) is not None}
        self._converter_items = list(self._converters.items())
        self._key_casts: dict[str, Callable[[Any], Any]] = {}
        for name in self.key_cols:
            try:
                py = cols[name].type.python_type
            except NotImplementedError:
                continue
            if py is int:
                self._key_casts[name] = lambda v: int(v) if isinstance(v, (str, bytes)) else v
        self._stamp = Stamps(self.table, self.key_cols)
        self._has_created = "created_at" in self._stamp.names
        self._has_updated = "updated_at" in self._stamp.names
        self._limits = ({c: n for c, n in string_limits(self.table).items()
                         if c in self.write_cols} if self.truncate_columns else {})
        self._statements = Statements(self.table, self.key_cols)
        associations = associations_of(self, self.model)
        #: writes the associations a batch's payloads carry; None when the model has none
        self._writer = Writer(type(self).__name__, associations) if associations else None
        cls = type(self)
        #: default hooks and one key column: rows are built in one loop
        self._fast = self.bulk_import and len(self.key_cols) == 1 and all(
            getattr(cls, h) is getattr(RecordConsumer, h)
            for h in ("record_key", "record_attributes", "should_consume", "pre_process"))
        self._engine: sa.Engine | None = None
        #: the messages the last batch's row-by-row fallback could not write
        self.failures: list[FailedMessage] = []

    # -- the database -----------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = database_engine(self.database_url)
        return self._engine

    # -- hooks (both modes) -----------------------------------------------------------------

    def record_key(self, key: Any, payload: Mapping[str, Any] | None) -> dict[str, Any]:
        """The key columns' values of a message: from a schema key (a dict), a plain key (one
        key column), else from the payload."""
        if isinstance(key, Mapping):
            values = {c: key.get(c) for c in self.key_cols}
        elif key is not None and len(self.key_cols) == 1 and not (
                isinstance(key, bytes) and payload is not None):
            if isinstance(key, bytes):
                key = key.decode()
            values = {self.key_cols[0]: key}
        elif payload is not None:
            values = {c: payload.get(c) for c in self.key_cols}
        else:
            values = {}
        for name, cast in self._key_casts.items():
            if name in values:
                values[name] = cast(values[name])
        return self._convert(values)

    def record_attributes(self, payload: Mapping[str, Any], key: Any) -> dict[str, Any]:
        """Column values of a row from a payload: the schema fields that are also written
        columns, converted for the column (epoch millis or ISO text to ``datetime`` ...)."""
        values = {c: payload[c] for c in self.write_cols if c in payload}
        return self._convert(values)

    def _convert(self, values: dict[str, Any]) -> dict[str, Any]:
        for name, fn in self._converter_items:
            v = values.get(name)
            if v is not None:
                values[name] = fn(v)
        return values

    # -- hooks (batch mode) -----------------------------------------------------------------

    def should_consume(self, message: RecordMessage) -> bool:
        """False drops the message (it counts as handled)."""
        return True

    def pre_process(self, messages: list[RecordMessage]) -> list[RecordMessage]:
        """Rewrite, add or drop messages before they are written (after ``should_consume``)."""
        return messages

    def post_process_batch(self, conn: sa.Connection, upserted: list[RecordMessage],
                           deleted: list[RecordMessage]) -> None:
        """Called in the batch's transaction after its writes (e.g. for dependent tables);
        raising rolls the batch back."""

    def deleted_query(self, messages: list[RecordMessage]) -> sa.Executable:
        """The statement a group of tombstones (at most 1000) runs in the batch's
        transaction (Ruby Deimos's ``deleted_query``): by default a ``DELETE`` of the rows
        with their key columns' values (``message.key_values``). Override to delete more
        (rows matching another column too) or something else (an ``UPDATE`` for a soft
        delete)."""
        t = self.table
        keys = [tuple(m.key_values.get(c) for c in self.key_cols) for m in messages]
        if len(self.key_cols) == 1:
            return t.delete().where(t.c[self.key_cols[0]].in_([k[0] for k in keys]))
        return t.delete().where(sa.tuple_(*[t.c[c] for c in self.key_cols]).in_(keys))

    # -- hooks (per-message mode) -----------------------------------------------------------

    def process_message(self, payload: Any, key: Any) -> bool:
        """False skips the message (Ruby Deimos's ``process_message?``)."""
        return True

    def fetch_record(self, session: Session, payload: Mapping[str, Any], key: Any) -> Any:
        """The existing row for a message, or None to create one."""
        kv = self.record_key(key, payload)
        if set(kv) == set(primary_key_names(self.model)) and not isinstance(
                self.model, sa.Table):
            return session.get(self.model, tuple(kv[c] for c in primary_key_names(self.model)))
        attrs = column_attrs(self.model)
        return session.scalars(sa.select(self.model).filter_by(
            **{attrs.get(k, k): v for k, v in kv.items()})).first()

    def assign_key(self, record: Any, payload: Mapping[str, Any], key: Any) -> None:
        """Set the key columns of a new row."""
        attrs = column_attrs(self.model)
        for col, value in self.record_key(key, payload).items():
            setattr(record, attrs.get(col, col), value)

    def delete_record(self, session: Session, key: Any) -> None:
        """Delete the row of a tombstone's key (by default :meth:`deleted_query`)."""
        session.execute(self.deleted_query(
            [RecordMessage(None, key, 0, -1, self.record_key(key, None))]))

    def save_record(self, session: Session, record: Any) -> None:
        session.add(record)

    # -- consuming --------------------------------------------------------------------------

    def consume_batch(self, payloads: list[Any], metadata: BatchMetadata) -> None:
        keys = metadata.keys
        offsets = metadata.offsets
        self.failures = []
        if self._fast:
            messages = self._fast_messages(payloads, keys, offsets)
        else:
            messages = [RecordMessage(None if p is None else _to_dict(p), keys[i], i, offsets[i])
                        for i, p in enumerate(payloads)]
        if self.bulk_import:
            self._consume_bulk(messages, metadata)
        else:
            self._consume_each(messages, metadata)

    def _fast_messages(self, payloads: list[Any], keys: list[Any], offsets: list[int]
                       ) -> list[RecordMessage]:
        """The default hooks inlined: the same rows and key values as ``record_key`` and
        ``record_attributes`` give, built in one loop (most of a batch's Python time)."""
        kc = self.key_cols[0]
        cast = self._key_casts.get(kc)
        kconv = self._converters.get(kc)
        cols = self.write_cols
        colset = frozenset(cols)
        convs = self._converter_items
        out = []
        for i, p in enumerate(payloads):
            k = keys[i]
            if p is None:
                m = RecordMessage(None, k, i, offsets[i], self.record_key(k, None))
            else:
                if type(p) is not dict:
                    p = _to_dict(p)
                # a payload of columns only is copied in C; otherwise keep the columns
                row = p.copy() if p.keys() <= colset else {c: p[c] for c in cols if c in p}
                tk = type(k)
                if tk is int or tk is str:
                    row[kc] = k
                elif isinstance(k, Mapping):
                    row[kc] = k.get(kc)
                elif k is not None and not isinstance(k, bytes):
                    row[kc] = k
                elif isinstance(k, bytes) and kc not in row:
                    row[kc] = k.decode()
                if cast is not None:
                    row[kc] = cast(row.get(kc))
                for name, fn in convs:
                    v = row.get(name)
                    if v is not None:
                        row[name] = fn(v)
                if kconv is not None and kc not in self.write_cols:
                    row[kc] = kconv(row[kc])
                m = RecordMessage(p, k, i, offsets[i], {kc: row.get(kc)})
                m.row = row
            out.append(m)
        return out

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Run the transaction ``fn`` through :func:`deimos_db.deadlock.retry_transaction`
        (again after a deadlock or lock timeout, once more after a lost connection; a
        connection still lost is a :class:`TransientError`, so the consumer waits and
        retries the batch instead of blaming, and dead-lettering, a record)."""
        return retry_transaction(fn, retries=self.deadlock_retries,
                                 backoff=self.deadlock_backoff, name=type(self).__name__)

    # -- per message ------------------------------------------------------------------------

    def _consume_each(self, messages: list[RecordMessage], md: BatchMetadata) -> None:
        attrs_of = column_attrs(self.model) if not isinstance(self.model, sa.Table) else {}
        for m in messages:
            def apply(m: RecordMessage = m) -> None:
                with Session(self.engine) as session, session.begin(), \
                        transaction(session):
                    if self.inbox and self._applied(session.connection(), md, [m.offset]):
                        return
                    if m.payload is None:
                        self.delete_record(session, m.key)
                    elif self.process_message(m.payload, m.key):
                        record = self.fetch_record(session, m.payload, m.key)
                        values = self.record_attributes(m.payload, m.key)
                        if self._limits:
                            truncate_strings(values, self._limits)
                        stamps = self._stamps()
                        if record is None:
                            record = self.model()
                            self.assign_key(record, m.payload, m.key)
                            if self._has_created:
                                values.setdefault("created_at", stamps["created_at"])
                        if self._has_updated:
                            values.setdefault("updated_at", stamps["updated_at"])
                        for col, value in values.items():
                            setattr(record, attrs_of.get(col, col), value)
                        self.save_record(session, record)
                        session.flush()
                    if self.inbox:
                        self._record_inbox(session.connection(), md, [m.offset])
            try:
                self._retrying(apply)
            except TransientError as exc:
                raise BatchError(m.index, exc) from exc  # the messages before it are done
            except Exception as exc:
                self._report([FailedMessage(m.index, m.offset, m.key, exc)], md)
                raise BatchError(m.index, exc) from exc

    # -- batch ------------------------------------------------------------------------------

    def _consume_bulk(self, messages: list[RecordMessage], md: BatchMetadata) -> None:
        cls = type(self)
        kept = messages
        bus = get_runtime().events
        if cls.should_consume is not RecordConsumer.should_consume:
            kept = [m for m in kept if self.should_consume(m)]
            on_invalid = bus.emitter(events.INVALID_RECORDS)
            if on_invalid is not None and len(kept) < len(messages):
                chosen = {id(m) for m in kept}
                on_invalid(self._event(md, records=[m for m in messages
                                                    if id(m) not in chosen]))
        if cls.pre_process is not RecordConsumer.pre_process:
            kept = self.pre_process(kept)
        if not self._fast:
            record_key = self.record_key
            for m in kept:
                m.key_values = record_key(m.key, m.payload)
        slices = self._slices(kept)
        offsets = [m.offset for m in messages]

        def bulk() -> list[RecordMessage]:
            with self.engine.begin() as conn, transaction(conn):
                skip = self._applied(conn, md, offsets) if self.inbox else set()
                upserted: list[RecordMessage] = []
                deleted: list[RecordMessage] = []
                for s in slices:
                    s = [m for m in s if m.offset not in skip] if skip else s
                    ups = [m for m in s if m.payload is not None]
                    dels = [m for m in s if m.payload is None]
                    self._upsert(conn, ups)
                    self._delete(conn, dels)
                    upserted += ups
                    deleted += dels
                if self.inbox:
                    self._record_inbox(conn, md, [o for o in offsets if o not in skip])
                self.post_process_batch(conn, upserted, deleted)
            return upserted

        try:
            written = self._retrying(bulk)
            self._written(bus, md, written)
            return
        except TransientError:
            raise  # the database, not a record: nothing is rewritten row by row
        except Exception as exc:
            if not self.batch_message_fallback or is_retryable(exc):
                # asked to fail the batch; or contention that outlasted the retries, which
                # no row is to blame for: row by row would only repeat the work
                log.error("%s: bulk write of %d message(s) from %s[%d] failed: %s",
                          type(self).__name__, len(kept), md.topic, md.partition,
                          describe(exc))
                raise
            if len(kept) <= 1:
                index = kept[0].index if kept else 0
                if kept:
                    self._report([FailedMessage(index, kept[0].offset, kept[0].key, exc)], md)
                raise BatchError(index, exc) from exc
            log.warning("%s: bulk write of %d message(s) from %s[%d] failed (%s); writing "
                        "them row by row", type(self).__name__, len(kept), md.topic,
                        md.partition, describe(exc))
            on_failure = bus.emitter(events.INITIAL_FAILURE)
            if on_failure is not None:
                on_failure(self._event(md, operation="upsert_records", count=len(kept),
                                       error=exc))
        failures, written = self._retrying(lambda: self._row_by_row(slices, md, offsets))
        self._written(bus, md, written)
        if failures:
            self._report(failures, md)
            first = failures[0]
            raise BatchError(first.index, first.error)

    def _written(self, bus: Any, md: BatchMetadata, written: list[RecordMessage]) -> None:
        on_valid = bus.emitter(events.VALID_RECORDS)
        if on_valid is not None and written:
            on_valid(self._event(md, records=written))

    def _event(self, md: BatchMetadata, **values: Any) -> dict[str, Any]:
        return {"consumer": type(self), "topic": md.topic, "partition": md.partition, **values}

    def _row_by_row(self, slices: list[list[RecordMessage]], md: BatchMetadata,
                    offsets: list[int]) -> tuple[list[FailedMessage], list[RecordMessage]]:
        failures: list[FailedMessage] = []
        with self.engine.begin() as conn, transaction(conn):
            begin_now(conn)  # the savepoints below stay inside this transaction
            skip = self._applied(conn, md, offsets) if self.inbox else set()
            upserted: list[RecordMessage] = []
            deleted: list[RecordMessage] = []
            for s in slices:
                for m in s:
                    if m.offset in skip:
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        if m.payload is None:
                            self._delete(conn, [m])
                        else:
                            self._upsert(conn, [m])
                        savepoint.commit()
                    except Exception as exc:
                        if is_disconnect(exc):
                            raise  # the connection, not this row: _retrying decides
                        savepoint.rollback()
                        failures.append(FailedMessage(m.index, m.offset, m.key, exc))
                        continue
                    (upserted if m.payload is not None else deleted).append(m)
            if self.inbox:
                bad = {f.offset for f in failures}
                self._record_inbox(conn, md, [o for o in offsets
                                              if o not in skip and o not in bad])
            self.post_process_batch(conn, upserted, deleted)
        failures.sort(key=lambda f: f.index)
        return failures, upserted

    def _report(self, failures: list[FailedMessage], md: BatchMetadata) -> None:
        self.failures = failures
        for f in failures:
            log.error("%s: message %s[%d]@%d (key %r) could not be written: %s",
                      type(self).__name__, md.topic, md.partition, f.offset, f.key,
                      describe(f.error))

    def _slices(self, messages: list[RecordMessage]) -> list[list[RecordMessage]]:
        if not messages:
            return []
        idents: list[Any]
        if len(self.key_cols) == 1:
            col = self.key_cols[0]
            idents = [m.key_values.get(col) for m in messages]
        else:
            cols = self.key_cols
            idents = [tuple(m.key_values.get(c) for c in cols) for m in messages]
        if len(set(idents)) == len(idents):
            return [messages]  # every key once: one slice, whatever the mode
        if self.compacted:
            last = dict(zip(idents, messages))  # the last message per key
            return [sorted(last.values(), key=lambda m: m.index)]
        slices: list[list[RecordMessage]] = []
        seen: dict[Any, int] = {}
        for ident, m in zip(idents, messages):
            n = seen.get(ident, 0)
            seen[ident] = n + 1
            if n == len(slices):
                slices.append([])
            slices[n].append(m)
        return slices

    # -- statements -------------------------------------------------------------------------

    def rows_for(self, messages: list[RecordMessage]) -> list[dict[str, Any]]:
        now = self._stamps() if self._stamp.names else None
        limits = self._limits
        rows = []
        record_attributes = self.record_attributes
        for m in messages:
            assert m.payload is not None
            row = m.row
            if row is None:
                row = record_attributes(m.payload, m.key)
                row.update(m.key_values or self.record_key(m.key, m.payload))
            if now is not None:
                if self._has_updated and "updated_at" not in row:
                    row["updated_at"] = now["updated_at"]
                if self._has_created and "created_at" not in row:
                    row["created_at"] = now["created_at"]
            if limits:
                truncate_strings(row, limits)
            rows.append(row)
        return rows

    def _stamps(self) -> dict[str, _dt.datetime]:
        return self._stamp.now()

    def _upsert(self, conn: sa.Connection, messages: list[RecordMessage]) -> None:
        if not messages:
            return
        rows = self.rows_for(messages)
        if self._writer is None:
            execute_upserts(conn, rows, self.upsert_statement, self.max_db_batch_size)
        else:
            self._writer.write(conn, messages, rows, lambda: execute_upserts(
                conn, rows, self.upsert_statement, self.max_db_batch_size))

    def upsert_statement(self, dialect: str, cols: frozenset[str]) -> Any:
        """The dialect's native upsert of rows with columns ``cols`` (cached); override to
        write rows another way."""
        return self._statements(dialect, cols)

    def _delete(self, conn: sa.Connection, messages: list[RecordMessage]) -> None:
        if not messages:
            return
        for start in range(0, len(messages), 1000):
            conn.execute(self.deleted_query(messages[start:start + 1000]))

    # -- inbox ------------------------------------------------------------------------------

    @property
    def inbox_consumer(self) -> str:
        return inbox_name(self)

    def _applied(self, conn: sa.Connection, md: BatchMetadata, offsets: list[int]) -> set[int]:
        return applied(conn, self.inbox_consumer, md.topic, md.partition, offsets)

    def _record_inbox(self, conn: sa.Connection, md: BatchMetadata,
                      offsets: list[int]) -> None:
        record(conn, self.inbox_consumer, md.topic, md.partition, offsets)
