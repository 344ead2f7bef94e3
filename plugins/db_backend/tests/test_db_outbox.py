"""The outbox end to end on SQLite, PostgreSQL and MariaDB, with the real broker."""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import deimos
from deimos.errors import SchemaValidationError
from deimos_db import kafka_dead_letters, kafka_topic_info, transaction
from deimos_db.producer import DbProducer, DbProducerGroup
from deimos_db_helpers import (
    ALL_DATABASES,
    count_rows,
    mock_metrics,
    per_key_sequences,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.kafka, ALL_DATABASES]

business = sa.Table("orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("note", sa.String(50)))


class Orders(deimos.Producer):
    key_config = "plain"


def _topic_info(engine: sa.Engine, topic: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(kafka_topic_info).where(
            kafka_topic_info.c.topic == topic)).one()


def test_rolled_back_transaction_leaves_no_message_and_committed_one_delivers_exactly_its(
        outbox, db, deimos_kafka, deimos_topic):
    Orders.topic = deimos_topic()
    business.create(db)
    with Session(db) as session, transaction(session):
        session.execute(business.insert().values(id=1, note="lost"))
        Orders.publish_list(["r1", "r2"], keys=["k1", "k2"])
        session.rollback()
    assert count_rows(db) == 0
    with Session(db) as session, transaction(session):
        session.execute(business.insert().values(id=2, note="kept"))
        Orders.publish("c1", key="k1", headers={"traceparent": "00-abc-01"})
        Orders.publish_list(["c2", "c3"], keys=["k2", "k3"])
        session.commit()
    # a Connection works the same way, and an Engine begins and commits for you
    with db.connect() as conn, transaction(conn):
        Orders.publish("lost-too", key="k9")
        conn.rollback()
    with transaction(db) as conn:
        conn.execute(business.insert().values(id=3, note="engine"))
        Orders.publish("c4", key="k4")
    assert count_rows(db) == 4
    assert DbProducer().process_next() == 4
    got = read_topic(deimos_kafka, Orders.topic, 4, settle=0.5)
    assert sorted(m.value() for m in got) == [b"c1", b"c2", b"c3", b"c4"]
    assert next(m for m in got if m.value() == b"c1").headers() == [
        ("traceparent", b"00-abc-01")]
    assert count_rows(db) == 0
    # counted when inserted, rolled back or not: the metric measures outbox writes
    assert mock_metrics().total("db_producer.insert") == 7
    assert mock_metrics().total("db_producer.process") == 4
    with db.connect() as conn:
        assert [r.id for r in conn.execute(sa.select(business))] == [2, 3]


def test_invalid_payload_fails_before_any_row_is_written(outbox, db, deimos_topic):
    Orders.topic = "never-created"
    with pytest.raises(SchemaValidationError), Session(db) as session, transaction(session):
        Orders.publish_list(["fine", "\ud800 not encodable"], keys=["a", "b"])
        session.commit()
    assert count_rows(db) == 0


@pytest.mark.parametrize("compaction", [False, True], ids=["plain", "compacted"])
def test_per_key_order_is_preserved_in_kafka(outbox, db, deimos_kafka, deimos_topic,
                                             compaction):
    topic = deimos_topic(partitions=3)
    outbox(batch_size=7, compact_topics=[topic] if compaction else [])
    Orders.topic = topic
    keys = [f"key-{i}" for i in range(5)]
    seq = 0
    expected: dict[bytes, list[int]] = {k.encode(): [] for k in keys}
    for _txn in range(6):
        with transaction(db):
            values, ks = [], []
            for i in range(10):
                k = keys[(seq + i * 3) % 5]
                values.append(str(seq))
                ks.append(k)
                expected[k.encode()].append(seq)
                seq += 1
            Orders.publish_list(values, keys=ks)
    with DbProducerGroup(workers=3):
        wait_for(lambda: count_rows(db) == 0, what="the outbox to drain")
    got = per_key_sequences(read_topic(deimos_kafka, topic, 60 if not compaction else 5,
                                       settle=1.0))
    for key, sent in expected.items():
        seen = got[key]
        assert seen == sorted(seen), f"{key!r} reordered: {seen}"
        if compaction:  # a subsequence that always ends with the key's last message
            assert set(seen) <= set(sent) and seen[-1] == sent[-1]
        else:
            assert seen == sent


def test_hot_topic_is_split_across_workers_keeping_per_key_order(outbox, db, deimos_kafka,
                                                                 deimos_topic):
    topic = deimos_topic(partitions=2)
    outbox(batch_size=20, split_topics={topic: 3})
    Orders.topic = topic
    n = 300
    with transaction(db):
        Orders.publish_list([str(i) for i in range(n)], keys=[f"k{i % 17}" for i in range(n)])
    with DbProducerGroup(workers=3):
        wait_for(lambda: count_rows(db) == 0, what="the outbox to drain")
    got = per_key_sequences(read_topic(deimos_kafka, topic, n))
    assert sum(len(v) for v in got.values()) == n
    for key, seen in got.items():
        assert seen == [i for i in range(n) if f"k{i % 17}".encode() == key]
    with db.connect() as conn:
        shards = conn.execute(sa.select(kafka_topic_info.c.topic, kafka_topic_info.c.locked_by,
                                        kafka_topic_info.c.last_processed_at)).all()
    # three shard locks, each worked on and released
    assert sorted(s.topic for s in shards) == [f"{topic}#{i}/3" for i in range(3)]
    assert all(s.locked_by is None and s.last_processed_at is not None for s in shards)


def test_a_message_too_large_for_the_broker_moves_to_dead_letters_and_the_rest_flow(
        outbox, db, deimos_kafka, deimos_topic):
    Orders.topic = deimos_topic()
    with transaction(db):
        Orders.publish_list(["before", "x" * 1_200_000, "after"], keys=["a", "a", "a"])
    assert DbProducer().process_next() == 3
    got = read_topic(deimos_kafka, Orders.topic, 2, settle=0.5)
    assert [m.value() for m in got] == [b"before", b"after"]
    assert count_rows(db) == 0
    with db.connect() as conn:
        dead = conn.execute(sa.select(kafka_dead_letters)).one()
    assert dead.key == b"a" and len(dead.message) == 1_200_000
    assert "MSG_SIZE_TOO_LARGE" in dead.error
    assert mock_metrics().total("db_producer.dead_letter") == 1


def test_without_dead_letters_a_too_large_message_stays_with_its_error(
        outbox, db, deimos_kafka, deimos_topic):
    outbox(dead_letter=False)
    Orders.topic = deimos_topic()
    with transaction(db):
        Orders.publish_list(["x" * 1_200_000, "after"], keys=["a", "a"])
    DbProducer().process_next()
    assert count_rows(db) == 2
    info = _topic_info(db, Orders.topic)
    assert "MSG_SIZE_TOO_LARGE" in info.error and info.retries == 1
    assert count_rows(db, "kafka_dead_letters") == 0


def test_a_failing_topic_backs_off_with_error_and_retries_recorded_while_others_flow(
        outbox, db, deimos_kafka, deimos_topic):
    # a backoff no test run outlasts, ended below by moving retry_at (no sleep to race)
    outbox(retry={"backoff": 600, "max_backoff": 600})
    good = deimos_topic()

    class Bad(deimos.Producer):
        topic = "not a valid topic!"

    Orders.topic = good
    with transaction(db):
        Bad.publish("never")
        Orders.publish_list(["g1", "g2"], keys=["a", "b"])
    worker = DbProducer()
    assert worker.process_next() == 2  # the good topic went, the bad one failed
    info = _topic_info(db, Bad.topic)
    assert info.retries == 1 and "topic" in info.error and info.locked_by is None
    assert worker.process_next() == 0  # backing off: not even tried
    assert _topic_info(db, Bad.topic).retries == 1
    past = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None) - _dt.timedelta(seconds=1)
    with db.begin() as conn:  # the backoff over
        conn.execute(kafka_topic_info.update().where(kafka_topic_info.c.topic == Bad.topic)
                     .values(retry_at=past))
    worker.process_next()
    assert _topic_info(db, Bad.topic).retries == 2
    assert count_rows(db) == 1
    assert [m.value() for m in read_topic(deimos_kafka, good, 2)] == [b"g1", b"g2"]
    assert mock_metrics().total("db_producer.error") == 2


