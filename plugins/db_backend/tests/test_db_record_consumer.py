"""Record consumers on SQLite, PostgreSQL and MariaDB: bulk upserts, tombstones, compaction,
key-distinct slices, a poisoned record among 1,000 under each error policy, per-message hooks
and the inbox. Messages go through deimos's real consume path (MessageProcessor, encoding and
decoding, retries and on_error) with ``consume_batch``; the database is real."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import deimos
from deimos.testing import consume_batch, sent_messages
from deimos_db import RecordConsumer, RecordMessage, create_tables, dispose_engines, get_engine
from deimos_db_helpers import ALL_DATABASES

pytestmark = ALL_DATABASES

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "widgets"
    __table_args__ = (sa.CheckConstraint("qty >= 0", name="ck_widgets_qty"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(50))
    qty: Mapped[int] = mapped_column(sa.Integer)
    seen_at: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Counter(Base):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(sa.Integer)


class Widgets(RecordConsumer):
    topic = "widgets"
    group_id = "widgets-group"
    key_config = "plain"
    model = Widget


@pytest.fixture
def db(deimos_database: str, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    deimos.configure(schema={"backend": "mock"}, db={"url": deimos_database})
    engine = get_engine(deimos_database)
    create_tables(engine)
    Base.metadata.create_all(engine)
    yield engine
    dispose_engines()


def rows(engine: sa.Engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as conn:
        return {r.id: (r.name, r.qty) for r in conn.execute(sa.select(Widget.__table__))}


def test_upserts_updates_and_tombstone_deletes(db):
    consume_batch(Widgets, [{"id": i, "name": f"w{i}", "qty": i, "seen_at": 1_700_000_000_000}
                            for i in range(1, 6)], keys=[1, 2, 3, 4, 5])
    assert rows(db) == {i: (f"w{i}", i) for i in range(1, 6)}
    with db.connect() as conn:
        first = conn.execute(sa.select(Widget.__table__).where(Widget.id == 1)).one()
    # epoch millis became a datetime; created_at/updated_at were filled
    assert first.seen_at == _dt.datetime(2023, 11, 14, 22, 13, 20)
    assert first.created_at is not None and first.updated_at is not None
    consume_batch(Widgets, [{"id": 2, "name": "two", "qty": 20}, None, None,
                            {"id": 6, "name": "six", "qty": 6}], keys=[2, 3, 4, 6])
    assert rows(db) == {1: ("w1", 1), 2: ("two", 20), 5: ("w5", 5), 6: ("six", 6)}
    with db.connect() as conn:
        second = conn.execute(sa.select(Widget.__table__).where(Widget.id == 2)).one()
    # columns the payload does not carry are left alone; created_at is kept on update
    assert second.seen_at == first.seen_at
    assert second.created_at < second.updated_at


def test_compaction_keeps_the_last_message_per_key(db):
    written: list[list[int]] = []

    class Recording(Widgets):
        def post_process_batch(self, conn, upserted, deleted):
            written.append([m.index for m in upserted] + [m.index for m in deleted])

    consume_batch(Recording, [{"id": 1, "name": "a", "qty": 1}, {"id": 1, "name": "b", "qty": 2},
                              {"id": 2, "name": "c", "qty": 3}, None,
                              {"id": 1, "name": "d", "qty": 4}], keys=[1, 1, 2, 2, 1])
    assert rows(db) == {1: ("d", 4)}
    assert sorted(written[0]) == [3, 4]  # one upsert of the last "1", one delete of "2"


def test_without_compaction_key_distinct_slices_apply_in_order(db):
    class Ordered(Widgets):
        compacted = False
        seen: list[list[int]] = []

        def post_process_batch(self, conn, upserted, deleted):
            got = conn.execute(sa.select(Widget.__table__.c.qty).where(Widget.id == 1)).scalar()
            self.seen.append([len(upserted), len(deleted), got])

    consume_batch(Ordered, [{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "b", "qty": 2},
                            {"id": 1, "name": "c", "qty": 3}, None,
                            {"id": 1, "name": "e", "qty": 5}], keys=[1, 2, 1, 1, 1])
    assert rows(db) == {1: ("e", 5), 2: ("b", 2)}
    assert Ordered.seen == [[4, 1, 5]]


def _thousand(poison_at: int) -> tuple[list[dict[str, Any]], list[int]]:
    payloads = [{"id": i, "name": f"w{i}", "qty": -1 if i == poison_at else i}
                for i in range(1000)]
    return payloads, list(range(1000))


@pytest.mark.parametrize("policy", ["skip", "dead_letter", "raise"])
def test_a_poisoned_record_in_1000_is_handled_per_policy_and_999_are_written(db, policy):
    payloads, keys = _thousand(poison_at=437)
    settings: dict[str, Any] = {"on_error": policy}
    if policy == "dead_letter":
        settings["dead_letter_topic"] = "widgets-dlq"
    if policy == "raise":
        with pytest.raises(sa.exc.DBAPIError, match="ck_widgets_qty"):
            consume_batch(Widgets, payloads, keys=keys, **settings)
    else:
        consume_batch(Widgets, payloads, keys=keys, **settings)
    written = rows(db)
    assert len(written) == 999 and 437 not in written
    assert written[436] == ("w436", 436) and written[999] == ("w999", 999)
    dlq = sent_messages("widgets-dlq")
    if policy == "dead_letter":
        assert len(dlq) == 1
        headers = dict(dlq[0].headers or [])
        assert headers["deimos-original-offset"] == b"437"
        assert b"ck_widgets_qty" in headers["deimos-error-message"]
    else:
        assert dlq == []


def test_the_first_failed_batch_writes_every_good_row_and_names_each_bad_one(db):
    payloads, keys = _thousand(poison_at=10)
    payloads[700]["qty"] = -7
    handler = Widgets()
    with pytest.raises(Exception) as info:
        handler.consume_batch(
            payloads, _metadata(keys))
    from deimos.consumer import BatchError

    assert isinstance(info.value, BatchError) and info.value.index == 10
    assert [(f.index, f.offset) for f in handler.failures] == [(10, 10), (700, 700)]
    assert len(rows(db)) == 998


def _metadata(keys: list[int]) -> Any:
    from confluent_kafka import Message as KafkaMessage

    from deimos.consumer import BatchMetadata

    msgs = [KafkaMessage(topic="widgets", partition=0, offset=i, key=str(k).encode(),
                         value=b"{}") for i, k in enumerate(keys)]
    return BatchMetadata(msgs, [str(k) for k in keys], "widgets", 0)


def test_should_consume_pre_process_and_columns(db):
    class Picky(Widgets):
        columns = ("name", "qty")

        def should_consume(self, message: RecordMessage) -> bool:
            return message.payload is None or message.payload["qty"] != 99

        def pre_process(self, messages):
            for m in messages:
                if m.payload is not None:
                    m.payload = {**m.payload, "name": m.payload["name"].upper()}
            return messages

    consume_batch(Picky, [{"id": 1, "name": "a", "qty": 1, "seen_at": 5},
                          {"id": 2, "name": "b", "qty": 99}], keys=[1, 2])
    assert rows(db) == {1: ("A", 1)}
    with db.connect() as conn:
        assert conn.execute(sa.select(Widget.__table__.c.seen_at)).scalar() is None


def test_per_message_mode_runs_the_hooks(db):
    calls: list[str] = []

    class OneByOne(Widgets):
        bulk_import = False

        def process_message(self, payload, key):
            calls.append(f"process {key}")
            return payload["name"] != "ignored"

        def fetch_record(self, session, payload, key):
            calls.append(f"fetch {key}")
            return super().fetch_record(session, payload, key)

        def save_record(self, session, record):
            calls.append(f"save {record.id}")
            record.name = record.name + "!"
            session.add(record)

        def delete_record(self, session, key):
            calls.append(f"delete {key}")
            super().delete_record(session, key)

    consume_batch(OneByOne, [{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "ignored",
                                                                 "qty": 2},
                             {"id": 3, "name": "c", "qty": 3}], keys=[1, 2, 3])
    consume_batch(OneByOne, [{"id": 1, "name": "b", "qty": 5}, None], keys=[1, 3])
    assert rows(db) == {1: ("b!", 5)}
    assert calls == ["process 1", "fetch 1", "save 1", "process 2", "process 3", "fetch 3",
                     "save 3", "process 1", "fetch 1", "save 1", "delete 3"]


def test_per_message_mode_reports_the_failed_message_and_keeps_the_others(db):
    class OneByOne(Widgets):
        bulk_import = False

    consume_batch(OneByOne, [{"id": i, "name": "x", "qty": -1 if i == 2 else i}
                             for i in range(5)], keys=list(range(5)), on_error="skip")
    assert sorted(rows(db)) == [0, 1, 3, 4]


def test_the_inbox_applies_a_redelivered_message_once(db):
    class Counting(Widgets):
        inbox = True

        def post_process_batch(self, conn, upserted, deleted):
            table = Counter.__table__
            got = conn.execute(sa.select(table.c.n).where(table.c.id == 1)).scalar()
            if got is None:
                conn.execute(table.insert().values(id=1, n=len(upserted)))
            else:
                conn.execute(table.update().values(n=got + len(upserted)))

    batch = [{"id": i, "name": "n", "qty": i} for i in range(10)]
    consume_batch(Counting, batch, keys=list(range(10)))
    # redelivered after a rebalance, plus two new messages
    consume_batch(Counting, [*batch, {"id": 10, "name": "n", "qty": 1},
                             {"id": 11, "name": "n", "qty": 1}], keys=list(range(12)))
    with Session(db) as s:
        assert s.get(Counter, 1).n == 12  # type: ignore[union-attr]
        inbox = s.execute(sa.text("SELECT COUNT(*) FROM deimos_inbox")).scalar()
    assert inbox == 12 and len(rows(db)) == 12


@pytest.mark.kafka
def test_through_the_broker_the_poisoned_record_is_dead_lettered_and_999_written(
        deimos_database: str, deimos_reset: None, deimos_kafka: str, deimos_topic: Any):
    """The broker loop's path: offsets, seek-and-retry of the failed message, on_error."""
    import threading
    import uuid

    from deimos.consumer import ConsumerLoop, resolve_settings
    from deimos.testing.broker import GROUP_TIMEOUTS
    from deimos_db_helpers import read_topic, wait_for

    topic, dlq = deimos_topic(), deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka}, producers={"backend": "kafka"},
                     schema={"backend": "mock"}, db={"url": deimos_database})
    engine = get_engine(deimos_database)
    create_tables(engine)
    Base.metadata.create_all(engine)

    class Source(deimos.Producer):
        key_config = "plain"

    Source.topic = topic
    payloads, keys = _thousand(poison_at=437)
    Source.publish_list(payloads, keys=keys)
    cs = resolve_settings(Widgets, topics=[topic], group_id=f"g-{uuid.uuid4().hex[:8]}",
                          on_error="dead_letter", dead_letter_topic=dlq, max_batch_size=1000,
                          retry={"attempts": 2, "backoff": 0.05}, config=GROUP_TIMEOUTS)
    loop = ConsumerLoop(Widgets, cs)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        dead = read_topic(deimos_kafka, dlq, 1, timeout=60)
        wait_for(lambda: len(rows(engine)) == 999, what="999 rows")
    finally:
        loop.stop()
        thread.join(30)
    assert [m.key() for m in dead] == [b"437"]
    assert 437 not in rows(engine)
    dispose_engines()
