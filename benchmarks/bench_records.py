"""deimos-db record benchmarks: the batch record consumer and the DB poller.

* ``record_consumer_upsert``: messages per second written into a table through
  ``RecordConsumer.consume_batch`` (batches of 1,000 already-decoded payloads, one
  topic-partition, bulk upsert in one transaction per batch) vs a raw SQLAlchemy Core bulk
  upsert of the same rows (the dialect's ``insert().on_conflict_do_update`` executed with the
  batch's rows, one transaction per batch), per database. Both start from an empty table, so
  both insert; target ratio >= 0.7.
* ``db_poller``: rows per second a time-based DB poller publishes (record producer, ``kafka``
  backend, ``mock`` schema backend, batches of 1,000, each acknowledged before the poller's
  position is saved) from a table of 100,000 rows (10,000 with --quick), per database, vs the
  loop a user writes without deimos for the same work: a SQLAlchemy Core select of the next
  batch ordered by ``(updated_at, id)`` after the last ``(updated_at, id)`` sent and up to
  now, each row's payload (every column, the timestamp as ISO text) and key encoded as the
  ``mock`` backend encodes them (``json.dumps(..., sort_keys=True, default=str)``), one
  ``produce`` per row, ``flush`` (the batch acknowledged), then the position saved by an
  UPDATE of its row in one transaction. Both sides warm (the raw producer sends one
  acknowledged message, deimos one synchronous publish of a loaded row, each to the round's
  topic; each side's position row exists before its clock) and each round's topic verified
  to hold exactly the rows plus the warm-up message. Target ratio >= 0.8.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Message as KafkaMessage
from run import Bench, Run, bench, timed
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from deimos.consumer import BatchMetadata
from deimos.testing.databases import isolated_database
from deimos_db import (
    DbPoller,
    DbPollerSettings,
    RecordConsumer,
    RecordProducer,
    create_tables,
    deimos_poll_info,
    dispose_engines,
    get_engine,
)
from deimos_db.poller import EPOCH

DATABASES = ("sqlite", "postgresql")
BATCH = 1000


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "bench_products"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    qty: Mapped[int] = mapped_column(sa.Integer)
    price: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime)


class ProductConsumer(RecordConsumer):
    topic = "bench-products"
    group_id = "bench"
    model = Product


class ProductProducer(RecordProducer):
    topic = "bench-products"
    key_config = "plain"
    model = Product


def _raw_upsert(dialect: str) -> Any:
    table = Product.__table__
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={c: stmt.excluded[c] for c in ("name", "qty", "price", "updated_at")})


def _clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(Product.__table__.delete())


@bench("record_consumer_upsert")
def record_consumer_upsert(b: Bench) -> dict[str, Any]:
    n = 20_000 if b.quick else 100_000
    now = _dt.datetime(2024, 1, 1)
    payloads = [{"id": i, "name": f"product {i}", "qty": i % 100, "price": i / 10,
                 "updated_at": now} for i in range(n)]
    batches = []
    for start in range(0, n, BATCH):
        chunk = payloads[start:start + BATCH]
        msgs = [KafkaMessage(topic="bench-products", partition=0, offset=start + i,
                             key=str(p["id"]).encode(), value=b"") for i, p in enumerate(chunk)]
        batches.append((chunk, msgs, [p["id"] for p in chunk]))
    out: dict[str, Any] = {"messages": n, "batch": BATCH}
    for kind in DATABASES:
        with isolated_database(kind) as url:
            engine = get_engine(url)
            create_tables(engine)
            Base.metadata.create_all(engine)
            b.configure(db={"url": url})
            stmt = _raw_upsert(engine.dialect.name)

            def raw(engine: sa.Engine = engine, stmt: Any = stmt) -> float:
                _clear(engine)
                start = time.perf_counter()
                for chunk, _msgs, _keys in batches:
                    with engine.begin() as conn:
                        conn.execute(stmt, chunk)
                return n / (time.perf_counter() - start)

            consumer = ProductConsumer()  # one per process, as the runner makes it

            def ours(engine: sa.Engine = engine, consumer: Any = consumer) -> float:
                _clear(engine)
                start = time.perf_counter()
                for chunk, msgs, keys in batches:
                    consumer.consume_batch(list(chunk), BatchMetadata(msgs, keys,
                                                                      "bench-products", 0))
                return n / (time.perf_counter() - start)

            out[kind] = {**b.alternate(raw, ours), "messages": n}
            dispose_engines()
    return out


@bench("db_poller")
def db_poller(b: Bench) -> dict[str, Any]:
    n = 10_000 if b.quick else 100_000
    now = _dt.datetime(2024, 1, 1)
    rows = [{"id": i, "name": f"product {i}", "qty": i % 100, "price": i / 10,
             "updated_at": now + _dt.timedelta(milliseconds=i // 10)} for i in range(n)]
    out: dict[str, Any] = {"rows": n, "batch": BATCH}
    for kind in DATABASES:
        with isolated_database(kind) as url:
            engine = get_engine(url)
            create_tables(engine)
            Base.metadata.create_all(engine)
            with engine.begin() as conn:
                for start in range(0, n, 10_000):
                    conn.execute(Product.__table__.insert(), rows[start:start + 10_000])
                # what a polled table has (docs/records.md): without it every batch scans
                # and sorts the rest of the table, on both sides alike
                conn.execute(sa.text(
                    "CREATE INDEX ix_bench_products_poll ON bench_products (updated_at, id)"))
            b.configure(producers={"backend": "kafka"}, schema={"backend": "mock"},
                        db={"url": url})
            p = b.raw_producer()

            def raw(engine: sa.Engine = engine, p: Any = p) -> Run:
                topic = b.topic()
                b.warm_raw(p, topic)
                name = f"raw-{uuid.uuid4().hex[:8]}"
                with engine.begin() as conn:  # the position row, as the poller's exists
                    conn.execute(deimos_poll_info.insert().values(
                        poller=name, last_sent=EPOCH, last_sent_id=0, batches_errored=0))
                run = timed(n, lambda: _raw_poll(engine, p, topic, name))
                b.verify_count(topic, n + 1)
                return run

            def ours(engine: sa.Engine = engine) -> Run:
                topic = ProductProducer.topic = b.topic()
                poller = DbPoller(DbPollerSettings(
                    name=f"bench-{uuid.uuid4().hex[:8]}",
                    producer_class=f"{__name__}:ProductProducer", batch_size=BATCH,
                    delay_time=0))
                poller.poll_info()  # its position row, made before the clock
                with Session(engine) as session:  # warm: one acknowledged publish of a row
                    ProductProducer.send_events([session.get(Product, 0)], sync=True)
                statuses: list[Any] = []
                run = timed(n, lambda: statuses.append(poller.process_updates()))
                assert statuses[0].messages_processed == n, statuses[0]
                b.verify_count(topic, n + 1)
                return run

            out[kind] = {**b.alternate(raw, ours, producer_config=b.shown_config()),
                         "messages": n}
            dispose_engines()
    return out


def _raw_poll(engine: sa.Engine, p: Any, topic: str, name: str, delay: float = 0.0) -> None:
    """What the poller does, written by hand: select the batch after the last position (up to
    now - delay), encode and produce each row, wait for the batch's acknowledgement, record the
    position in one transaction; until a batch comes back short."""
    t = Product.__table__
    ts, id_ = t.c.updated_at, t.c.id
    pos = deimos_poll_info.c
    failures: list[Any] = []

    def failed(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(err)

    produce, poll, dumps = p.produce, p.poll, json.dumps
    last_ts, last_id = EPOCH, 0
    time_to = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None) - _dt.timedelta(
        seconds=delay)
    while True:
        with engine.connect() as conn:
            batch = conn.execute(
                # (ts, id) > (last_ts, last_id) in the form the databases walk the index for
                # (a bare OR of the two cases makes SQLite and PostgreSQL sort the rest)
                sa.select(t).where(ts >= last_ts, sa.or_(ts > last_ts, id_ > last_id),
                                   ts <= time_to)
                .order_by(ts, id_).limit(BATCH)).all()
        if not batch:
            break
        for r in batch:
            payload = {"id": r.id, "name": r.name, "qty": r.qty, "price": r.price,
                       "updated_at": r.updated_at.isoformat()}
            value = dumps(payload, sort_keys=True, default=str).encode()
            key = dumps(r.id, sort_keys=True, default=str).encode()
            while True:
                try:
                    produce(topic, value, key, on_delivery=failed)
                    break
                except BufferError:
                    poll(0.005)
        assert p.flush(30) == 0 and not failures, failures
        last_ts, last_id = batch[-1].updated_at, batch[-1].id
        with engine.begin() as conn:
            conn.execute(deimos_poll_info.update().where(pos.poller == name).values(
                last_sent=last_ts, last_sent_id=last_id))
        if len(batch) < BATCH:
            break
