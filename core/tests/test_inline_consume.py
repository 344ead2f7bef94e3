"""``deimos.inline.consume`` (Ruby Deimos's ``InlineConsumer.consume``) on the real broker: a
consumer's own processing over a topic's last messages, with no group joined and nothing
committed, its retries and dead letters as under ``deimos run``.

One record per produce request, as in test_inline_tail.py: the inline consumer starts from
the watermarks, which Tansu reports wrongly after a multi-record request.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from test_inline_tail import produce_one_by_one

import deimos
from deimos.inline import consume, get_messages_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


@pytest.fixture
def filled(kafka: str, deimos_topic: Any) -> str:
    topic = deimos_topic(partitions=2)
    # v0..v9 alternate between partitions 0 and 1
    produce_one_by_one(kafka, topic, [(i % 2, f"k{i}", f"v{i}") for i in range(10)])
    return topic


def groups(bootstrap: str) -> set[str]:
    listed = AdminClient({"bootstrap.servers": bootstrap}).list_consumer_groups().result(10)
    return {g.group_id for g in listed.valid}


def test_the_last_messages_reach_the_handler_partition_by_partition_in_offset_order(
        kafka: str, filled: str) -> None:
    seen: list[tuple[int, int, str, str]] = []

    class Recorder(deimos.Consumer):
        topic = filled
        group_id = "inline-recorder"
        key_config = "plain"

        def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
            seen.append((metadata.partition, metadata.offset, metadata.key, payload))

    result = consume(filled, Recorder, 6)
    # the last six by time: v4..v9; partition 0 holds v4, v6, v8 and partition 1 v5, v7, v9
    assert seen == [(0, 2, "k4", "v4"), (0, 3, "k6", "v6"), (0, 4, "k8", "v8"),
                    (1, 2, "k5", "v5"), (1, 3, "k7", "v7"), (1, 4, "k9", "v9")]
    assert (result.read, result.done, result.dead_lettered, result.skipped) == (6, 6, 0, 0)
    assert "inline-recorder" not in groups(kafka)  # no group joined, nothing committed


def test_a_batch_consumer_gets_one_batch_per_partition(filled: str) -> None:
    batches: list[list[str]] = []

    class Batches(deimos.BatchConsumer):
        topic = filled
        group_id = "inline-batches"

        def consume_batch(self, payloads: list[Any], metadata: deimos.BatchMetadata) -> None:
            batches.append(list(payloads))

    assert consume(filled, Batches(), 100).done == 10
    assert batches == [["v0", "v2", "v4", "v6", "v8"], ["v1", "v3", "v5", "v7", "v9"]]


def test_the_error_policy_retries_then_writes_the_dead_letter_to_the_broker(
        kafka: str, filled: str, deimos_topic: Any) -> None:
    dlq = deimos_topic()
    calls: list[str] = []

    class Picky(deimos.Consumer):
        topic = filled
        group_id = "inline-picky"

        def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
            calls.append(payload)
            if payload == "v8":
                raise ValueError("v8 is bad")

    result = consume(filled, Picky, 4, on_error="dead_letter", dead_letter_topic=dlq,
                     retry={"attempts": 2, "backoff": 0.01})
    assert calls == ["v6", "v8", "v8", "v7", "v9"]  # v8 tried twice, then given up
    assert (result.done, result.dead_lettered) == (4, 1)
    letters = get_messages_for(dlq, 10, decode=False)
    assert [m.payload for m in letters] == [b"v8"]
    assert letters[0].headers["deimos-attempts"] == b"2"
    assert letters[0].headers["deimos-original-topic"] == filled.encode()


def test_on_error_raise_raises_after_the_messages_before_the_failure(filled: str) -> None:
    calls: list[str] = []

    class Strict(deimos.Consumer):
        topic = filled
        group_id = "inline-strict"

        def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
            calls.append(payload)
            if payload == "v6":
                raise ValueError("v6 is bad")

    with pytest.raises(ValueError, match="v6 is bad"):
        consume(filled, Strict, 4, retry={"attempts": 1})
    assert calls == ["v6"]  # partition 0's last two are v6, v8: v6 fails first


def test_a_consumer_without_a_group_id_needs_none(filled: str) -> None:
    class Anonymous(deimos.Consumer):
        topic = filled

        def consume(self, payload: Any, metadata: deimos.Metadata) -> None:
            pass

    assert consume(filled, Anonymous, 3).done == 3
