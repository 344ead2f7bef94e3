"""Kafka transaction benchmark: ``consume_transform_produce_tx``.

Messages per second of a transactional pass-through consumer (``transactional = true``: each
polled batch of 500 and its outputs commit in one Kafka transaction with the offsets) against
the same consumer without transactions (outputs through the asynchronous shared producer,
offsets stored and committed by librdkafka), same run, same broker. In the JSON line
``deimos`` is the transactional side and ``raw`` the non-transactional one, so ``ratio`` is
what transactions cost (target >= 0.7).

Both sides are warm: their producers have sent to the round's output topic before the clock
starts (the non-transactional one a flushed message; the transactional one initialises its
transactional.id when the loop starts, before its first handler call starts the clock). Rounds
alternate; each round's output topic is verified to hold exactly one output per input (plus
the warm-up message).
"""

from __future__ import annotations

import uuid
from typing import Any

from run import CONSUMER_CONFIG, Bench, Counter, Run, bench

import deimos
from deimos.consumer import Consumer


class _Output(deimos.Producer):
    pass


class _PassThrough(Consumer):
    counter: Counter

    def consume(self, payload: Any, metadata: Any) -> None:
        _Output.publish(payload)
        self.counter.add(1)


@bench("consume_transform_produce_tx")
def consume_transform_produce_tx(b: Bench) -> dict[str, Any]:
    """A transactional pass-through consumer vs a non-transactional one (batches of 500)."""
    n = b.messages
    b.configure(producers={"backend": "kafka_async"})
    source = b.filled_topic([b"x" * 100] * n, tag="tx")

    def side(transactional: bool) -> Run:
        out = _Output.topic = b.topic()
        _Output.publish("warm-up")
        assert deimos.flush(30) == 0
        extra: dict[str, Any] = (
            {"transactional": True, "transactional_id": f"bench-{uuid.uuid4().hex[:8]}"}
            if transactional else {})
        run = b.deimos_consume(_PassThrough, source, n, **extra)
        assert deimos.flush(60) == 0
        b.verify_count(out, n + 1)
        return run

    def plain() -> Run:
        return side(False)

    def transactional() -> Run:
        return side(True)

    result = b.alternate(plain, transactional, batch=500,
                         sides={"deimos": "transactional", "raw": "not transactional"})
    result.update(consumer_config=CONSUMER_CONFIG)
    return result
