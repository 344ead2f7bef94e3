"""Consumer lag on the real broker: ``consumer_lag``, the ``LagReporter`` gauge and
``deimos lag``, with a topic of several partitions and a group with known lag.

Tansu (the embedded test broker) reports, after a produce request carrying several records,
a high watermark of that batch's base offset + 1 instead of the log end; lag is computed from
the high watermark, as it must be on real Kafka, so these tests produce one record per
request (a flush after each message).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition

import deimos
import deimos.commands  # registers the commands on cli
from deimos.cli import cli
from deimos.consumer import Consumer
from deimos.lag import LagReporter, consumer_lag, reporter_factories
from deimos.plugins import get_registry

pytestmark = pytest.mark.kafka

#: messages per partition, and the offset the group has committed on each
PRODUCED = {0: 5, 1: 3, 2: 4}
COMMITTED = {0: 2, 1: 3}  # partition 2: nothing committed


class LaggingConsumer(Consumer):
    def consume(self, payload: Any, metadata: Any) -> None:  # pragma: no cover
        pass


@pytest.fixture
def setup(deimos_kafka: str, deimos_topic: Any, deimos_reset: None) -> tuple[str, str]:
    topic = deimos_topic(partitions=3)
    group = f"lag-{uuid.uuid4().hex[:8]}"
    p = RawProducer({"bootstrap.servers": deimos_kafka, "linger.ms": 0})
    for partition, n in PRODUCED.items():
        for i in range(n):
            p.produce(topic, f"{partition}-{i}".encode(), partition=partition)
            assert p.flush(10) == 0  # one record per request (see the module doc)
    c = RawConsumer({"bootstrap.servers": deimos_kafka, "group.id": group,
                     "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, p, off) for p, off in COMMITTED.items()],
             asynchronous=False)
    c.close()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     metrics={"providers": ["mock"]},
                     consumers=[{"class": f"{__name__}:LaggingConsumer", "topics": [topic],
                                 "group_id": group}])
    get_registry().get("metrics", "mock").obj.clear()
    return topic, group


def test_consumer_lag_per_partition(setup: tuple[str, str]) -> None:
    topic, group = setup
    rows = consumer_lag(group, [topic])
    assert [(r.partition, r.committed, r.high, r.lag) for r in rows] == [
        (0, 2, 5, 3), (1, 3, 3, 0), (2, None, 4, 4)]
    # without topics: the ones the group committed to
    assert {r.topic for r in consumer_lag(group)} == {topic}


def test_reporter_sends_the_consumer_lag_gauge(setup: tuple[str, str]) -> None:
    topic, group = setup
    assert len(reporter_factories()) == 1
    reporter = LagReporter()
    reporter.report()
    gauges = {(t["consumer_group"], t["topic"], t["partition"]): v
              for kind, name, v, t in get_registry().get("metrics", "mock").obj.records
              if kind == "gauge" and name == "consumer_lag"}
    assert gauges == {(group, topic, "0"): 3, (group, topic, "1"): 0, (group, topic, "2"): 4}


def test_lag_command(setup: tuple[str, str], deimos_kafka: str, tmp_path: Path) -> None:
    topic, group = setup
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{deimos_kafka}"

[[consumers]]
class = "{__name__}:LaggingConsumer"
topics = ["{topic}"]
group_id = "{group}"
""")
    runner = CliRunner()
    table = runner.invoke(cli, ["--config", str(cfg), "lag"])
    assert table.exit_code == 0, table.output
    assert group in table.output and "total" in table.output and "7" in table.output
    named = runner.invoke(cli, ["--config", str(cfg), "lag", group, "--json"])
    rows = json.loads(named.output)
    assert [(r["partition"], r["lag"]) for r in rows] == [(0, 3), (1, 0), (2, 4)]
