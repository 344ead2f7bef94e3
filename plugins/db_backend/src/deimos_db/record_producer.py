"""Record producers: a :class:`deimos.Producer` bound to a SQLAlchemy model.

Ruby Deimos's ``ActiveRecordProducer`` and ``KafkaSource`` for SQLAlchemy 2:

* :meth:`RecordProducer.send_events` publishes model instances (or dicts of column values);
  :meth:`~RecordProducer.generate_payload` builds each payload from the columns that are also
  schema fields (the schema backend's ``schema_fields``), converting ``datetime``, ``Decimal``,
  ``UUID`` and enums to what the field holds; :meth:`~RecordProducer.send_deletions` publishes
  :meth:`~RecordProducer.generate_deletion_payload` (a tombstone by default).
* :func:`track_changes` publishes from SQLAlchemy session events: an insert, an update that
  changed a :meth:`~RecordProducer.watched_attributes` attribute, a delete. With the ``db``
  (``outbox``) backend the messages are written in the flush, inside the session's
  transaction, so a rolled-back change publishes nothing; with any other backend they are
  built at flush time and sent after the commit (and dropped on rollback).

Only changes the ORM unit of work sees are tracked: ``session.execute(update(...))``,
``delete(...)`` and ``insert(...)`` statements, and raw SQL, bypass it and publish nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from deimos.message import Message
from deimos.producer import Producer, Tombstone, producers_disabled
from deimos.runtime import get_runtime
from deimos.schema.base import SchemaField

from .engine import get_engine, transaction
from .records import (
    column_attrs,
    primary_key_names,
    record_dict,
    string_limits,
    table_of,
    to_schema_value,
    truncate_strings,
)

log = logging.getLogger("deimos_db.record_producer")

#: the hooks handed a record itself (instance or dict of column values)
_RECORD_HOOKS = ("send_events", "payloads_for", "generate_payload", "key_for", "record_key")
#: the hooks :meth:`RecordProducer.payloads_for` inlines while none is overridden
_PAYLOAD_HOOKS = ("generate_payload", "key_for", "record_key")

#: the types :func:`to_schema_value` returns unchanged without a field
_AS_IS = frozenset({int, str, float, bool, type(None)})

#: the events a record producer publishes on (Ruby Deimos's ``kafka_config``)
EVENTS = frozenset({"create", "update", "delete"})
OUTBOX_BACKENDS = frozenset({"db", "outbox"})


class RecordProducer(Producer):
    """A producer whose messages come from rows of :attr:`model`.

    Set ``model`` (a mapped class) besides the usual ``topic``/``schema``/``key_config``.
    With ``key_config = {"field": "id"}`` the key is taken from the payload; with ``"plain"``
    or a key schema it is :meth:`record_key` (the primary key) unless the payload carries a
    ``payload_key``.
    """

    model: ClassVar[Any]
    #: which tracked changes publish (see :func:`track_changes`)
    publish_on: ClassVar[frozenset[str]] = EVENTS
    #: records given as dicts of column values are loaded from the database (one query per
    #: call) before the hooks are handed them, so an overridden ``generate_payload`` can read
    #: relationships (Ruby's ``record_class(klass, refetch: true)``); attrs stay the dict's
    refetch: ClassVar[bool] = False
    #: :func:`track_changes` cuts strings of new and changed rows to their column's length
    #: before the flush writes them (Ruby's ``producers.truncate_columns``), so the row saves
    #: and the message carries what the row holds
    truncate_columns: ClassVar[bool] = False

    # -- hooks ------------------------------------------------------------------------------

    @classmethod
    def generate_payload(cls, attrs: dict[str, Any], record: Any) -> Any:
        """The payload for ``record`` whose column values are ``attrs``; None skips it.

        Default: the columns that are schema fields (all columns when the schema backend
        describes no fields, e.g. ``mock``), values converted for their field.
        """
        return cls._payload_builder()(attrs)

    @classmethod
    def generate_deletion_payload(cls, record: Any) -> Any:
        """What a deleted ``record`` publishes: by default a tombstone with its key."""
        return Tombstone(cls.key_for(record_dict(record), record))

    @classmethod
    def watched_attributes(cls, record: Any) -> Iterable[str]:
        """Attribute names whose change publishes an update (default: every column)."""
        return column_attrs(cls.model).values()

    @classmethod
    def post_process(cls, records: Sequence[Any]) -> None:
        """Called after :meth:`send_events` published ``records`` (the DB poller: after
        each batch): mark them, count them, publish elsewhere."""

    @classmethod
    def record_key(cls, record: Any) -> Any:
        """The message key of ``record`` for plain and schema keys: its primary key (a dict
        of the columns when it has several)."""
        return cls._primary_key_builder()(record_dict(record))

    # -- publishing -------------------------------------------------------------------------

    @classmethod
    def send_events(cls, records: Iterable[Any], *, force_send: bool = False,
                    sync: bool | None = None) -> list[Message]:
        """Publish one message per record (mapped instance or dict of column values), then
        :meth:`post_process` them."""
        if producers_disabled(cls):
            return []
        records = records if isinstance(records, list) else list(records)
        payloads, keys = cls.payloads_for(records)
        sent = (cls.publish_list(payloads, keys=keys, force_send=force_send, sync=sync)
                if payloads else [])
        if records:
            cls.post_process(records)
        return sent

    @classmethod
    def payloads_for(cls, records: Iterable[Any]) -> tuple[list[Any], list[Any] | None]:
        """Payloads and keys (None: the pipeline finds them) of ``records``."""
        if not _overrides(cls, _PAYLOAD_HOOKS):
            return cls._default_payloads(records)
        if cls.refetch:
            records = records if isinstance(records, list) else list(records)
            if any(isinstance(r, Mapping) for r in records):
                with Session(cls._engine(), expire_on_commit=False) as session:
                    return cls._payloads_from(records, cls._refetched(session, records))
        return cls._payloads_from(records, None)

    @classmethod
    def _payloads_from(cls, records: Iterable[Any], loaded: list[Any] | None
                       ) -> tuple[list[Any], list[Any] | None]:
        payloads: list[Any] = []
        keys: list[Any] = []
        for i, record in enumerate(records):
            attrs = record_dict(record)
            if loaded is not None and loaded[i] is not None:
                record = loaded[i]
            payload = cls.generate_payload(attrs, record)
            if payload is None:
                continue
            payloads.append(payload)
            keys.append(cls.key_for(attrs, record, payload))
        return payloads, keys if cls._explicit_keys() else None

    @classmethod
    def _refetched(cls, session: Session, records: list[Any]) -> list[Any]:
        """The loaded instance of each dict record with its primary key (one query), None
        for the others and for a row that no longer exists."""
        names = primary_key_names(cls.model)
        attrs = column_attrs(cls.model)
        wanted = {tuple(r.get(n) for n in names): i for i, r in enumerate(records)
                  if isinstance(r, Mapping) and all(r.get(n) is not None for n in names)}
        found: list[Any] = [None] * len(records)
        keys = list(wanted)
        cols = [getattr(cls.model, attrs.get(n, n)) for n in names]
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            cond = (cols[0].in_([k[0] for k in chunk]) if len(cols) == 1
                    else sa.tuple_(*cols).in_(chunk))
            for obj in session.scalars(sa.select(cls.model).where(cond)):
                i = wanted.get(tuple(getattr(obj, attrs.get(n, n)) for n in names))
                if i is not None:
                    found[i] = obj
        return found

    @classmethod
    def _engine(cls) -> sa.Engine:
        db = get_runtime().settings.section("db")
        return get_engine(db.url, db.engine_options)

    @classmethod
    def send_deletions(cls, records: Iterable[Any], *, force_send: bool = False,
                       sync: bool | None = None) -> list[Message]:
        """Publish :meth:`generate_deletion_payload` of each record."""
        payloads = [p for p in map(cls.generate_deletion_payload, records) if p is not None]
        return cls.publish_list(payloads, force_send=force_send, sync=sync) if payloads else []

    @classmethod
    def _default_payloads(cls, records: Iterable[Any]) -> tuple[list[Any], list[Any] | None]:
        """:meth:`payloads_for` with the default hooks inlined: the same payloads and keys
        as ``generate_payload``, ``key_for`` and ``record_key`` give, with what they look up
        per record (schema fields, key config, primary key) looked up once per call."""
        make = cls._payload_builder()
        explicit = cls._explicit_keys()
        key_of = cls._primary_key_builder()
        payloads: list[Any] = []
        keys: list[Any] = []
        for record in records:
            # a dict (the poller's rows) is read, not kept or changed: no copy needed
            attrs = record if type(record) is dict else record_dict(record)
            payload = make(attrs)
            payloads.append(payload)
            if explicit:  # a column named payload_key is the key, as key_for says
                keys.append(None if "payload_key" in payload else key_of(attrs))
        return payloads, keys if explicit else None

    @classmethod
    def _payload_builder(cls) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """The default payload of a record's column values under the current schema."""
        fields = cls.schema_field_map()
        if not fields:
            # values JSON takes as they are skip the call (to_schema_value returns them)
            return lambda attrs: {k: v if type(v) in _AS_IS else to_schema_value(v, None)
                                  for k, v in attrs.items()}
        items = tuple(fields.items())
        return lambda attrs: {name: to_schema_value(attrs[name], f) for name, f in items
                              if name in attrs}

    @classmethod
    def _primary_key_builder(cls) -> Callable[[Mapping[str, Any]], Any]:
        """A record's primary key from its column values (a dict when composite)."""
        names = tuple(primary_key_names(cls.model))
        if len(names) == 1:
            name = names[0]
            return lambda attrs: to_schema_value(attrs.get(name), None)
        return lambda attrs: {n: to_schema_value(attrs.get(n), None) for n in names}

    @classmethod
    def _takes_column_values(cls) -> bool:
        """True when this producer overrides none of the hooks handed a record, so it
        publishes the same messages from a dict of a row's column values as from the loaded
        instance (the DB poller then reads rows without loading instances)."""
        return not _overrides(cls, _RECORD_HOOKS)

    # -- the DB poller's queries ------------------------------------------------------------

    @classmethod
    def poll_query(cls, *, time_from: Any, time_to: Any, column_name: str, min_id: int,
                   id_column: str) -> sa.Select[Any]:
        """Time-based polling: rows changed after ``(time_from, min_id)`` up to ``time_to``.

        Override to narrow it (keep the ``(timestamp, id)`` condition: it is what lets the
        poller resume mid-timestamp without skipping or repeating a row). The poller adds the
        order and the limit.
        """
        t = table_of(cls.model)
        ts, id_ = t.c[column_name], t.c[id_column]
        # (ts, id) > (time_from, min_id) written so that an index on (ts, id) is walked in
        # order from the position and the LIMIT stops it: with the equivalent bare
        # ``ts > from OR (ts = from AND id > min)`` SQLite and PostgreSQL fetch and sort every
        # later row for each batch (MariaDB ranges over the index with either)
        return sa.select(cls.model).where(
            ts >= time_from, sa.or_(ts > time_from, id_ > min_id), ts <= time_to)

    @classmethod
    def state_query(cls, *, state_column: str | None, published_state: Any,
                    failed_state: Any, publish_timestamp_column: str | None
                    ) -> sa.Select[Any]:
        """State-based polling: the rows still to publish (default: ``state_column`` is
        NULL, else ``publish_timestamp_column`` is NULL). Override for your own states."""
        t = table_of(cls.model)
        col = state_column or publish_timestamp_column
        assert col is not None
        return sa.select(cls.model).where(t.c[col].is_(None))

    # -- internals --------------------------------------------------------------------------

    @classmethod
    def schema_fields(cls) -> list[SchemaField]:
        sb = cls._pipeline().schema
        return list(sb.fields(sb.context)) if sb.fields is not None else []

    @classmethod
    def schema_field_map(cls) -> dict[str, SchemaField]:
        pipeline = cls._pipeline()
        cached = cls.__dict__.get("_deimos_fields")
        if cached is None or cached[0] is not pipeline:
            cached = (pipeline, {f.name: f for f in cls.schema_fields()})
            cls._deimos_fields = cached
        fields: dict[str, SchemaField] = cached[1]
        return fields

    @classmethod
    def _explicit_keys(cls) -> bool:
        return cls._pipeline().key_config.kind in ("plain", "schema")

    @classmethod
    def key_for(cls, attrs: Mapping[str, Any], record: Any, payload: Any = None) -> Any:
        kc = cls._pipeline().key_config
        if kc.kind == "none":
            return None
        if isinstance(payload, Mapping) and "payload_key" in payload:
            return None  # the pipeline takes it from the payload
        if kc.kind == "field":
            name = (kc.field or "").split(".")[0]
            return to_schema_value(attrs.get(name), None)
        return cls.record_key(record)

    @classmethod
    def publishes_in_transaction(cls) -> bool:
        """True when messages go to the outbox (written in the caller's transaction)."""
        runtime = get_runtime()
        name = runtime.backend_override or cls.backend or runtime.settings.producers.backend
        return name in OUTBOX_BACKENDS


