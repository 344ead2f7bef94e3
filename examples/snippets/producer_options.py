"""The per-call options of docs/producers.md, on the ``test`` backend (run by the test suite).

    python examples/snippets/producer_options.py
"""

from __future__ import annotations

import logging

import deimos
from deimos.testing import sent_messages, test_mode


class OrderProducer(deimos.Producer):
    topic = "orders"
    key_config = {"field": "id"}
    payload_log = "keys"          # log the keys of what it publishes at DEBUG


class LegacyOrderProducer(OrderProducer):
    topic = "orders-legacy"
    disabled = True               # sends nothing (until set back to False)


def main() -> list[tuple[str, object, object]]:
    with test_mode():
        deimos.configure(schema={"backend": "mock"})
        OrderProducer.publish({"id": 1, "total": 10})
        # the same producer to another topic, one call
        OrderProducer.publish({"id": 2, "total": 20}, topic="orders-eu")
        # headers for every message, and per message (one entry each, None for none)
        OrderProducer.publish_list(
            [{"id": 3, "total": 30}, {"id": 4, "total": 40}],
            headers={"source": "checkout"},
            message_headers=[{"trace": "t-3"}, None],
        )
        LegacyOrderProducer.publish({"id": 5, "total": 50})  # disabled: not sent
        return [(m.topic, m.key, m.headers) for m in sent_messages()]


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    for sent in main():
        print(*sent)
