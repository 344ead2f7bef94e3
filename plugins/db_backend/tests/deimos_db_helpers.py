"""Helpers of deimos-db's tests (a unique module name: pytest's prepend import mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

from deimos.plugins import get_registry
from deimos.testing.databases import KINDS

#: every test module that takes ``db`` runs on the three databases
ALL_DATABASES = pytest.mark.parametrize("deimos_database", KINDS, indirect=True)

FAST = {"poll_interval": 0.05, "heartbeat_interval": 0.5, "lock_timeout": 5.0,
        "retry": {"backoff": 0.2, "max_backoff": 1.0}, "delivery_timeout": 5.0,
        "metrics_interval": 0.2}


def batch_metadata(topic: str, keys: list[Any]) -> Any:
    """The metadata of a batch of one partition, offsets 0.., for calling a record consumer's
    ``consume_batch`` directly (to see what it raises and keeps in ``failures``)."""
    from confluent_kafka import Message as KafkaMessage

    from deimos.consumer import BatchMetadata

    msgs = [KafkaMessage(topic=topic, partition=0, offset=i, key=str(k).encode(),
                         value=b"{}") for i, k in enumerate(keys)]
    return BatchMetadata(msgs, [str(k) for k in keys], topic, 0)


def mock_metrics() -> Any:
    return get_registry().get("metrics", "mock").obj


def count_rows(engine: sa.Engine, table: str = "kafka_messages") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() or 0)


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30,
               settle: float = 0.0) -> list[Any]:
    """Every message of ``topic`` until ``expected`` arrived (then ``settle`` seconds more,
    to catch anything extra)."""
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "r-" + uuid.uuid4().hex,
                       "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(m for m in c.consume(500, 0.3) if m.error() is None)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        out.extend(m for m in c.consume(500, 0.2) if m.error() is None)
    c.close()
    return out


def wait_for(cond: Callable[[], Any], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def per_key_sequences(messages: list[Any]) -> dict[bytes, list[int]]:
    """Values are ``b"<seq>"``; the sequence numbers per key in the order Kafka holds them
    (per partition; a key lives in one partition)."""
    out: dict[bytes, list[int]] = {}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        out.setdefault(m.key(), []).append(int(m.value()))
    return out


def config_file(tmp_path: Path, url: str, bootstrap: str, extra: str = "",
                **producer: Any) -> Path:
    """A deimos.toml for a ``deimos db-producer`` process (``extra``: more TOML, put first)."""
    ps = {**FAST, **producer}
    lines = [extra, f'[kafka]\nbootstrap_servers = "{bootstrap}"\n', f'[db]\nurl = "{url}"\n',
             "[db.producer]"]
    def toml(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + "}"
        return repr(v)

    for k, v in ps.items():
        lines.append(f"{k} = {toml(v)}")
    path = tmp_path / "deimos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_producer(config: Path, workers: int = 1, log: Path | None = None
                   ) -> subprocess.Popen[bytes]:
    """A ``deimos db-producer`` process; with ``log``, its INFO log goes there (to see when
    its workers have started)."""
    return subprocess.Popen(
        [sys.executable, "-m", "deimos", "--config", str(config), "db-producer",
         "--workers", str(workers), "--log-level", "info" if log else "warning"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb") if log else subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def started_workers(log: Path) -> int:
    return sum("DB producer" in line and " started on " in line
               for line in log.read_text(errors="replace").splitlines())
