"""The Kafka transactions example of docs/exactly-once.md on the real broker: two orders
published in one transaction, each invoiced once by a transactional consumer."""

from __future__ import annotations

import uuid

import pytest
from transactions import main

from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

pytestmark = pytest.mark.kafka


def test_orders_published_in_a_transaction_are_each_invoiced_once(deimos_kafka, deimos_reset):
    prefix = f"docs-{uuid.uuid4().hex[:6]}."
    create_topic(deimos_kafka, prefix + "orders")
    create_topic(deimos_kafka, prefix + "invoices")
    invoices = main(deimos_kafka, prefix, transactional_id=f"orders-{uuid.uuid4().hex[:6]}",
                    group_id=f"g-{uuid.uuid4().hex[:8]}", config=dict(GROUP_TIMEOUTS),
                    max_wait_time=0.2)
    assert invoices == ["invoice for 2 books", "invoice for 1 lamp"]