def _overrides(cls: type[RecordProducer], hooks: Iterable[str]) -> bool:
    """Does ``cls`` (or a base between it and RecordProducer) override one of ``hooks``?"""
    return any(getattr(cls, h).__func__ is not getattr(RecordProducer, h).__func__
               for h in hooks)


# ---------------------------------------------------------------------------------------------
# session events
# ---------------------------------------------------------------------------------------------

_PENDING = "deimos_db_pending"


class ChangeTracker:
    """Listeners publishing the changes of tracked models; :meth:`remove` detaches them.

    Made by :func:`track_changes`; also a context manager (tests).
    """

    def __init__(self, producers: Sequence[type[RecordProducer]], target: Any) -> None:
        self.producers = list(producers)
        self.target = target
        self._listeners: list[tuple[str, Callable[..., Any]]] = [("after_flush", self._after_flush),
                           ("after_commit", self._after_commit),
                           ("after_rollback", self._after_rollback)]
        #: model -> column attribute -> length of the strings to cut before a flush
        self._truncated: dict[Any, dict[str, int]] = {}
        for p in self.producers:
            if p.truncate_columns:
                attrs = column_attrs(p.model)
                self._truncated[p.model] = {attrs.get(c, c): n for c, n
                                            in string_limits(table_of(p.model)).items()}
        if self._truncated:
            self._listeners.append(("before_flush", self._before_flush))
        for name, fn in self._listeners:
            sa.event.listen(target, name, fn)

    def remove(self) -> None:
        for name, fn in self._listeners:
            if sa.event.contains(self.target, name, fn):
                sa.event.remove(self.target, name, fn)

    def __enter__(self) -> ChangeTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _for(self, obj: Any) -> list[type[RecordProducer]]:
        return [p for p in self.producers if isinstance(obj, p.model)]

    def _before_flush(self, session: Session, _ctx: Any, _instances: Any) -> None:
        for obj in (*session.new, *session.dirty):
            for model, limits in self._truncated.items():
                if isinstance(obj, model):
                    loaded = sa.inspect(obj).dict  # loaded values only: no lazy loads here
                    values = {a: loaded[a] for a in limits if a in loaded}
                    for a, value in truncate_strings(dict(values), limits).items():
                        if value is not values[a]:
                            setattr(obj, a, value)

    def _after_flush(self, session: Session, _ctx: Any) -> None:
        # still the pre-flush state: new/dirty/deleted and attribute history are intact
        events: dict[type[RecordProducer], tuple[list[Any], list[Any]]] = {}
        for obj in session.new:
            for p in self._for(obj):
                if "create" in p.publish_on:
                    events.setdefault(p, ([], []))[0].append(obj)
        for obj in session.dirty:
            producers = self._for(obj)
            if not producers or not session.is_modified(obj, include_collections=False):
                continue
            state = sa.inspect(obj)
            for p in producers:
                if "update" in p.publish_on and any(
                        state.attrs[a].history.has_changes() for a in p.watched_attributes(obj)):
                    events.setdefault(p, ([], []))[0].append(obj)
        for obj in session.deleted:
            for p in self._for(obj):
                if "delete" in p.publish_on:
                    events.setdefault(p, ([], []))[1].append(obj)
        if not events:
            return
        for p, (changed, deleted) in events.items():
            if p.publishes_in_transaction():
                with transaction(session):
                    p.send_events(changed)
                    p.send_deletions(deleted)
            else:
                # payloads built now, while the rows are loaded; sent once the commit succeeded
                payloads, keys = p.payloads_for(changed)
                deletions = [d for d in map(p.generate_deletion_payload, deleted)
                             if d is not None]
                session.info.setdefault(_PENDING, []).append((p, payloads, keys, deletions))

    def _after_commit(self, session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        for p, payloads, keys, deletions in pending or ():
            if payloads:
                p.publish_list(payloads, keys=keys)
            if deletions:
                p.publish_list(deletions)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(_PENDING, None)


def track_changes(*producers: type[RecordProducer], target: Any = Session) -> ChangeTracker:
    """Publish inserts, watched updates and deletes of the producers' models.

    :param target: what to listen on: the ``Session`` class (every session, the default), a
        ``sessionmaker`` or one session.
    """
    for p in producers:
        table_of(p.model)  # fail now on something that is not a mapped class
    return ChangeTracker(producers, target)
