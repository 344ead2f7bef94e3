"""The documentation's producer options example: topics, headers, disabled, payload_log."""

from __future__ import annotations

import logging

from producer_options import main


def test_producer_options_example(deimos_reset, caplog):
    caplog.set_level(logging.DEBUG, logger="deimos.producer")
    assert main() == [("orders", 1, None), ("orders-eu", 2, None),
                      ("orders", 3, [("source", b"checkout"), ("trace", b"t-3")]),
                      ("orders", 4, [("source", b"checkout")])]
    assert [r.getMessage() for r in caplog.records if r.name == "deimos.producer"] == [
        "OrderProducer: publishing to orders: keys [1]",
        "OrderProducer: publishing to orders-eu: keys [2]",
        "OrderProducer: publishing to orders: keys [3, 4]"]
