"""A record consumer's time stamps on database sessions whose time zone is not UTC.

PostgreSQL reads a naive value for a ``timestamptz`` column in the session's ``TimeZone``, so
naive UTC written from a session in New York lands five hours off; MariaDB's ``DATETIME`` has
no time zone, so naive UTC stays what it was, whatever the session's ``time_zone``. SQLite
has no sessions with time zones and is covered by the record consumer's main tests.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import deimos
from deimos.testing import consume_batch
from deimos_db import RecordConsumer, create_tables, dispose_engines, get_engine

UTC = _dt.timezone.utc


class Base(DeclarativeBase):
    pass


class Shipment(Base):
    __tablename__ = "shipments"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # timestamptz on PostgreSQL; DATETIME(6) on MariaDB (which has no aware type)
    shipped_at: Mapped[_dt.datetime | None] = mapped_column(
        sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        nullable=True)
    updated_at: Mapped[_dt.datetime | None] = mapped_column(
        sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        nullable=True)
    created_at: Mapped[_dt.datetime | None] = mapped_column(
        sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb"),
        nullable=True)


class Shipments(RecordConsumer):
    topic = "shipments"
    group_id = "shipments"
    key_config = "plain"
    model = Shipment


class ShipmentsOneByOne(Shipments):
    bulk_import = False


@pytest.fixture(params=["postgresql", "mariadb"])
def new_york(request: pytest.FixtureRequest, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    """The consumer's sessions in New York; the returned engine reads in UTC."""
    from deimos.testing.databases import isolated_database

    with isolated_database(request.param) as url:
        if request.param == "postgresql":
            parsed = sa.engine.make_url(url)
            options = parsed.query["options"] + " -ctimezone=America/New_York"
            consumer_url = parsed.update_query_dict({"options": options}).render_as_string(
                hide_password=False)
            engine_options: dict[str, Any] = {}
            utc_engine = sa.create_engine(
                parsed.update_query_dict({"options": parsed.query["options"]
                                          + " -ctimezone=UTC"}))
        else:
            consumer_url = url
            engine_options = {"connect_args": {"init_command": "SET time_zone = '-05:00'"}}
            utc_engine = sa.create_engine(
                url, connect_args={"init_command": "SET time_zone = '+00:00'"})
        deimos.configure(schema={"backend": "mock"},
                         db={"url": consumer_url, "engine_options": engine_options})
        engine = get_engine(consumer_url, engine_options)
        create_tables(engine)
        Base.metadata.create_all(engine)
        with engine.connect() as conn:  # the consumer's sessions really are in New York
            if request.param == "postgresql":
                assert conn.execute(sa.text("SHOW TimeZone")).scalar() == "America/New_York"
            else:
                assert conn.execute(sa.text("SELECT @@session.time_zone")).scalar() == "-05:00"
        yield utc_engine
        utc_engine.dispose()
        dispose_engines()


def as_utc(value: _dt.datetime) -> _dt.datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@pytest.mark.parametrize("consumer", [Shipments, ShipmentsOneByOne],
                         ids=["bulk", "per-message"])
def test_time_stamps_are_utc_on_a_session_in_another_time_zone(new_york, consumer):
    before = _dt.datetime.now(UTC)
    consume_batch(consumer, [{"id": 1, "shipped_at": "2026-06-01T12:00:00"},
                             {"id": 2, "shipped_at": 1_780_315_200_000}], keys=[1, 2])
    after = _dt.datetime.now(UTC)
    with new_york.connect() as conn:
        got = {r.id: r for r in conn.execute(sa.select(Shipment.__table__))}
    for row in got.values():
        for stamp in (row.updated_at, row.created_at):
            # within the call, not five hours off
            assert before - _dt.timedelta(seconds=1) <= as_utc(stamp) <= after
    # a time without offset means UTC, as epoch millis do (1780315200000 = 2026-06-01 12:00Z)
    assert as_utc(got[1].shipped_at) == _dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert as_utc(got[2].shipped_at) == _dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
