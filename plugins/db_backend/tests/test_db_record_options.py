"""Record consumer options on SQLite, PostgreSQL and MariaDB: ``deleted_query`` (what a
tombstone deletes), ``truncate_columns``, ``batch_message_fallback = False``, and
:func:`deimos_db.deadlock_retry` against a real lock held by another connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import deimos
from deimos.consumer import BatchError
from deimos.testing import consume_batch
from deimos_db import RecordConsumer, RecordMessage, deadlock_retry, dispose_engines, get_engine
from deimos_db_helpers import ALL_DATABASES, batch_metadata

pytestmark = ALL_DATABASES


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    __tablename__ = "gadgets"
    __table_args__ = (sa.CheckConstraint("qty >= 0", name="ck_gadgets_qty"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(8))
    region: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    qty: Mapped[int] = mapped_column(sa.Integer, default=0)
    deleted: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class Gadgets(RecordConsumer):
    topic = "gadgets"
    group_id = "gadgets-group"
    key_config = "plain"
    model = Gadget


@pytest.fixture
def db(deimos_database: str, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    deimos.configure(schema={"backend": "mock"}, db={"url": deimos_database})
    engine = get_engine(deimos_database)
    Base.metadata.create_all(engine)
    yield engine
    dispose_engines()


def table(engine: sa.Engine) -> dict[int, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r.id: (r.name, r.region, r.qty, bool(r.deleted))
                for r in conn.execute(sa.select(Gadget.__table__))}


def seed(engine: sa.Engine, n: int = 4) -> None:
    consume_batch(Gadgets, [{"id": i, "name": f"g{i}", "region": "eu" if i % 2 else "us",
                             "qty": i} for i in range(1, n + 1)], keys=list(range(1, n + 1)))


class SoftDeleting(Gadgets):
    """A tombstone marks the row deleted, and only in the EU (a column beyond the key)."""

    def deleted_query(self, messages: list[RecordMessage]) -> sa.Executable:
        t = self.table
        ids = [m.key_values["id"] for m in messages]
        return t.update().where(t.c.id.in_(ids), t.c.region == "eu").values(deleted=True)


def test_deleted_query_decides_what_a_tombstone_does_in_both_modes(db):
    seed(db)
    consume_batch(SoftDeleting, [None, None, {"id": 5, "name": "g5", "region": "eu", "qty": 5}],
                  keys=[1, 2, 5])
    assert table(db) == {1: ("g1", "eu", 1, True), 2: ("g2", "us", 2, False),
                         3: ("g3", "eu", 3, False), 4: ("g4", "us", 4, False),
                         5: ("g5", "eu", 5, False)}

    class OneByOne(SoftDeleting):
        bulk_import = False

    consume_batch(OneByOne, [None, None], keys=[3, 4])
    assert {i: r[3] for i, r in table(db).items()} == {1: True, 2: False, 3: True, 4: False,
                                                       5: False}
    # the default still deletes the key's row
    consume_batch(Gadgets, [None], keys=[2])
    assert sorted(table(db)) == [1, 3, 4, 5]


def test_truncate_columns_cuts_strings_to_the_column_length(db):
    long = {"id": 1, "name": "a-very-long-name", "region": "somewhere-far-away", "qty": 1}

    class Truncating(Gadgets):
        truncate_columns = True

    class TruncatingOneByOne(Truncating):
        bulk_import = False

    consume_batch(Truncating, [long], keys=[1])
    consume_batch(TruncatingOneByOne, [{**long, "id": 2}], keys=[2])
    assert table(db) == {1: ("a-very-l", "somewhere-", 1, False),
                         2: ("a-very-l", "somewhere-", 1, False)}
    if db.dialect.name == "sqlite":  # SQLite stores the whole string: nothing fails there
        consume_batch(Gadgets, [{**long, "id": 3}], keys=[3])
        assert table(db)[3][0] == "a-very-long-name"
    else:  # PostgreSQL and (strict) MariaDB refuse it
        with pytest.raises(sa.exc.DBAPIError):
            consume_batch(Gadgets, [{**long, "id": 3}], keys=[3])
        assert 3 not in table(db)


def test_without_batch_message_fallback_a_bad_row_fails_the_whole_batch(db):
    payloads = [{"id": i, "name": "x", "qty": -1 if i == 6 else i} for i in range(10)]

    class Strict(Gadgets):
        batch_message_fallback = False

    strict = Strict()
    with pytest.raises(sa.exc.DBAPIError, match="ck_gadgets_qty"):
        strict.consume_batch(payloads, batch_metadata("gadgets", list(range(10))))
    assert table(db) == {} and strict.failures == []

    lenient = Gadgets()  # the default falls back row by row: nine rows land
    with pytest.raises(BatchError) as info:
        lenient.consume_batch(payloads, batch_metadata("gadgets", list(range(10))))
    assert info.value.index == 6 and len(table(db)) == 9


def _short_lock_wait(session: Session) -> None:
    """Give up waiting for a lock quickly, so the first attempt fails with the database's
    own lock timeout (a retryable error) instead of hanging."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(sa.text("SET LOCAL lock_timeout = '100ms'"))
    elif dialect in ("mysql", "mariadb"):
        session.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))