def test_a_live_lock_is_respected_and_an_expired_one_is_taken_over(outbox, db, deimos_kafka,
                                                                   deimos_topic):
    outbox(lock_timeout=2.0, heartbeat_interval=0.5)
    Orders.topic = deimos_topic()
    with transaction(db):
        Orders.publish("m", key="a")
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    with db.begin() as conn:
        conn.execute(kafka_topic_info.insert().values(
            topic=Orders.topic, locked_by="another-worker", locked_at=now, retries=0))
    assert DbProducer().process_next() == 0
    assert count_rows(db) == 1
    with db.begin() as conn:  # the other worker died 3 s ago: its lock expired
        conn.execute(kafka_topic_info.update().values(
            locked_at=now - _dt.timedelta(seconds=3)))
    assert DbProducer().process_next() == 1
    assert _topic_info(db, Orders.topic).locked_by is None


def test_heartbeat_renews_a_held_lock_and_notices_when_it_was_taken_over(outbox, db):
    worker = DbProducer()
    with db.begin() as conn:
        conn.execute(kafka_topic_info.insert().values(topic="t", retries=0))
    assert worker._claim(["t"]) == "t"
    first = _topic_info(db, "t").locked_at
    time.sleep(0.05)
    assert worker.heartbeat()
    assert _topic_info(db, "t").locked_at > first
    with db.begin() as conn:
        conn.execute(kafka_topic_info.update().values(locked_by="thief"))
    assert not worker.heartbeat()
    assert worker._lost.is_set()


