"""The example of docs/exactly-once.md, "Kafka transactions" (run by the test suite).

    python examples/snippets/transactions.py localhost:9092

Two orders are published in one Kafka transaction (``deimos.transaction()``); a
transactional consumer turns each into an invoice, its outputs and its consumed offsets
committed together per batch; a ``read_committed`` reader then sees each invoice once.
"""

from __future__ import annotations

import sys
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

import deimos
from deimos.consumer import Consumer, ConsumerLoop, Metadata, resolve_settings


class OrderPlaced(deimos.Producer):
    topic = "orders"
    key_config = "plain"


class InvoiceDue(deimos.Producer):
    topic = "invoices"
    key_config = "plain"


class Invoicing(Consumer):
    topic = "orders"
    group_id = "invoicing"
    key_config = "plain"
    transactional = True               # outputs + offsets commit in Kafka transactions
    transactional_id = "invoicing-1"   # unique per running instance of the service

    def consume(self, payload: Any, metadata: Metadata) -> None:
        InvoiceDue.publish(f"invoice for {payload}", key=metadata.key)  # in the transaction


def place_orders() -> None:
    with deimos.transaction():         # both orders or neither
        OrderPlaced.publish("2 books", key="o-1")
        OrderPlaced.publish("1 lamp", key="o-2")


def _committed(settings: Any) -> int:
    probe = KafkaConsumer({"bootstrap.servers": deimos.get_settings().kafka.bootstrap_servers,
                           "group.id": settings.group_id})
    prefix = deimos.get_settings().producers.topic_prefix
    try:
        tp = TopicPartition(prefix + settings.topics[0], 0)
        return int(probe.committed([tp], timeout=10)[0].offset)
    finally:
        probe.close()


def _invoices(count: int) -> list[str]:
    """What a read_committed reader of the invoices topic sees (``count`` of them)."""
    settings = deimos.get_settings()
    reader = KafkaConsumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                            "isolation.level": "read_committed"})
    reader.assign([TopicPartition(settings.producers.topic_prefix + InvoiceDue.topic, 0, 0)])
    seen: list[str] = []
    while len(seen) < count:
        seen += [m.value().decode() for m in reader.consume(10, 1.0) if m.error() is None]
    reader.close()
    return seen


def main(bootstrap: str, topic_prefix: str = "", transactional_id: str = "orders-api-1",
         **consumer_overrides: Any) -> list[str]:
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     producers={"topic_prefix": topic_prefix,
                                "transactional_id": transactional_id})
    place_orders()
    settings = resolve_settings(Invoicing, **consumer_overrides)
    loop = ConsumerLoop(Invoicing, settings)   # what `deimos run` runs
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        while _committed(settings) < 2:       # the offsets commit with the transaction
            threading.Event().wait(0.2)
    finally:
        loop.stop()
        thread.join()
    return _invoices(2)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:9092"))
