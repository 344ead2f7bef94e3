"""The ``db`` producer backend (alias ``outbox``): messages become rows of ``kafka_messages``.

The producer pipeline has already validated and encoded every message when ``execute`` runs,
so an invalid payload fails before any row is written. The rows are inserted in one
``executemany`` through the caller's session or connection when :func:`deimos_db.transaction`
gave one (they commit or roll back with the caller's writes), otherwise in a transaction of
their own on ``db.url``. On PostgreSQL the insert also sends a ``NOTIFY``, delivered on commit,
that wakes idle DB producers. ``apublish`` inside ``transaction(async_session)`` inserts the
same rows through the caller's ``AsyncSession``/``AsyncConnection`` on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import click
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from deimos.config import ConsumerSettings, Settings
from deimos.consumer.inbox import ConsumerInbox
from deimos.errors import DeimosError
from deimos.hookspecs import hookimpl
from deimos.message import Message, ProduceContext

from .engine import NOTIFY_CHANNEL, current_bind, get_engine, is_async, rows_for
from .models import kafka_messages
from .settings import DbSettings

_INSERT = kafka_messages.insert()


def insert_messages(conn: sa.Connection, messages: Sequence[Message],
                    cluster: str | None = None) -> int:
    """Insert ``messages`` (all of one topic or not) of a producer of ``cluster`` through
    ``conn``; returns the count."""
    if not messages:
        return 0
    conn.execute(_INSERT, rows_for(messages, cluster))
    if conn.dialect.name == "postgresql":
        for topic in {m.topic for m in messages}:
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, topic)))
    return len(messages)


class DbBackend:
    """Writes messages to the outbox table instead of Kafka."""

    default_sync = True

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[BaseModel]]:
        return {"db": DbSettings}

    @hookimpl
    def deimos_cli_commands(self) -> Sequence[click.Command]:
        from .cli import commands

        return commands()

    @hookimpl
    def deimos_consumer_inbox(self, handler: Any, settings: ConsumerSettings
                              ) -> ConsumerInbox | None:
        """``inbox = true``: the handler's calls in one database transaction each with the
        inbox row and the outbox rows of its publishes (:mod:`deimos_db.inbox`)."""
        from .inbox import consumer_inbox

        return consumer_inbox(handler, settings)

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        if not messages:
            return
        bind = current_bind()
        if is_async(bind):
            # a blocking insert cannot run through an asyncio connection from here
            raise DeimosError(
                f"publishing to {context.topic!r} inside deimos_db.transaction() of an "
                f"{type(bind).__name__}: use `await {context.producer}.apublish(...)` (or "
                "apublish_list), which inserts through it on the event loop")
        cluster = context.cluster
        if isinstance(bind, Session):
            insert_messages(bind.connection(), messages, cluster)
        elif bind is not None:
            insert_messages(bind, messages, cluster)
        else:
            with engine_for(context.settings).begin() as conn:
                insert_messages(conn, messages, cluster)
        context.telemetry.increment("db_producer.insert", len(messages),
                                    {"topic": context.topic})

    @hookimpl
    async def deimos_backend_execute_async(self, context: ProduceContext,
                                           messages: Sequence[Message], sync: bool) -> None:
        """``apublish``: through the caller's ``AsyncSession``/``AsyncConnection`` (the same
        insert, run by SQLAlchemy on the event loop); otherwise the synchronous path in a
        worker thread (the transaction's context variable carried over)."""
        bind: Any = current_bind()
        if not messages or not is_async(bind):
            await asyncio.to_thread(self.deimos_backend_execute, context, messages, sync)
            return
        conn = await bind.connection() if hasattr(bind, "sync_session") else bind
        await conn.run_sync(insert_messages, messages, context.cluster)
        context.telemetry.increment("db_producer.insert", len(messages),
                                    {"topic": context.topic})

    @hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return 0  # rows are durable once inserted; nothing is ever in flight

    @hookimpl
    def deimos_backend_close(self) -> None:
        pass  # engines are shared with the DB producer and the caller; dispose_engines() frees


class OutboxBackend(DbBackend):
    """``outbox``: the name Ruby Deimos 2 uses for ``db``."""

    @hookimpl
    def deimos_consumer_inbox(self, handler: Any, settings: ConsumerSettings
                              ) -> ConsumerInbox | None:
        return None  # the same plugin as ``db``, which answers


def db_settings(settings: Settings) -> DbSettings:
    section: DbSettings = settings.section("db")
    return section


def engine_for(settings: Settings) -> sa.Engine:
    s = db_settings(settings)
    return get_engine(s.url, s.engine_options)


