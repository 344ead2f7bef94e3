"""Database exactly-once through real processes: a ``deimos run`` consumer with ``inbox =
true`` (its handler writes a row and publishes through the ``db`` backend) is SIGKILLed right
after the database commit of a chosen message, before that message's Kafka offset commit;
restarted, it gets the messages after the last Kafka commit again and the inbox skips the ones
already applied; then a ``deimos db-producer`` relays the outbox. The effects table holds
every input once, and the relayed topic every message once (counted), on SQLite, PostgreSQL
and MariaDB, for a per-message and a batch consumer.

The kill point is deterministic: the test's consumer module (``app/deimos_inbox_app.py``)
subscribes to ``deimos.inbox.committed`` and SIGKILLs itself when the message at
``partition:offset`` is committed; nothing waits on time but for observable states (the
process exited, rows counted).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer, TopicPartition

from deimos.testing.broker import GROUP_TIMEOUTS
from deimos_db import deimos_inbox
from deimos_db_helpers import (
    config_file,
    count_rows,
    read_topic,
    start_producer,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]

APP_DIR = Path(__file__).parent / "app"
sys.path.insert(0, str(APP_DIR))
from deimos_inbox_app import effects  # noqa: E402

N = 300
PARTITIONS = 2
#: killed right after the database commit of this message (of 150 in its partition; mid-batch:
#: batches are up to 50)
KILL_AT = (0, 60)


def _produce(bootstrap: str, topic: str) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(N):
        p.produce(topic, str(i).encode(), key=f"k{i % 17}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def _inbox(engine: sa.Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [(int(p), int(o)) for p, o in conn.execute(sa.select(
            deimos_inbox.c.partition, deimos_inbox.c.offset))]


def _run(config: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "deimos", "--config", str(config), "run"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "PYTHONPATH": f"{APP_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env})


@pytest.mark.parametrize("deimos_database", ["sqlite", "postgresql", "mariadb"],
                         indirect=True)
@pytest.mark.parametrize("consumer", ["InboxEffects", "InboxBatchEffects"])
def test_sigkilled_after_the_db_commit_before_the_kafka_commit_each_effect_once(
        db: sa.Engine, deimos_kafka: str, deimos_topic: Any, tmp_path: Path,
        consumer: str) -> None:
    source, out = deimos_topic(partitions=PARTITIONS), deimos_topic()
    group = f"inbox-{uuid.uuid4().hex[:8]}"
    effects.create(db)
    url = db.url.render_as_string(hide_password=False)
    # stored offsets committed every 100 ms: the kill finds some committed, some not
    timeouts = ", ".join(f'"{k}" = {v}' for k, v in {
        **GROUP_TIMEOUTS, "auto.commit.interval.ms": 100}.items())
    config = config_file(tmp_path, url, deimos_kafka, extra=f"""
[producers]
backend = "db"

[runner]
shutdown_timeout = 15
restart_delay = 1

[[consumers]]
class = "deimos_inbox_app:{consumer}"
topics = ["{source}"]
group_id = "{group}"
max_batch_size = 50
max_wait_time = 0.2
config = {{ {timeouts} }}
""")
    _produce(deimos_kafka, source)
    env = {"INBOX_APP_OUT": out}
    log = tmp_path / "consumer.log"
    first = _run(config, log, {**env, "INBOX_APP_KILL_AT": f"{KILL_AT[0]}:{KILL_AT[1]}"})
    try:
        assert first.wait(120) == -signal.SIGKILL, log.read_text(errors="replace")
    finally:
        first.kill()
    at_kill = _inbox(db)
    committed = _committed(deimos_kafka, group, source)
    # the fault: the message's transaction committed, its Kafka offset did not
    assert KILL_AT in at_kill
    assert committed[KILL_AT[0]] <= KILL_AT[1], committed
    absorbed = sum(1 for p, o in at_kill if o >= max(committed[p], 0))
    assert absorbed >= 1  # the restart gets messages the inbox already holds

    log.write_text("")
    second = _run(config, log, env)
    try:
        # done when the restarted consumer has committed every offset (not merely when the
        # inbox is full: it may have been full at the kill, with every offset uncommitted)
        wait_for(lambda: _committed(deimos_kafka, group, source) == {
            p: N // PARTITIONS for p in range(PARTITIONS)}, 120, "every offset committed")
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text(errors="replace")
    finally:
        second.kill()
    text = log.read_text(errors="replace")
    if consumer == "InboxEffects":
        skipped = len(re.findall(r"is in the inbox already: skipped", text))
    else:
        skipped = sum(int(n) for n in re.findall(r"(\d+) message\(s\) of \S+ are in the inbox",
                                                 text))
    assert skipped == absorbed, text

    with db.connect() as conn:
        values = [int(v) for (v,) in conn.execute(sa.select(effects.c.value))]
    assert len(values) == N and set(values) == set(range(N))
    assert sorted(_inbox(db)) == sorted(set(_inbox(db)))
    assert count_rows(db) == N  # outbox rows: one per message, none repeated

    producer = start_producer(config)
    try:
        wait_for(lambda: count_rows(db) == 0, 90, "the outbox relayed")
        relayed = read_topic(deimos_kafka, out, N, settle=1.0)
    finally:
        producer.terminate()
        producer.wait(30)
    got = sorted(int(m.value()) for m in relayed)
    assert len(got) == N, len(got)
    assert got == list(range(N))
    kind = "mariadb" if db.dialect.name == "mysql" else db.dialect.name
    print(f"INBOX-FAULT {consumer} {kind}: killed at {KILL_AT}, committed "
          f"{committed}, inbox at kill {len(at_kill)}, absorbed {absorbed}, effects "
          f"{len(values)}, relayed {len(got)}")