def test_pending_metrics_report_the_backlog_per_topic(outbox, db):
    from deimos_db.producer import PendingMetrics

    Orders.topic = "backlog"
    with transaction(db):
        Orders.publish_list(["a", "b", "c"], keys=["1", "2", "3"])
    with db.begin() as conn:
        conn.execute(kafka_topic_info.insert().values(topic="idle#0/2", retries=0))
    time.sleep(1.1)
    pending = PendingMetrics().report()
    assert pending["backlog"].count == 3 and pending["backlog"].max_wait >= 1.0
    # (the shared producers' librdkafka statistics are gauges too, without a topic)
    gauges = {(c[1], c[3]["topic"]): c[2] for c in mock_metrics().records
              if c[0] == "gauge" and c[1].startswith("pending_db_messages")}
    assert gauges[("pending_db_messages_count", "backlog")] == 3
    assert gauges[("pending_db_messages_max_wait", "backlog")] >= 1.0
    assert gauges[("pending_db_messages_count", "idle")] == 0


def test_postgresql_notify_wakes_an_idle_worker_before_its_poll_interval(
        outbox, db, deimos_kafka, deimos_topic):
    if db.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    outbox(poll_interval=30.0)
    Orders.topic = deimos_topic()
    with DbProducerGroup(workers=1):
        time.sleep(1.0)  # the worker found nothing and sleeps for 30 s
        start = time.monotonic()
        with transaction(db):
            Orders.publish("wake up", key="a")
        wait_for(lambda: count_rows(db) == 0, timeout=10, what="the NOTIFY wake-up")
        assert time.monotonic() - start < 5


