"""The outbox from asyncio on SQLite, PostgreSQL and MariaDB: ``apublish`` inside
``deimos_db.transaction(async_session)`` writes through the caller's ``AsyncSession``, so a
rolled-back transaction publishes nothing and a committed one delivers exactly its messages."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import deimos
from deimos.errors import DeimosError
from deimos_db import transaction
from deimos_db.producer import DbProducer
from deimos_db_helpers import ALL_DATABASES, count_rows, read_topic

pytestmark = [pytest.mark.kafka, ALL_DATABASES]

business = sa.Table("async_orders", sa.MetaData(),
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("note", sa.String(50)))

#: the async driver of each test database's URL (psycopg is both)
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "mysql+pymysql": "mysql+asyncmy"}


def _async_url(engine: sa.Engine) -> str:
    url = engine.url
    return url.set(drivername=_ASYNC_DRIVERS.get(url.drivername, url.drivername)
                   ).render_as_string(hide_password=False)


class Orders(deimos.Producer):
    key_config = "plain"


def test_apublish_in_an_async_session_commits_or_rolls_back_with_it(
        outbox, db, deimos_kafka, deimos_topic):
    Orders.topic = deimos_topic()
    business.create(db)

    async def main() -> None:
        engine = create_async_engine(_async_url(db))
        try:
            async with AsyncSession(engine) as session:
                with transaction(session):
                    await session.execute(business.insert().values(id=1, note="lost"))
                    await Orders.apublish_list(["r1", "r2"], keys=["k1", "k2"])
                    await session.rollback()
            async with AsyncSession(engine) as session:
                with transaction(session):
                    await session.execute(business.insert().values(id=2, note="kept"))
                    await Orders.apublish("c1", key="k1", headers={"traceparent": "00-x-01"})
                    await Orders.apublish_list(["c2", "c3"], keys=["k2", "k3"])
                    await session.commit()
            async with engine.connect() as conn:  # an AsyncConnection works the same way
                with transaction(conn):
                    await Orders.apublish("lost-too", key="k9")
                    await conn.rollback()
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert count_rows(db) == 3
    assert DbProducer().process_next() == 3
    got = read_topic(deimos_kafka, Orders.topic, 3, settle=0.5)
    assert sorted(m.value() for m in got) == [b"c1", b"c2", b"c3"]
    assert next(m for m in got if m.value() == b"c1").headers() == [("traceparent", b"00-x-01")]
    with db.connect() as conn:
        assert [r.id for r in conn.execute(sa.select(business))] == [2]


def test_a_sync_publish_inside_an_async_transaction_names_apublish(outbox, db, deimos_topic):
    Orders.topic = deimos_topic()

    async def main() -> None:
        engine = create_async_engine(_async_url(db))
        try:
            async with AsyncSession(engine) as session:
                with transaction(session), pytest.raises(
                        DeimosError, match=r"use `await Orders\.apublish"):
                    Orders.publish("x", key="k")
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert count_rows(db) == 0
    # a sync Session inside a coroutine still works: its insert runs in a worker thread
    with Session(db) as session, transaction(session):
        asyncio.run(Orders.apublish("y", key="k"))
        session.commit()
    assert count_rows(db) == 1
