"""A record consumer whose database connection dies under it, on PostgreSQL and MariaDB.

The connection is killed from the server side (``pg_terminate_backend``, ``KILL``) inside the
batch's transaction, from ``post_process_batch``, so the failure lands at a known point with
no race. SQLite has no server connection to lose and is not run here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import deimos
from deimos.errors import TransientError
from deimos.testing import consume_batch, sent_messages
from deimos_db import RecordConsumer, create_tables, dispose_engines, get_engine


class Base(DeclarativeBase):
    pass


class Part(Base):
    __tablename__ = "parts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))


def kill(conn: sa.Connection) -> None:
    """End ``conn``'s server session from another connection, then touch it."""
    admin = sa.create_engine(conn.engine.url, poolclass=sa.pool.NullPool)
    with admin.connect() as other:
        if conn.dialect.name == "postgresql":
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            # the timeout makes it wait until the session is gone (PostgreSQL 14+)
            assert other.execute(sa.text("SELECT pg_terminate_backend(:p, 10000)"),
                                 {"p": pid}).scalar()
        else:
            cid = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
            other.execute(sa.text(f"KILL {int(cid)}"))
    admin.dispose()
    conn.execute(sa.text("SELECT 1"))  # fails: the session is gone


class Parts(RecordConsumer):
    topic = "parts"
    group_id = "parts"
    key_config = "plain"
    model = Part
    kills = 0
    row_by_row = 0

    def post_process_batch(self, conn: sa.Connection, upserted: Any, deleted: Any) -> None:
        if type(self).kills > 0:
            type(self).kills -= 1
            kill(conn)

    def _row_by_row(self, *args: Any, **kwargs: Any) -> Any:
        type(self).row_by_row += 1
        return super()._row_by_row(*args, **kwargs)


@pytest.fixture(params=["postgresql", "mariadb"])
def db(request: pytest.FixtureRequest, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    from deimos.testing.databases import isolated_database

    with isolated_database(request.param) as url:
        deimos.configure(schema={"backend": "mock"}, db={"url": url})
        engine = get_engine(url)
        create_tables(engine)
        Base.metadata.create_all(engine)
        Parts.kills = Parts.row_by_row = 0
        yield engine
        dispose_engines()


def names(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(Part.id, Part.name)).all())


def test_a_connection_lost_mid_batch_reruns_the_transaction_on_a_new_one(db):
    Parts.kills = 1
    consume_batch(Parts, [{"id": i, "name": f"p{i}"} for i in range(1, 51)],
                  keys=list(range(1, 51)))
    assert names(db) == {i: f"p{i}" for i in range(1, 51)}
    assert Parts.kills == 0  # the connection really was killed once
    assert Parts.row_by_row == 0  # not treated as a bad record
    assert sent_messages() == []  # nothing dead-lettered


def test_a_database_that_stays_unreachable_is_transient_not_a_bad_record(db):
    Parts.kills = 2  # the first run and its rerun on a new connection
    with pytest.raises(TransientError, match="Parts: the database is unreachable"):
        consume_batch(Parts, [{"id": i, "name": f"p{i}"} for i in range(1, 11)],
                      keys=list(range(1, 11)), on_error="dead_letter",
                      dead_letter_topic="parts.dlq")
    assert Parts.row_by_row == 0
    assert sent_messages() == []  # nothing dead-lettered because the database was down
    assert names(db) == {}  # the transaction rolled back
    # the database is back: the same batch goes through
    consume_batch(Parts, [{"id": i, "name": f"p{i}"} for i in range(1, 11)],
                  keys=list(range(1, 11)))
    assert len(names(db)) == 10