def test_producer_reconnects_after_its_database_connections_are_killed(
        outbox, db, deimos_kafka, deimos_topic):
    kind = db.dialect.name
    if kind == "sqlite":
        pytest.skip("SQLite has no server connection to drop")
    Orders.topic = deimos_topic()
    app = f"deimos-db-{uuid.uuid4().hex[:8]}"  # only the outbox's connections get killed
    outbox(batch_size=10, retry={"backoff": 0.1})
    if kind == "postgresql":
        deimos.configure(deimos.config.get_settings(), db={
            "engine_options": {"connect_args": {"application_name": app}}})
    admin = sa.create_engine(db.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)

    def kill_others() -> int:
        with admin.connect() as conn:
            if kind == "postgresql":
                pids = conn.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :app"),
                    {"app": app}).scalars().all()
                for pid in pids:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            else:
                me = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
                pids = conn.execute(sa.text(
                    "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                    "AND id <> :me"), {"me": me}).scalars().all()
                for pid in pids:
                    with contextlib.suppress(sa.exc.OperationalError):  # it ended already
                        conn.execute(sa.text(f"KILL {int(pid)}"))
            return len(pids)

    stop = threading.Event()
    with DbProducerGroup(workers=2):
        def publish() -> None:
            i = 0
            while not stop.is_set() and i < 400:
                try:
                    with transaction(db):
                        Orders.publish_list([str(i + j) for j in range(10)],
                                            keys=[f"k{(i + j) % 7}" for j in range(10)])
                    i += 10
                except sa.exc.DBAPIError:
                    pass  # the writer's own connection was killed: that transaction rolled back
                time.sleep(0.01)

        writer = threading.Thread(target=publish)
        writer.start()
        killed = 0
        for _ in range(3):
            time.sleep(0.4)
            killed += kill_others()
        writer.join(60)
        stop.set()
        assert killed > 0
        wait_for(lambda: count_rows(db) == 0, timeout=60, what="the outbox to drain")
    got = per_key_sequences(read_topic(deimos_kafka, Orders.topic, 400, settle=0.5))
    values = sorted(v for seq in got.values() for v in seq)
    assert sorted(set(values)) == list(range(400))  # every message, at least once
    for seen in got.values():
        firsts = [v for i, v in enumerate(seen) if v not in seen[:i]]
        assert firsts == sorted(firsts)
    admin.dispose()


def test_a_dead_workers_session_lock_frees_its_topic_at_once(outbox, db):
    """PostgreSQL/MariaDB: a worker's topic lock dies with its connection, so another takes
    the topic over at once, however fresh the dead worker's lease (lock_timeout 60 s)."""
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has no session locks: the lease is the lock (tested above)")
    outbox(lock_timeout=60.0, heartbeat_interval=5.0)
    with db.begin() as conn:
        conn.execute(kafka_topic_info.insert().values(topic="t", retries=0))
    first, second = DbProducer(), DbProducer()
    assert first._claim(["t"]) == "t"
    assert second._claim(["t"]) is None  # held by a live worker
    assert first._locks is not None and first._locks._conn is not None
    postgres = db.dialect.name == "postgresql"
    session = first._locks._conn.execute(sa.text(
        "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()")).scalar()
    first._locks.close()  # its connection is gone, as when the process is SIGKILLed

    def session_gone() -> bool:
        # the server ends a closed connection's session (and frees its locks) right after
        # the close, not within it: wait for that, as a survivor's next poll would
        with db.connect() as conn:
            return not conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :s" if postgres else
                "SELECT count(*) FROM information_schema.processlist WHERE id = :s"),
                {"s": session}).scalar()

    wait_for(session_gone, timeout=5, what="the server to end the closed session")
    assert second._claim(["t"]) == "t"
    assert _topic_info(db, "t").locked_by == second.id
    assert not first.heartbeat() and first._lost.is_set()


def test_retry_backoff_doubles_with_jitter_and_never_exceeds_its_maximum(outbox):
    from deimos_db.producer import retry_backoff
    from deimos_db.settings import DbProducerSettings

    backoff = retry_backoff(DbProducerSettings(retry={"backoff": 1.0, "max_backoff": 60.0}))
    assert all(0.8 <= backoff.delay(1) <= 1.2 for _ in range(100))
    assert all(backoff.delay(7) <= 60.0 for _ in range(100))  # 64 s ± 20 % before the cap


def test_session_locks_of_two_outboxes_on_one_server_do_not_collide(outbox, db):
    """Two services whose outboxes share a server (PostgreSQL schemas of one database,
    MariaDB databases of one server) each drain their own topic "t"."""
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite has no session locks")
    from deimos.testing.databases import isolated_database
    from deimos_db import create_tables, get_engine
    from deimos_db.producer import SessionLocks

    with isolated_database(db.dialect.name if db.dialect.name == "postgresql"
                           else "mariadb") as other_url:
        other = get_engine(other_url)
        create_tables(other)
        mine, theirs = SessionLocks(db), SessionLocks(other)
        try:
            assert mine.acquire("t")
            assert theirs.acquire("t")  # another outbox: its own lock
            again = SessionLocks(db)
            assert not again.acquire("t")  # the same outbox: still exclusive
            again.close()
        finally:
            mine.close()
            theirs.close()
            other.dispose()
