"""The retry-ladder example of docs/consumers.md on the real broker, as `deimos run` runs it:
the reservation that fails once succeeds on rung 1, the bad one is dead-lettered after the
last rung, and the others are reserved from the main topic at once."""

from __future__ import annotations

import uuid

import pytest
from retry_ladder import ReserveStock, main

from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

pytestmark = pytest.mark.kafka


def test_a_failed_reservation_waits_on_the_ladder_not_in_its_partition(deimos_kafka,
                                                                       deimos_reset):
    prefix = f"docs-{uuid.uuid4().hex[:6]}."
    topic = create_topic(deimos_kafka, prefix + "reservations")
    for n in (1, 2):
        create_topic(deimos_kafka, f"{topic}.retry.{n}")
    dlq = create_topic(deimos_kafka, prefix + "reservations.dlq")
    ReserveStock.tries.clear()
    ReserveStock.reserved.clear()
    reserved, dead = main(deimos_kafka, prefix, group_id=f"g-{uuid.uuid4().hex[:8]}",
                          retry_topics=["1s", "1s"], dead_letter_topic=dlq,
                          config=dict(GROUP_TIMEOUTS), max_wait_time=0.2)
    assert reserved == [("sku-1", "rung 0"), ("sku-2", "rung 0"), ("sku-new", "rung 1")]
    assert dead["deimos-original-topic"] == topic.encode()
    assert dead["deimos-attempts"] == b"3"
    assert dead["deimos-error-message"] == b"sku-404 is not a product"
    assert ReserveStock.tries["sku-404"] == 3
