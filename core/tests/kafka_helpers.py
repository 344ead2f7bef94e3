"""Helpers for tests on the real broker."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

from deimos.consumer import ConsumerLoop, resolve_settings
from deimos.testing.broker import ENV_BOOTSTRAP, GROUP_TIMEOUTS


def group_settings(cls: type, **overrides: Any) -> Any:
    """Consumer settings for ``cls`` with a fresh group and quick joins on Tansu."""
    update = {"group_id": f"g-{uuid.uuid4().hex[:10]}", "config": dict(GROUP_TIMEOUTS),
              "max_wait_time": 0.2}
    update.update(overrides)
    return resolve_settings(cls, **update)


class LoopThread:
    """Runs a ConsumerLoop in a thread and records what ended it."""

    def __init__(self, cls: type, settings: Any, loop: ConsumerLoop | None = None) -> None:
        """``loop``: one made already (a subclass, a hook replaced), else a ConsumerLoop."""
        self.loop = loop if loop is not None else ConsumerLoop(cls, settings)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> LoopThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self.loop.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consumer loop did not stop"


def wait_for(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int:
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return int(c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset)
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Every message of ``topic`` (assign, no group), until ``expected`` arrived."""
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "reader-" + uuid.uuid4().hex,
                       "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if m.error() is None:
                out.append(m)
    c.close()
    return out


ON_TANSU = not os.environ.get(ENV_BOOTSTRAP)
#: a test whose aborted records reach the broker: Tansu shows them to read_committed readers
aborted_records_visible_on_tansu = pytest.mark.xfail(
    ON_TANSU, strict=True, reason="Tansu 0.6 lists no aborted transactions in Fetch "
    "responses: read_committed readers see aborted records")


def read_values(bootstrap: str, topic: str, isolation: str, until: int | None = None,
          timeout: float = 20) -> list[str]:
    """The values of ``topic`` an ``isolation`` reader sees: up to the end of every
    partition (end-of-partition events), and at least ``until`` values when given."""
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "r-" + uuid.uuid4().hex,
                       "enable.auto.commit": False, "isolation.level": isolation,
                       "enable.partition.eof": True})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[str] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    out.append(m.value().decode())
                    at_end.discard(m.partition())
                elif m.error().code() == m.error()._PARTITION_EOF:
                    at_end.add(m.partition())
            if len(at_end) == len(parts) and (until is None or len(out) >= until):
                return out
    finally:
        c.close()
    return out
