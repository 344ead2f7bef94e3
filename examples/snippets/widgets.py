"""The example behind docs/producers.md and docs/consumers.md (run by the test suite).

    python examples/snippets/widgets.py localhost:9092
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import deimos
from deimos.consumer import (
    BatchConsumer,
    BatchMetadata,
    Consumer,
    ConsumerLoop,
    Metadata,
    resolve_settings,
)


class WidgetProducer(deimos.Producer):
    topic = "widgets"
    key_config = "plain"          # the key is a string given with each message


class WidgetConsumer(Consumer):
    topic = "widgets"
    group_id = "widget-service"
    key_config = "plain"
    on_error = "dead_letter"      # after the retries, park the message and move on
    dead_letter_topic = "widgets.dlq"
    retry = {"attempts": 3, "backoff": 0.5}

    received: list[tuple[Any, Any]] = []

    def consume(self, payload: Any, metadata: Metadata) -> None:
        if payload == "poison":
            raise ValueError("cannot handle poison")
        self.received.append((metadata.key, payload))


class WidgetBatchConsumer(BatchConsumer):
    topic = "widgets"
    group_id = "widget-audit"

    def consume_batch(self, payloads: list[Any], metadata: BatchMetadata) -> None:
        print(f"{len(payloads)} widgets from partition {metadata.partition}, "
              f"offsets {metadata.offsets[0]}..{metadata.offsets[-1]}")


def main(bootstrap: str, topic_prefix: str = "", **consumer_overrides: Any) -> list[Any]:
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     producers={"topic_prefix": topic_prefix})
    WidgetProducer.publish("hello", key="widget-1", headers={"source": "docs"})
    WidgetProducer.publish_list(["a", "poison", "b"], keys=["w2", "w3", "w4"], sync=True)
    WidgetProducer.publish(None, key="widget-1")  # a tombstone: delete widget-1

    # `deimos run` does this for every configured consumer; here one loop, in a thread
    settings = resolve_settings(WidgetConsumer, **consumer_overrides)
    loop = ConsumerLoop(WidgetConsumer, settings)
    thread = threading.Thread(target=loop.run)
    thread.start()
    while len(WidgetConsumer.received) < 4:
        threading.Event().wait(0.1)
    loop.stop()
    thread.join()
    return WidgetConsumer.received


if __name__ == "__main__":
    for key, payload in main(sys.argv[1] if len(sys.argv) > 1 else "localhost:9092"):
        print(key, payload)
