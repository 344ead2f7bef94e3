"""The example of docs/consumers.md, "Non-blocking retry topics" (run by the test suite).

    python examples/snippets/retry_ladder.py localhost:9092

A reservation whose product is not in the catalogue yet fails; instead of holding up its
partition it waits on the first rung of the retry ladder, and succeeds there. A reservation
of an unknown product fails on every rung and ends in the dead-letter topic.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any, ClassVar

import deimos
from deimos import runner as deimos_runner
from deimos import topics as deimos_topics
from deimos.consumer import Consumer, Metadata
from deimos.inline import get_messages_for


class Reservation(deimos.Producer):
    topic = "reservations"
    key_config = "plain"


class ReserveStock(Consumer):
    topic = "reservations"
    group_id = "stock"
    key_config = "plain"
    on_error = "retry_topics"              # a failed message moves to the ladder...
    retry_topics: ClassVar[list[str]] = ["5s", "1m", "10m"]   # reservations.retry.1, .2, .3
    dead_letter_topic = "reservations.dlq"  # ...and here after the last rung

    tries: ClassVar[Counter[str]] = Counter()
    reserved: ClassVar[list[tuple[str, str]]] = []

    def consume(self, payload: Any, metadata: Metadata) -> None:
        self.tries[payload] += 1
        if payload == "sku-404":
            raise LookupError(f"{payload} is not a product")
        if payload == "sku-new" and self.tries[payload] == 1:
            raise LookupError(f"{payload} is not in the catalogue yet")
        rung = metadata.headers.get("deimos-retry-attempt", b"0").decode()
        self.reserved.append((payload, f"rung {rung}"))


def main(bootstrap: str, topic_prefix: str = "", create_topics: bool = False,
         **consumer_overrides: Any) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """Run the consumer as ``deimos run`` does (its retry consumer included) until every
    reservation is settled; what was reserved where, and the dead letter's headers.
    ``create_topics``: create the topics first, as ``deimos topics apply`` does."""
    entry = {"class": f"{__name__}:ReserveStock", **consumer_overrides}
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     producers={"topic_prefix": topic_prefix}, consumers=[entry])
    if create_topics:  # the main topic, every rung and the dead-letter topic
        deimos_topics.apply(deimos.get_settings())
    Reservation.publish_list(["sku-1", "sku-new", "sku-404", "sku-2"],
                             keys=["r1", "r2", "r3", "r4"], sync=True)
    rungs = len(deimos.get_settings().consumers[0].retry_topics or ReserveStock.retry_topics)

    done = threading.Event()
    # `deimos run` in a thread: the consumer and its retry consumer, until `done`
    runner = threading.Thread(target=deimos_runner.run, kwargs={
        "install_signals": False, "until": done})
    runner.start()
    while runner.is_alive() and (len(ReserveStock.reserved) < 3
                                 or ReserveStock.tries["sku-404"] < rungs + 1):
        threading.Event().wait(0.1)
    done.set()   # the batch in flight (the last dead letter) finishes first
    runner.join()
    dlq = deimos.get_settings().consumers[0].dead_letter_topic or ReserveStock.dead_letter_topic
    dead = get_messages_for(dlq, 1, decode=False)
    return ReserveStock.reserved, dead[0].headers if dead else {}


if __name__ == "__main__":
    # a ladder of seconds, not minutes: the unknown product reaches the dead letters soon
    reserved, dead_letter = main(sys.argv[1] if len(sys.argv) > 1 else "localhost:9092",
                                 create_topics=True, retry_topics=["1s", "2s", "3s"])
    print(reserved)
    print({k: v.decode() for k, v in dead_letter.items()})
