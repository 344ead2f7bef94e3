"""deimos-db record benchmarks: the batch record consumer and the DB poller.

* ``record_consumer_upsert``: messages per second written into a table through
  ``RecordConsumer.consume_batch`` (batches of 1,000 already-decoded payloads, one
  topic-partition, bulk upsert in one transaction per batch) vs a raw SQLAlchemy Core bulk
  upsert of the same rows (the dialect's ``insert().on_conflict_do_update`` executed with the
  batch's rows, one transaction per batch), per database. Both start from an empty table, so
  both insert; target ratio >= 0.7.
* ``db_poller``: rows per second a time-based DB poller publishes (record producer, ``kafka``
  backend, each batch acknowledged before the poller's state is saved) from a table of
  100,000 rows (10,000 with --quick), per database. No raw counterpart: reported absolute.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Message as KafkaMessage
from run import Bench, bench
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from deimos.consumer import BatchMetadata
from deimos.testing.databases import isolated_database
from deimos_db import (
    DbPoller,
    DbPollerSettings,
    RecordConsumer,
    RecordProducer,
    create_tables,
    dispose_engines,
    get_engine,
)

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
            b.configure(producers={"backend": "kafka"}, schema={"backend": "mock"},
                        db={"url": url})
            rates = []
            for r in range(b.rounds):
                ProductProducer.topic = b.topic()
                poller = DbPoller(DbPollerSettings(
                    name=f"bench-{r}", producer_class=f"{__name__}:ProductProducer",
                    batch_size=BATCH, delay_time=0))
                start = time.perf_counter()
                status = poller.process_updates()
                rates.append(status.messages_processed / (time.perf_counter() - start))
                assert status.messages_processed == n, status
            out[kind] = {"rows_per_second": round(max(rates)), "rounds": b.rounds}
            dispose_engines()
    return out
