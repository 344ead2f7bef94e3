"""The documentation's producer/consumer example runs against the real broker."""

from __future__ import annotations

import uuid

import pytest
from widgets import WidgetConsumer, main

from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

pytestmark = pytest.mark.kafka


def test_docs_example_produces_consumes_and_dead_letters(deimos_kafka, deimos_reset):
    prefix = f"docs-{uuid.uuid4().hex[:6]}."
    create_topic(deimos_kafka, prefix + "widgets")
    dlq = create_topic(deimos_kafka, prefix + "widgets.dlq")
    WidgetConsumer.received = []
    received = main(deimos_kafka, prefix, group_id=f"g-{uuid.uuid4().hex[:8]}",
                    dead_letter_topic=dlq, config=dict(GROUP_TIMEOUTS),
                    retry={"attempts": 2, "backoff": 0.05})
    assert received == [("widget-1", "hello"), ("w2", "a"), ("w4", "b"), ("widget-1", None)]
