"""The outbox with the producer options on SQLite, PostgreSQL and MariaDB and the real broker:
a per-call ``topic=`` and per-message headers go through ``kafka_messages`` intact, and
``log_topics`` logs the messages of the listed topics only; ``deimos.outbox.produce`` reports
each batch."""

from __future__ import annotations

import logging

import pytest

import deimos
import deimos.events
from deimos_db import transaction
from deimos_db.producer import DbProducer
from deimos_db_helpers import ALL_DATABASES, read_topic

pytestmark = [pytest.mark.kafka, ALL_DATABASES]


class Events(deimos.Producer):
    key_config = "plain"


def test_topic_headers_and_log_topics_through_the_outbox(outbox, db, deimos_kafka,
                                                         deimos_topic, caplog):
    logged, quiet = deimos_topic(), deimos_topic()
    outbox(log_topics=[logged])
    Events.topic = quiet
    with transaction(db):
        Events.publish_list(["a", "b"], keys=["k1", "k2"], topic=logged,
                            message_headers=[{"n": "1"}, None], headers={"all": "x"})
        Events.publish("c", key="k3")
    caplog.set_level(logging.INFO, logger="deimos_db.producer")
    produced: list[tuple[str, int, int]] = []
    unsubscribe = deimos.events.subscribe(
        lambda name, p: produced.append((p["topic"], len(p["messages"]), p["sent"])),
        "deimos.outbox.produce")
    try:
        assert DbProducer().process_next() == 3
    finally:
        unsubscribe()
    assert sorted(produced) == sorted([(logged, 2, 2), (quiet, 1, 1)])
    got = sorted((m.key(), m.value(), m.headers()) for m in read_topic(deimos_kafka, logged, 2))
    assert got == [(b"k1", b"a", [("all", b"x"), ("n", b"1")]), (b"k2", b"b", [("all", b"x")])]
    assert [m.value() for m in read_topic(deimos_kafka, quiet, 1)] == [b"c"]
    lines = [r.getMessage() for r in caplog.records if "producing" in r.getMessage()]
    assert len(lines) == 1 and f"2 message(s) to {logged}" in lines[0]
    assert "(b'k1', b'a')" in lines[0] and quiet not in lines[0]
