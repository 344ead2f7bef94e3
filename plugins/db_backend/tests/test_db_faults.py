"""Fault injection: the outbox keeps its promises with the broker SIGKILLed and restarted
mid-drain, DB producers SIGKILLed, and a message the client refuses.

Marked ``faults`` (run them alone with ``pytest -m faults``, leave them out with
``-m "not faults"``); CI runs them with the rest. Every scenario drives real ``deimos
db-producer`` processes against an embedded broker of its own (or the shared one when the
broker is not the fault), prints one line ``FAULTS {json}`` with what was sent, received,
duplicated, lost and reordered per key (also appended to ``$DEIMOS_FAULTS_REPORT`` when
set), and asserts nothing lost, no per-key order violation and progress within a stated time
after the fault cleared.

The matrix is chosen for time, not completeness: each broker case on one database, the
session-lock takeover on PostgreSQL and MariaDB, the lease fallback on SQLite.

The embedded broker keeps everything in memory: a restarted broker has no topics and none of
the messages it held. So a broker case reads what the broker held *before* killing it (with
the DB producer SIGSTOPped, until every row the DB producer deleted, i.e. every acknowledged
message, was read), re-creates the topic after the restart, and reads the rest from the new
broker. Races are controlled by observable states (rows deleted, locks held, processes
stopped); the only sleep is the outage itself, whose length is the fault under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

import deimos
from deimos.testing.broker import EmbeddedBroker, create_topic
from deimos_db import kafka_dead_letters, kafka_messages, kafka_topic_info, transaction
from deimos_db_helpers import config_file, count_rows, start_producer, started_workers, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]

N, KEYS = 2000, 50
#: the DB producer's delivery_timeout in these cases (librdkafka's message.timeout.ms)
DELIVERY_TIMEOUT = 4.0
SHORT_OUTAGE, LONG_OUTAGE = 2.0, 6.0
#: promised: rows flow again this soon after the broker is back ...
PROGRESS_AFTER_BROKER = 10.0
#: ... and after a DB producer's death, on PostgreSQL and MariaDB (session locks)
TAKEOVER_SESSION_LOCK = 5.0

_M = kafka_messages.c
_T = kafka_topic_info.c


class Events(deimos.Producer):
    key_config = "plain"


def _publish(engine: sa.Engine, topic: str, start: int, n: int, keys: int = KEYS,
             per_txn: int = 100) -> None:
    producer = type("FaultEvents", (Events,), {"topic": topic})
    for i in range(start, start + n, per_txn):
        values = range(i, min(i + per_txn, start + n))
        with transaction(engine):
            producer.publish_list([str(j) for j in values], keys=[f"k{j % keys}" for j in values])


def _remaining(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return {int(r[0]) for r in conn.execute(sa.select(_M.message))}


class Reader:
    """Reads a one-partition topic from its start, keeping (key, value) in offset order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer({"bootstrap.servers": bootstrap,
                                       "group.id": f"faults-{uuid.uuid4().hex}",
                                       "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.got: list[tuple[bytes, int]] = []

    def values(self) -> set[int]:
        return {v for _, v in self.got}

    def through_mark(self, bootstrap: str, topic: str, timeout: float = 30.0) -> None:
        """Read everything the broker holds now: a mark is produced (and acknowledged)
        behind it, then read until the mark. Any message acknowledged before is ahead."""
        p = Producer({"bootstrap.servers": bootstrap})
        p.produce(topic, b"-1", b"mark")
        assert p.flush(10) == 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.consumer.consume(500, 0.2)
            done = any(m.error() is None and m.value() == b"-1" for m in batch)
            self.got.extend((m.key(), int(m.value())) for m in batch
                            if m.error() is None and m.value() != b"-1")
            if done:
                return
        raise AssertionError("the mark was not read back")

    def until(self, want: set[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not want <= self.values() and time.monotonic() < deadline:
            self.consume(0.2)

    def consume(self, wait: float) -> None:
        self.got.extend((m.key(), int(m.value())) for m in self.consumer.consume(500, wait)
                        if m.error() is None)

    def close(self) -> list[tuple[bytes, int]]:
        self.consume(0.3)  # anything after what we waited for: only adds duplicates
        self.consumer.close()
        return self.got


def _order_violations(received: list[tuple[bytes, int]]) -> int:
    """Per key, a first delivery of a value lower than one delivered before it (a resent
    batch repeats values: duplicates, not violations)."""
    violations = 0
    seen: set[int] = set()
    highest: dict[bytes, int] = {}
    for key, value in received:
        if value in seen:
            continue
        seen.add(value)
        if value < highest.get(key, -1):
            violations += 1
        highest[key] = max(highest.get(key, -1), value)
    return violations


def _summary(scenario: str, engine: sa.Engine, expected: set[int],
             received: list[tuple[bytes, int]], **extra: Any) -> dict[str, Any]:
    distinct = {v for _, v in received}
    kind = "mariadb" if getattr(engine.dialect, "is_mariadb", False) else engine.dialect.name
    out = {"scenario": scenario, "db": kind, "sent": len(expected),
           "received": len(received), "duplicates": len(received) - len(distinct),
           "lost": len(expected - distinct), "unexpected": len(distinct - expected),
           "order_violations": _order_violations(received), **extra}
    line = "FAULTS " + json.dumps(out)
    print(line)
    report = os.environ.get("DEIMOS_FAULTS_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(line + "\n")
    assert out["lost"] == 0 and out["unexpected"] == 0, out
    assert out["order_violations"] == 0, out
    return out


def _recreate_topic(bootstrap: str, topic: str) -> None:
    """The restarted broker (memory storage) has no topics: make the test's again (the DB
    producer may have had it auto-created first)."""
    try:
        create_topic(bootstrap, topic)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _topic_error(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(kafka_topic_info)
                            .where(_T.error.is_not(None))).scalar() != 0


@pytest.mark.parametrize(("deimos_database", "outage", "idempotence"), [
    ("postgresql", SHORT_OUTAGE, True),
    ("mariadb", SHORT_OUTAGE, False),
    ("sqlite", LONG_OUTAGE, True),
    ("postgresql", LONG_OUTAGE, False),
], indirect=["deimos_database"], ids=["short-idempotent-pg", "short-plain-mariadb",
                                      "long-idempotent-sqlite", "long-plain-pg"])
def test_broker_sigkilled_and_restarted_mid_drain(db: sa.Engine, tmp_path: Path,
                                                  outage: float, idempotence: bool) -> None:
    broker = EmbeddedBroker().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bootstrap = broker.bootstrap_servers
        topic = create_topic(bootstrap)
        url = db.url.render_as_string(hide_password=False)
        deimos.configure(producers={"backend": "db"}, db={"url": url})
        half = N // 2
        _publish(db, topic, 0, half)
        config = config_file(tmp_path, url, bootstrap,
                             extra=f"[producers]\nidempotence = {str(idempotence).lower()}\n",
                             batch_size=50, delivery_timeout=DELIVERY_TIMEOUT)
        log = tmp_path / "producer.log"
        proc = start_producer(config, log=log)
        procs.append(proc)
        wait_for(lambda: count_rows(db) < half, 60, "the first batches")
        os.kill(proc.pid, signal.SIGSTOP)
        # the DB producer stopped: read all the broker holds (every row it deleted, and any
        # delete still under way, was acknowledged) before the broker dies with it
        before = Reader(bootstrap, topic)
        before.through_mark(bootstrap, topic)
        assert set(range(half)) - _remaining(db) <= before.values()
        left_at_kill = count_rows(db)
        before_got = before.close()  # before the broker goes: no client left retrying it
        broker.kill()
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGCONT)
        _publish(db, topic, half, N - half)  # written while the broker is down
        try:
            wait_for(lambda: _topic_error(db), max(0.5, outage - 0.5 - (time.monotonic() - killed)),
                     "kafka_topic_info.error")
            error_after: float | None = round(time.monotonic() - killed, 2)
        except AssertionError:
            error_after = None
        time.sleep(max(0.0, outage - (time.monotonic() - killed)))  # the outage: the fault
        broker.start()
        _recreate_topic(bootstrap, topic)
        back = time.monotonic()
        at_back = count_rows(db)
        wait_for(lambda: count_rows(db) < at_back, PROGRESS_AFTER_BROKER + 20,
                 "progress after the broker came back")
        progress = time.monotonic() - back
        wait_for(lambda: count_rows(db) == 0, 60, "every row delivered")
        drained = time.monotonic() - back
        after = Reader(bootstrap, topic)
        after.until(set(range(N)) - {v for _, v in before_got})
        text = log.read_text(errors="replace")
        after_got = after.close()
        if os.environ.get("FAULTS_DEBUG"):
            Path(os.environ["FAULTS_DEBUG"]).write_text(json.dumps(
                {"before": [(k.decode(), v) for k, v in before_got],
                 "after": [(k.decode(), v) for k, v in after_got], "log": text}))
        _summary(f"broker-{'short' if outage < DELIVERY_TIMEOUT else 'long'}-outage",
                 db, set(range(N)), before_got + after_got,
                 idempotence=idempotence, outage_s=round(back - killed, 2),
                 delivery_timeout_s=DELIVERY_TIMEOUT, left_at_kill=left_at_kill,
                 error_recorded_after_s=error_after, progress_after_back_s=round(progress, 2),
                 drained_after_back_s=round(drained, 2),
                 producer_replaced=text.count("replacing the producer")
                 + text.count("hit a fatal error"))
        if outage < DELIVERY_TIMEOUT:
            assert back - killed < DELIVERY_TIMEOUT, "the short outage must stay short"
        else:
            assert back - killed > DELIVERY_TIMEOUT
            assert error_after is not None, "no error recorded while the broker was away"
        assert progress <= PROGRESS_AFTER_BROKER, progress
    finally:
        _stop(procs)
        broker.kill()


def _worker_ids(log: Path) -> list[str]:
    return re.findall(r"DB producer (\S+) started on ", log.read_text(errors="replace"))


def _held_by(engine: sa.Engine, worker: str) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(_T.topic).where(_T.locked_by == worker))]


def _sigkill_holder(engine: sa.Engine, proc: subprocess.Popen[bytes], worker: str) -> str:
    """SIGKILL ``proc`` while its worker holds a topic lock: stopped first, and killed only
    when the lock is still its own; the name of that topic (or shard)."""
    wait_for(lambda: count_rows(engine) < N, 60, "the first batches (mid-drain)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        wait_for(lambda: _held_by(engine, worker), 60, "the victim to hold a lock")
        os.kill(proc.pid, signal.SIGSTOP)
        held = _held_by(engine, worker)
        if held:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return held[0]
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError("the victim never held a lock")


@pytest.mark.parametrize("deimos_database", ["postgresql", "mariadb"], indirect=True)
def test_two_producers_one_sigkilled_survivor_takes_over_within_seconds(
        db: sa.Engine, deimos_kafka: str, tmp_path: Path) -> None:
    topic = create_topic(deimos_kafka)
    url = db.url.render_as_string(hide_password=False)
    deimos.configure(producers={"backend": "db"}, db={"url": url})
    # lock_timeout 60 s: a takeover within seconds comes from the session lock, not the lease
    config = config_file(tmp_path, url, deimos_kafka, batch_size=20, lock_timeout=60.0,
                         heartbeat_interval=5.0)
    config.write_text(config.read_text() + f'\n[db.producer.split_topics]\n"{topic}" = 4\n')
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    procs = [start_producer(config, log=log) for log in logs]
    try:
        wait_for(lambda: all(started_workers(log) == 1 for log in logs), 60,
                 "both DB producer processes to start")
        victim = _worker_ids(logs[0])[0]
        _publish(db, topic, 0, N)
        shard = _sigkill_holder(db, procs[0], victim)
        killed = time.monotonic()
        wait_for(lambda: _owner(db, shard) != victim,
                 TAKEOVER_SESSION_LOCK + 30, "the survivor to take the dead worker's shard")
        takeover = time.monotonic() - killed
        wait_for(lambda: count_rows(db) == 0, 60, "the survivor to drain everything")
        reader = Reader(deimos_kafka, topic)
        reader.until(set(range(N)))
        _summary("two-producers-one-sigkilled", db, set(range(N)), reader.close(),
                 lock_timeout_s=60.0, takeover_s=round(takeover, 2))
        assert takeover <= TAKEOVER_SESSION_LOCK, takeover
    finally:
        _stop(procs)


def _owner(engine: sa.Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(_T.locked_by).where(_T.topic == name)).scalar())


def test_producer_sigkilled_and_restarted_takes_over_after_the_lease(
        db: sa.Engine, deimos_kafka: str, tmp_path: Path) -> None:
    """SQLite has no session locks: the restarted producer waits out the dead one's lease."""
    lock_timeout = 3.0
    topic = create_topic(deimos_kafka)
    url = db.url.render_as_string(hide_password=False)
    deimos.configure(producers={"backend": "db"}, db={"url": url})
    config = config_file(tmp_path, url, deimos_kafka, batch_size=20, lock_timeout=lock_timeout,
                         heartbeat_interval=0.5)
    log = tmp_path / "first.log"
    procs = [start_producer(config, log=log)]
    try:
        wait_for(lambda: started_workers(log) == 1, 60, "the DB producer to start")
        _publish(db, topic, 0, N)
        _sigkill_holder(db, procs[0], _worker_ids(log)[0])
        killed = time.monotonic()
        at_kill = count_rows(db)
        procs.append(start_producer(config))
        wait_for(lambda: count_rows(db) < at_kill, lock_timeout + 30, "the restarted producer")
        takeover = time.monotonic() - killed
        wait_for(lambda: count_rows(db) == 0, 60, "every row delivered")
        reader = Reader(deimos_kafka, topic)
        reader.until(set(range(N)))
        _summary("producer-sigkilled-restarted", db, set(range(N)), reader.close(),
                 lock_timeout_s=lock_timeout, left_at_kill=at_kill,
                 takeover_s=round(takeover, 2))
        # the lease expires lock_timeout after the last heartbeat; a new process needs a
        # couple of seconds to start
        assert takeover <= lock_timeout + 5, takeover
    finally:
        _stop(procs)


BIG = 2_000_000  # > message.max.bytes (1,000,000): refused by the client at produce()


@pytest.mark.parametrize(("deimos_database", "dead_letter"), [
    ("postgresql", False), ("mariadb", True)], indirect=["deimos_database"],
    ids=["dead_letter-off-pg", "dead_letter-on-mariadb"])
def test_a_refused_message_keeps_its_key_in_order(db: sa.Engine, deimos_kafka: str,
                                                  tmp_path: Path, dead_letter: bool) -> None:
    topic = create_topic(deimos_kafka)
    url = db.url.render_as_string(hide_password=False)
    deimos.configure(producers={"backend": "db"}, db={"url": url})
    n, keys, big_at = 200, 10, 50  # value 50 (key k0) is followed by 60, 70, ... of k0
    producer = type("FaultEvents", (Events,), {"topic": topic})
    with transaction(db):
        for i in range(n):
            producer.publish(str(i) if i != big_at else "x" * BIG, key=f"k{i % keys}")
    config = config_file(tmp_path, url, deimos_kafka, batch_size=1000, dead_letter=dead_letter)
    procs = [start_producer(config)]
    try:
        if dead_letter:
            wait_for(lambda: count_rows(db) == 0, 60, "every row sent or dead-lettered")
            expected = set(range(n)) - {big_at}
            assert count_rows(db, "kafka_dead_letters") == 1
        else:
            # three retry cycles of the blocked topic: followers must not go in any of them
            wait_for(lambda: _retries(db) >= 3, 60, "three retries of the blocked topic")
            expected = {i for i in range(n) if i % keys != big_at % keys or i < big_at}
        reader = Reader(deimos_kafka, topic)
        reader.until(expected)
        got = reader.close()
        held = count_rows(db)
        with db.connect() as conn:
            dead = conn.execute(sa.select(sa.func.count()).select_from(kafka_dead_letters)
                                ).scalar()
        # the big value counts as a value too when it arrives (it must not)
        _summary(f"refused-dead_letter-{'on' if dead_letter else 'off'}", db, expected,
                 [(k, v) for k, v in got], held_in_table=held, dead_letters=dead,
                 retries=_retries(db))
        assert len(got) == len(expected), "a message was sent twice"
        if not dead_letter:
            assert held == len(set(range(n)) - expected)  # the refused row and its followers
    finally:
        _stop(procs)


def _retries(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(_T.retries))).scalar() or 0)
