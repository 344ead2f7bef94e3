"""The service: a consumer of ``orders`` that publishes an invoice for every paid order."""

from __future__ import annotations

from typing import Any

import deimos
from deimos.consumer import Consumer, Metadata
from sample_service.schema_classes.com_example_orders import Invoice, Order, OrderStatus


class InvoiceProducer(deimos.Producer):
    topic = "invoices"
    schema = "Invoice"
    namespace = "com.example.orders"
    key_config = {"field": "order_id"}


class OrderConsumer(Consumer):
    """Receives ``Order`` instances (``use_schema_classes``), not dicts."""

    topic = "orders"
    schema = "Order"
    namespace = "com.example.orders"
    key_config = "plain"
    group_id = "sample-service"
    use_schema_classes = True

    def consume(self, payload: Any, metadata: Metadata) -> None:
        if payload is None:  # a tombstone: the order was deleted upstream
            return
        order: Order = payload
        if order.status is not OrderStatus.PAID:
            return
        if order.amount_cents < 0:
            raise ValueError(f"order {order.order_id} has a negative amount")
        InvoiceProducer.publish(Invoice(order_id=order.order_id,
                                        total_cents=order.amount_cents,
                                        lines=len(order.items)))
