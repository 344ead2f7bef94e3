"""Nothing is lost: a stopped broker, a SIGKILLed DB producer, two DB producer processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import deimos
from deimos.testing.broker import EmbeddedBroker, create_topic
from deimos_db import kafka_topic_info, transaction
from deimos_db.producer import DbProducer
from deimos_db_helpers import (
    ALL_DATABASES,
    FAST,
    config_file,
    count_rows,
    mock_metrics,
    per_key_sequences,
    read_topic,
    start_producer,
    started_workers,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, ALL_DATABASES]


class Events(deimos.Producer):
    key_config = "plain"


def _publish(engine: sa.Engine, n: int, keys: int, start: int = 0, per_txn: int = 50,
             topic: str | None = None) -> None:
    # a producer class per topic: a class resolves its topic once per configuration
    producer = Events if topic is None else type("Events", (Events,), {"topic": topic})
    for i in range(start, start + n, per_txn):
        with transaction(engine):
            producer.publish_list([str(j) for j in range(i, min(i + per_txn, start + n))],
                                keys=[f"k{j % keys}" for j in range(i, min(i + per_txn,
                                                                            start + n))])


def _assert_all_delivered_in_key_order(messages: list[Any], n: int, keys: int) -> None:
    got = per_key_sequences(messages)
    assert {int(m.value()) for m in messages} == set(range(n)), "a message was lost"
    for key, seen in got.items():
        # at least once: a resent batch may repeat messages, but a key's first deliveries
        # are in order
        firsts = [v for i, v in enumerate(seen) if v not in seen[:i]]
        assert firsts == sorted(firsts), f"{key!r} reordered"


def _configure(broker: EmbeddedBroker, db: sa.Engine, **producer: Any) -> None:
    """deimos on ``broker`` and ``db``, fast DB producer timings, mock metrics."""
    deimos.configure(kafka={"bootstrap_servers": broker.bootstrap_servers},
                     producers={"backend": "db"}, metrics={"providers": ["mock"]},
                     db={"url": db.url.render_as_string(hide_password=False),
                         "producer": {**FAST, **producer}})


def _worker_that_delivered(broker: EmbeddedBroker, db: sa.Engine, n: int,
                           **producer: Any) -> DbProducer:
    """A DB producer worker that has delivered ``n`` rows to a new topic on ``broker``."""
    Events.topic = create_topic(broker.bootstrap_servers)
    _configure(broker, db, **producer)
    _publish(db, n, 3)
    worker = DbProducer()
    assert worker.process_next() == n
    return worker


def test_rows_stay_while_the_broker_is_down_and_are_all_delivered_after_it_restarts(
        db: sa.Engine, tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    try:
        worker = _worker_that_delivered(broker, db, 20, delivery_timeout=1.5,
                                        retry={"backoff": 0.1, "max_backoff": 0.1})
        topic = Events.topic
        broker.stop()
        _publish(db, 30, 3, start=20)
        assert worker.process_next() == 0  # the batch timed out: every row kept
        assert count_rows(db) == 30
        with db.connect() as conn:
            info = conn.execute(sa.select(kafka_topic_info)).one()
        assert info.retries == 1 and info.error
        broker.start()  # same port; memory storage, so the topic is made again
        create_topic(broker.bootstrap_servers, topic)
        time.sleep(0.2)
        wait_for(lambda: worker.process_next() or count_rows(db) == 0, timeout=30,
                 what="delivery after the restart")
        wait_for(lambda: count_rows(db) == 0, timeout=30, what="every row delivered")
        got = read_topic(broker.bootstrap_servers, topic, 30)
        assert sorted(int(m.value()) for m in got) == list(range(20, 50))
    finally:
        broker.stop()


def test_sigkill_mid_batch_then_restart_delivers_every_row_at_least_once(
        db: sa.Engine, tmp_path: Path) -> None:
    # No race over how far the producer got before the kill: the first batch is waited for
    # until it is delivered, then the broker is frozen (SIGSTOP) so nothing more can be
    # delivered, and the producer is killed holding the rest.
    broker = EmbeddedBroker().start()
    proc = None
    try:
        topic = create_topic(broker.bootstrap_servers)
        url = db.url.render_as_string(hide_password=False)
        deimos.configure(producers={"backend": "db"}, db={"url": url})
        Events.topic = topic
        n, first = 3000, 100
        config = config_file(tmp_path, url, broker.bootstrap_servers, batch_size=100,
                             lock_timeout=2.0, heartbeat_interval=0.5)
        proc = start_producer(config)
        _publish(db, first, 11)
        wait_for(lambda: count_rows(db) == 0, timeout=60, what="the first batch")
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            _publish(db, n - first, 11, start=first, per_txn=500)
            wait_for(lambda: _locked_by(db, topic) is not None, timeout=30,
                     what="the producer to hold the topic")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert count_rows(db) == n - first  # killed mid-run: nothing of the rest deleted
        proc = start_producer(config)  # takes the dead worker's topic over once its lock expires
        wait_for(lambda: count_rows(db) == 0, timeout=60, what="the restarted producer")
        proc.terminate()
        assert proc.wait(20) == 0
        proc = None
        _assert_all_delivered_in_key_order(
            read_topic(broker.bootstrap_servers, topic, n, settle=0.5), n, 11)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        broker.stop()


def _locked_by(engine: sa.Engine, topic: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(kafka_topic_info.c.locked_by)
                            .where(kafka_topic_info.c.topic == topic)).scalar()


def test_two_producer_processes_deliver_everything_in_order_without_sharing_a_topic(
        db: sa.Engine, deimos_kafka: str, tmp_path: Path) -> None:
    topics = [create_topic(deimos_kafka) for _ in range(3)]
    hot = create_topic(deimos_kafka, partitions=3)
    url = db.url.render_as_string(hide_password=False)
    deimos.configure(producers={"backend": "db"}, db={"url": url})
    config = config_file(tmp_path, url, deimos_kafka, batch_size=50)
    config.write_text(config.read_text() + f'\n[db.producer.split_topics]\n"{hot}" = 4\n')
    logs = [tmp_path / "producer-1.log", tmp_path / "producer-2.log"]
    procs = [start_producer(config, workers=2, log=log) for log in logs]
    n = 600
    try:
        # both processes up (signal handlers installed) before any row exists, so both
        # take part and neither is still importing when it is asked to stop
        wait_for(lambda: all(started_workers(log) == 2 for log in logs), timeout=60,
                 what="both DB producer processes to start")
        for topic in [*topics, hot]:
            _publish(db, n, 7, topic=topic)
        wait_for(lambda: count_rows(db) == 0, timeout=90, what="both processes to drain")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(20) == 0
    for topic in topics:
        # one partition, not split: any two workers sharing the topic would interleave
        # batches and break the global id order Kafka holds
        values = [int(m.value()) for m in read_topic(deimos_kafka, topic, n)]
        assert values == list(range(n)), topic
    got = read_topic(deimos_kafka, hot, n)
    assert len(got) == n
    _assert_all_delivered_in_key_order(got, n, 7)


def test_a_batch_waiting_on_a_dead_broker_says_so_within_seconds(
        db: sa.Engine, caplog: pytest.LogCaptureFixture) -> None:
    """A log line, the db_producer.broker_error metric and kafka_topic_info.error while the
    batch still waits (before its delivery_timeout could fail it)."""
    broker = EmbeddedBroker().start()
    try:
        delivery_timeout = 4.0
        worker = _worker_that_delivered(broker, db, 10, delivery_timeout=delivery_timeout)
        mock_metrics().clear()
        broker.kill()
        _publish(db, 10, 3, start=10)
        waiting = threading.Thread(target=worker.process_next)
        started = time.monotonic()
        waiting.start()

        def reported() -> bool:
            with db.connect() as conn:
                error = conn.execute(sa.select(kafka_topic_info.c.error)).scalar()
            return bool(error) and mock_metrics().total("db_producer.broker_error") >= 1

        wait_for(reported, delivery_timeout, "the error to be reported")
        assert time.monotonic() - started < delivery_timeout  # the batch is still waiting
        assert any("no acknowledgement yet" in r.getMessage() for r in caplog.records)
        waiting.join(delivery_timeout + 10)
        assert count_rows(db) == 10  # and nothing was lost
    finally:
        broker.kill()
