"""deimos-db benchmarks: the DB producer draining the outbox, and publishing into it.

* ``db_producer_drain``: messages per second from a pre-filled ``kafka_messages`` table to
  acknowledged-and-deleted, one DB producer worker vs a raw loop (SQLAlchemy Core select of an
  id batch, confluent-kafka produce, flush, delete by ids), per database.
* ``db_backend_publish``: messages per second published through the ``db`` backend inside a
  transaction vs a plain Core insert of the same encoded rows, per database.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from run import VALUE, Bench, bench

import deimos
from deimos.kafka import producer_config
from deimos.testing.databases import isolated_database
from deimos_db import create_tables, dispose_engines, get_engine, kafka_messages, transaction
from deimos_db.engine import utcnow
from deimos_db.producer import DbProducer

DATABASES = ("sqlite", "postgresql")
BATCH = 1000


def _rows(topic: str, n: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"topic": topic, "key": f"key-{i % 1000}".encode(), "message": VALUE.encode(),
             "partition_key": None, "key_hash": 0, "headers": None, "created_at": now}
            for i in range(n)]


def _fill(engine: sa.Engine, topic: str, n: int) -> None:
    rows = _rows(topic, n)
    with engine.begin() as conn:
        for i in range(0, n, 10_000):
            conn.execute(kafka_messages.insert(), rows[i:i + 10_000])


def _empty(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(sa.select(sa.func.count()).select_from(kafka_messages)).scalar()


@bench("db_producer_drain")
def db_producer_drain(b: Bench) -> dict[str, Any]:
    n = 10_000 if b.quick else 100_000
    out: dict[str, Any] = {"messages": n}
    for kind in DATABASES:
        with isolated_database(kind) as url:
            engine = get_engine(url)
            create_tables(engine)
            b.configure(db={"url": url, "producer": {"batch_size": BATCH}})

            # the DB producer's own librdkafka properties (its delivery timeout, a report
            # per message, no linger: core's reporting producer), one producer for every
            # round, as the worker keeps its shared producer
            sender_conf = {**producer_config(DbProducer()._kafka_settings),
                           "delivery.report.only.error": False, "linger.ms": 0}
            p = b.raw_producer(**sender_conf)

            def raw(engine: sa.Engine = engine, p: Any = p) -> float:
                topic = b.topic()
                _fill(engine, topic, n)
                b.warm_raw(p, topic)
                m = kafka_messages.c
                start = time.perf_counter()
                while True:
                    with engine.connect() as conn:
                        rows = conn.execute(sa.select(m.id, m.key, m.message)
                                            .where(m.topic == topic).order_by(m.id)
                                            .limit(BATCH)).all()
                    if not rows:
                        break
                    for r in rows:
                        while True:
                            try:
                                p.produce(topic, r.message, r.key)
                                break
                            except BufferError:
                                p.poll(0.05)
                    assert p.flush(30) == 0
                    with engine.begin() as conn:
                        conn.execute(kafka_messages.delete().where(
                            m.id.in_([r.id for r in rows])))
                return n / (time.perf_counter() - start)

            worker = DbProducer()  # one worker for every round, as a process keeps it

            def ours(engine: sa.Engine = engine, worker: DbProducer = worker) -> float:
                topic = b.topic()
                # warm, as the raw side: one row of the round's topic drained before the clock
                _fill(engine, topic, 1)
                while not _empty(engine):
                    worker.process_next()
                _fill(engine, topic, n)
                start = time.perf_counter()
                while not _empty(engine):
                    worker.process_next()
                return n / (time.perf_counter() - start)

            out[kind] = {**b.alternate(raw, ours), "messages": n}
            dispose_engines()
    return out


@bench("db_backend_publish")
def db_backend_publish(b: Bench) -> dict[str, Any]:
    n = 10_000 if b.quick else 100_000
    per_txn = 500
    values = [VALUE] * n
    keys = [f"key-{i % 1000}" for i in range(n)]
    out: dict[str, Any] = {"messages": n, "per_transaction": per_txn}
    for kind in DATABASES:
        with isolated_database(kind) as url:
            engine = get_engine(url)
            create_tables(engine)
            b.configure(producers={"backend": "db"}, db={"url": url})

            class Outbox(deimos.Producer):
                topic = "bench-publish"
                key_config = "plain"

            def raw(engine: sa.Engine = engine) -> float:
                start = time.perf_counter()
                for i in range(0, n, per_txn):
                    rows = [{"topic": "bench-publish", "key": k.encode(),
                             "message": v.encode(), "partition_key": None, "key_hash": 0,
                             "headers": None, "created_at": utcnow()}
                            for v, k in zip(values[i:i + per_txn], keys[i:i + per_txn])]
                    with engine.begin() as conn:
                        conn.execute(kafka_messages.insert(), rows)
                return n / (time.perf_counter() - start)

            def ours(engine: sa.Engine = engine) -> float:
                start = time.perf_counter()
                for i in range(0, n, per_txn):
                    with transaction(engine):
                        Outbox.publish_list(values[i:i + per_txn], keys=keys[i:i + per_txn])
                return n / (time.perf_counter() - start)

            out[kind] = {**b.alternate(raw, ours), "messages": n}
            dispose_engines()
    return out
