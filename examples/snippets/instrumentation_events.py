"""The instrumentation events of docs/plugins/hooks.md, on the ``test`` backend (run by the test
suite).

    python examples/snippets/instrumentation_events.py
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import deimos
import deimos.events
from deimos.testing import test_mode

seen: list[tuple[str, str, int]] = []


def record(name: str, payload: Mapping[str, Any]) -> None:
    seen.append((name, payload["topic"], len(payload["messages"])))


class OrderProducer(deimos.Producer):
    topic = "orders"
    key_config = "plain"


def main() -> list[tuple[str, str, int]]:
    seen.clear()
    unsubscribe = deimos.events.subscribe(record, "deimos.encode_message")
    try:
        with test_mode():
            OrderProducer.publish("one", key="1")
            OrderProducer.publish_list(["two", "three"], keys=["2", "3"])
    finally:
        unsubscribe()
    OrderProducer.publish("not seen", key="4")  # nobody subscribed: no event, no cost
    return list(seen)


if __name__ == "__main__":
    deimos.configure(producers={"backend": "test"})
    print(main())