def test_deadlock_retry_runs_the_session_function_again_after_a_lock_timeout(
        db, deimos_database):
    seed(db, 1)
    # SQLite: the driver's busy wait short, as the other databases' lock timeouts above
    engine = (sa.create_engine(deimos_database, connect_args={"timeout": 0.1})
              if db.dialect.name == "sqlite" else db)
    holder = db.connect()  # holds the row's (SQLite: the file's) write lock
    holder_tx = holder.begin()
    holder.execute(Gadget.__table__.update().where(Gadget.id == 1).values(qty=100))
    attempts: list[int] = []

    def bump(session: Session) -> int:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 2:  # the lock goes away before the second attempt
            holder_tx.commit()
        _short_lock_wait(session)
        session.execute(Gadget.__table__.update().where(Gadget.id == 1)
                        .values(qty=Gadget.qty + 1))
        return len(attempts)

    try:
        assert deadlock_retry(bump, engine=engine, backoff=0.01) == 2
    finally:
        holder.close()
    assert attempts == [1, 2] and table(db)[1][2] == 101

    # an error that is not contention is raised at once, and rolled back
    def broken(session: Session) -> None:
        attempts.append(0)
        session.execute(Gadget.__table__.update().values(qty=7))
        session.execute(sa.text("SELECT * FROM no_such_table"))

    attempts.clear()
    with pytest.raises(sa.exc.DBAPIError):
        deadlock_retry(broken)
    assert attempts == [0] and table(db)[1][2] == 101
    if engine is not db:
        engine.dispose()


def test_batch_consumption_events_report_valid_invalid_and_the_initial_failure(db):
    import deimos.events

    seen: list[tuple[str, Any]] = []

    def record(name: str, payload: Any) -> None:
        seen.append((name, payload))

    class Picky(Gadgets):
        def should_consume(self, message: RecordMessage) -> bool:
            return message.payload is None or message.payload["name"] != "skip"

    unsubscribe = deimos.events.subscribe(record)
    try:
        consume_batch(Picky, [{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "skip",
                                                                 "qty": 2}], keys=[1, 2])
        with pytest.raises(BatchError):
            Picky().consume_batch([{"id": 3, "name": "b", "qty": 3},
                                   {"id": 4, "name": "c", "qty": -4}],
                                  batch_metadata("gadgets", [3, 4]))
    finally:
        unsubscribe()
    summary = [(n, p["consumer"], [m.payload["id"] for m in p["records"]])
               if "records" in p else (n, p["consumer"], p["operation"], p["count"])
               for n, p in seen]
    assert summary == [
        ("deimos.batch_consumption.invalid_records", Picky, [2]),
        ("deimos.batch_consumption.valid_records", Picky, [1]),
        ("deimos.batch_consumption.initial_failure", Picky, "upsert_records", 2),
        ("deimos.batch_consumption.valid_records", Picky, [3])]
    failure = seen[2][1]
    assert failure["topic"] == "gadgets" and isinstance(failure["error"], sa.exc.DBAPIError)
