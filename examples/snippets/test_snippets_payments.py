"""The exactly-once example of docs/exactly-once.md on the real broker and SQLite: three
payments booked once each, a replay of the whole topic changes nothing, and the DB producer
relays exactly three messages."""

from __future__ import annotations

import uuid

import pytest
from payments import main

from deimos.testing.broker import GROUP_TIMEOUTS, create_topic
from deimos_db import dispose_engines

pytestmark = pytest.mark.kafka


def test_payments_booked_once_despite_a_replay(deimos_kafka, deimos_reset, tmp_path):
    prefix = f"docs-{uuid.uuid4().hex[:6]}."
    create_topic(deimos_kafka, prefix + "payments")
    create_topic(deimos_kafka, prefix + "payments.booked")
    try:
        rows, relayed = main(deimos_kafka, f"sqlite:///{tmp_path}/payments.sqlite", prefix,
                             group_id=f"g-{uuid.uuid4().hex[:8]}", config=dict(GROUP_TIMEOUTS),
                             max_wait_time=0.2)
    finally:
        dispose_engines()
    assert rows == [("p-1", 100), ("p-2", 250), ("p-3", 75)]
    assert relayed == 3
