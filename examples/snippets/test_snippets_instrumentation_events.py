"""The documentation's events example: an application subscriber sees each publish call."""

from __future__ import annotations

from instrumentation_events import main

import deimos


def test_events_example(deimos_reset):
    deimos.configure(producers={"backend": "test"})
    assert main() == [("deimos.encode_message", "orders", 1),
                      ("deimos.encode_message", "orders", 2)]
