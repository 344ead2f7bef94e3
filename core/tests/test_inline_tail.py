"""The inline consumer and ``deimos tail`` on the real broker: the last N messages across
every partition, decoded, with no group joined and nothing committed.

Tansu (the embedded test broker) reports, after a produce request carrying several records,
a high watermark of that batch's base offset + 1 instead of the log end. The inline consumer
starts from the watermarks, as it must on real Kafka, so these tests produce one record per
request (a flush after each message) to keep Tansu's watermarks right.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer as RawProducer
from confluent_kafka.admin import AdminClient

import deimos
import deimos.commands  # registers the commands on cli
from deimos.cli import cli
from deimos.inline import get_messages_for

pytestmark = pytest.mark.kafka


def produce_one_by_one(bootstrap: str, topic: str, records: list[tuple[int, str, str]]
                       ) -> None:
    """``(partition, key, value)`` records, one produce request each (see the module doc)."""
    p = RawProducer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    base = int(time.time() * 1000)
    for i, (partition, key, value) in enumerate(records):
        # distinct timestamps: messages are ordered by them across partitions
        p.produce(topic, value.encode(), key.encode(), partition=partition,
                  headers=[("n", value.encode())], timestamp=base + i)
        assert p.flush(10) == 0


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


@pytest.fixture
def filled(kafka: str, deimos_topic: Any) -> str:
    topic = deimos_topic(partitions=3)
    produce_one_by_one(kafka, topic, [(i % 3, f"k{i}", f"v{i}") for i in range(12)])
    return topic


def test_last_messages_across_all_partitions_oldest_first(filled: str) -> None:
    got = get_messages_for(filled, 5)
    assert [m.payload for m in got] == ["v7", "v8", "v9", "v10", "v11"]
    assert [m.key for m in got] == ["k7", "k8", "k9", "k10", "k11"]
    assert {m.partition for m in got} == {0, 1, 2}
    assert got[-1].headers == {"n": b"v11"} and got[-1].offset == 3
    assert all(m.timestamp for m in got)
    assert len(get_messages_for(filled, 100)) == 12
    raw = get_messages_for(filled, 1, decode=False)
    assert raw[0].payload == b"v11" and raw[0].key == b"k11"


def test_reading_joins_no_group_and_commits_nothing(kafka: str, filled: str) -> None:
    before = {g.group_id for g in AdminClient({"bootstrap.servers": kafka})
              .list_consumer_groups().result(10).valid}
    get_messages_for(filled, 3)
    after = {g.group_id for g in AdminClient({"bootstrap.servers": kafka})
             .list_consumer_groups().result(10).valid}
    assert not {g for g in after - before if g.startswith("deimos-inline")}


def test_an_empty_topic_gives_nothing(kafka: str, deimos_topic: Any) -> None:
    assert get_messages_for(deimos_topic(partitions=2), 10) == []


def test_tail_command(kafka: str, filled: str) -> None:
    runner = CliRunner(env={"DEIMOS_KAFKA__BOOTSTRAP_SERVERS": kafka})
    table = runner.invoke(cli, ["tail", filled, "-n", "3"])
    assert table.exit_code == 0, table.output
    assert "v11" in table.output and "v9" in table.output and "v8" not in table.output
    lines = runner.invoke(cli, ["tail", filled, "-n", "2", "--json"]).output.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["key"], r["payload"]) for r in rows] == [("k10", "v10"), ("k11", "v11")]


def test_the_integration_fixture_produces_to_the_broker_and_reads_back(
        deimos_integration: Any) -> None:
    topic = deimos_integration.create_topic(partitions=2)

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = topic
    # the sync kafka backend sends each publish as its own request (Tansu watermarks)
    for i in range(3):
        P.publish(f"m{i}", key=f"k{i}")
    got = deimos_integration.messages(topic, 10)
    assert sorted(m.payload for m in got) == ["m0", "m1", "m2"]
    assert deimos.get_settings().producers.backend == "kafka"
