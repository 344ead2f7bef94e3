"""The sample service's own tests: its consumer run through deimos's real decode path and
error policy with ``consume_message``, and what it published checked with ``assert_sent``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_service.app import InvoiceProducer, OrderConsumer
from sample_service.schema_classes.com_example_orders import Invoice

from deimos.schema_classes import generate, stale

HERE = Path(__file__).parents[1]


def test_a_paid_order_is_invoiced(deimos_test_mode):
    deimos_test_mode.consume_message(
        OrderConsumer,
        {"order_id": "o-1", "status": "PAID", "amount_cents": 1250, "items": ["a", "b"]},
        key="o-1")
    deimos_test_mode.assert_sent("invoices", Invoice(order_id="o-1", total_cents=1250, lines=2),
                                 key="o-1")


def test_other_orders_and_tombstones_are_not(deimos_test_mode):
    deimos_test_mode.consume_message("orders", {"order_id": "o-2", "amount_cents": 5})
    deimos_test_mode.consume_message("orders", None, key="o-2")
    deimos_test_mode.assert_not_sent("invoices")


def test_a_bad_order_raises_unless_skipped(deimos_test_mode):
    bad = {"order_id": "o-3", "status": "PAID", "amount_cents": -1}
    with pytest.raises(ValueError, match="negative amount"):
        deimos_test_mode.consume_message(OrderConsumer, bad)
    deimos_test_mode.consume_message(OrderConsumer, bad, on_error="skip")
    deimos_test_mode.assert_not_sent("invoices")


def test_an_invoice_the_schema_rejects_is_never_sent(deimos_test_mode):
    from deimos.errors import SchemaValidationError

    with pytest.raises(SchemaValidationError, match="total_cents"):
        InvoiceProducer.publish({"order_id": "o-4", "total_cents": "lots", "lines": 1})
    assert deimos_test_mode.sent_messages == []


def test_generated_schema_classes_are_current():
    assert stale(generate(HERE / "schemas"), HERE / "sample_service" / "schema_classes") == []
