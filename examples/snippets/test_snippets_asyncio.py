"""The FastAPI example of docs/asyncio.md runs against the real broker: requests publish
with ``apublish``, the asyncio consumer started by the app's lifespan handles them on the
app's event loop, and leaving the lifespan commits and stops it."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

import deimos
from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

pytestmark = pytest.mark.kafka


def test_fastapi_app_publishes_and_consumes_on_its_event_loop(deimos_kafka, deimos_reset):
    import orders_api

    prefix = f"docs-{uuid.uuid4().hex[:6]}."
    topic = create_topic(deimos_kafka, prefix + "orders")
    group = f"order-audit-{uuid.uuid4().hex[:6]}"
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"topic_prefix": prefix},
                     consumers=[{"class": "orders_api:OrderAudit", "group_id": group,
                                 "max_wait_time": 0.2, "config": dict(GROUP_TIMEOUTS)}])
    orders_api.OrderAudit.seen = []
    with TestClient(orders_api.app) as client:
        for order_id, item in [("o-1", "book"), ("o-2", "lamp"), ("o-1", "pen")]:
            assert client.post(f"/orders/{order_id}", params={"item": item}).json() == {
                "order": order_id, "status": "placed"}
        deadline = time.monotonic() + 30
        while len(client.get("/audit").json()["seen"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = client.get("/audit").json()["seen"]
    # the lifespan has ended: the consumer stopped and committed what it handled
    assert sorted(map(tuple, seen)) == [("o-1", "book"), ("o-1", "pen"), ("o-2", "lamp")]
    assert [s for s in map(tuple, seen) if s[0] == "o-1"] == [("o-1", "book"), ("o-1", "pen")]
    c = Consumer({"bootstrap.servers": deimos_kafka, "group.id": group})
    try:
        assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 3
    finally:
        c.close()
