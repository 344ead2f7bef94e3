"""Engines per URL, the caller's transaction, and how messages become rows."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from deimos.errors import DeimosError
from deimos.message import Headers, Message

NOTIFY_CHANNEL = "deimos_kafka_messages"

_engines: dict[tuple[str, str], sa.Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: the DB producer reads while services write; busy_timeout: writers queue up
    # instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


#: the tables ``deimos db init`` makes
DEIMOS_TABLES = ("kafka_messages", "kafka_topic_info", "kafka_dead_letters", "deimos_poll_info",
                 "deimos_inbox")
# SQLite "no such table: x", PostgreSQL 'relation "x" does not exist', MariaDB/MySQL
# "Table 'db.x' doesn't exist"
_MISSING_TABLE = re.compile(
    r"no such table: (?P<a>\w+)|relation \"(?P<b>\w+)\" does not exist|"
    r"Table '(?:\w+\.)?(?P<c>\w+)' doesn't exist")


class MissingTableError(DeimosError):
    """A table of deimos-db is missing: the error names the fix (``deimos db init``)."""


def _explain_missing_table(context: Any) -> BaseException | None:
    """``handle_error`` listener: a missing deimos-db table becomes an error naming the
    fix."""
    statement = (context.statement or "").lstrip()[:8].upper()
    if statement.startswith(("DESCRIBE", "SHOW", "PRAGMA")):
        return None  # the dialect's own existence checks (create_tables) expect the error
    match = _MISSING_TABLE.search(str(context.original_exception))
    if match is None:
        return None
    table = match["a"] or match["b"] or match["c"]
    if table not in DEIMOS_TABLES:
        return None
    url = context.engine.url.render_as_string() if context.engine is not None else "db.url"
    error = MissingTableError(
        f"table {table} does not exist in {url}: run `deimos db init` (or, with Alembic, "
        f"include deimos_db's migrations; see the outbox guide) "
        f"[{context.original_exception}]")
    error.__cause__ = context.sqlalchemy_exception
    return error


def get_engine(url: str, options: dict[str, Any] | None = None) -> sa.Engine:
    """One engine per URL and options in this process (pooled, pre-pinged so a dropped
    connection is replaced rather than failing the next statement)."""
    options = dict(options or {})
    key = (url, json.dumps(options, sort_keys=True, default=str))
    engine = _engines.get(key)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                options.setdefault("pool_pre_ping", True)
                if url.startswith("sqlite"):
                    options.setdefault("connect_args", {"timeout": 30})
                engine = sa.create_engine(url, **options)
                if engine.dialect.name == "sqlite" and ":memory:" not in url:
                    sa.event.listen(engine, "connect", _sqlite_pragmas)
                sa.event.listen(engine, "handle_error", _explain_missing_table)
                _engines[key] = engine
    return engine


def database_engine(url: str | None = None) -> sa.Engine:
    """The engine of ``url`` (a consumer's ``database_url``), else of ``db.url``, with
    ``db.engine_options``: where a consumer's transactions run."""
    from deimos.config import get_settings

    db = get_settings().section("db")
    return get_engine(url or db.url, db.engine_options)


def dispose_engines() -> None:
    """Close every pooled connection (tests, reconfiguration)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# the caller's transaction
# ---------------------------------------------------------------------------------------------

Bind = Any  # Session | Connection, or AsyncSession | AsyncConnection (asyncio extra)

_current: contextvars.ContextVar[Bind | None] = contextvars.ContextVar(
    "deimos_db_transaction", default=None)


@contextlib.contextmanager
def transaction(bind: Any) -> Iterator[Any]:
    """Within the block, the ``db`` backend writes messages through ``bind``, so they commit
    or roll back with your own writes.

    ``bind`` is a SQLAlchemy ``Session`` or ``Connection`` whose transaction you commit as
    usual, or an ``Engine``: then a transaction is begun here, committed when the block ends
    and rolled back when it raises; the ``Connection`` is yielded for your own writes.
    From asyncio, an ``AsyncSession`` or ``AsyncConnection`` (publish with ``await
    apublish(...)`` in the block: the rows are inserted through it on the event loop).
    Context-local, so threads and asyncio tasks each see their own.
    """
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            token = _current.set(conn)
            try:
                yield conn
            finally:
                _current.reset(token)
        return
    token = _current.set(bind)
    try:
        yield bind
    finally:
        _current.reset(token)


def session() -> Session:
    """The ``Session`` of the transaction the current handler runs in: a consumer's with
    ``inbox = true`` (or a record consumer's per-message transaction), or the one you gave
    :func:`transaction`. Write through it, and ``publish`` through the ``db`` backend, and
    everything commits with the inbox row, or nothing does."""
    bind = _current.get()
    if isinstance(bind, Session):
        return bind
    raise DeimosError(
        "deimos_db.session() outside a transaction with a Session: call it from the handler "
        "of a consumer with inbox = true, or inside deimos_db.transaction(session)"
        + ("" if bind is None else f" (this one is bound to a {type(bind).__name__}; "
           "use deimos_db.current_bind())"))


def begin_now(conn: sa.Connection) -> None:
    """Start ``conn``'s database transaction now on SQLite (elsewhere: nothing to do).

    pysqlite sends ``BEGIN`` only before the first INSERT/UPDATE/DELETE, so a ``SAVEPOINT``
    issued before any of them opens a transaction of its own, which its ``RELEASE`` commits:
    a row-by-row pass in savepoints, or a handler's ``begin_nested()``, would commit piece by
    piece instead of with the rest of the transaction."""
    if conn.dialect.name != "sqlite":
        return
    dbapi: Any = conn.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN")


def current_bind() -> Bind | None:
    """The session or connection set by :func:`transaction`, if any."""
    return _current.get()


def is_async(bind: Any) -> bool:
    """Whether ``bind`` is an ``AsyncSession``/``AsyncConnection`` (checked by module, so
    the synchronous path never imports SQLAlchemy's asyncio extension)."""
    return type(bind).__module__.startswith("sqlalchemy.ext.asyncio")


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------


def encode_headers(headers: Headers | None) -> str | None:
    """Headers as JSON text (values as latin-1 strings: lossless for any bytes, readable for
    ASCII such as ``traceparent``)."""
    if not headers:
        return None
    return json.dumps([[k, v.decode("latin-1") if isinstance(v, bytes) else str(v)]
                       for k, v in headers], separators=(",", ":"))


def decode_headers(text: str | None) -> Headers | None:
    if not text:
        return None
    return [(k, v.encode("latin-1")) for k, v in json.loads(text)]


def key_hash(partition_key: bytes | None, key: bytes | None) -> int:
    """Stable across processes and versions (CRC-32), so a key's shard never moves."""
    data = partition_key if partition_key is not None else key
    return zlib.crc32(data) & 0x7FFFFFFF if data else 0


def utcnow() -> _dt.datetime:
    """Naive UTC: the same on every database, whatever its time zone handling."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def rows_for(messages: Sequence[Message], cluster: str | None = None
             ) -> list[dict[str, Any]]:
    """Outbox rows of ``messages`` of a producer of ``cluster`` (None: the default)."""
    now = utcnow()
    return [{
        "topic": m.topic,
        "key": m.encoded_key,
        "message": m.encoded_payload,
        "partition_key": m.partition_key,
        "key_hash": key_hash(m.partition_key, m.encoded_key),
        "headers": encode_headers(m.headers),
        "created_at": now,
        "cluster": cluster,
    } for m in messages]
