"""The retry consumer of a ``retry_topics`` consumer (:mod:`deimos.consumer.retry_topics`):
the broker loop over every rung, a message handled once it is due.

Waiting is the broker loop's own retry wait: the partition of a message not yet due is
paused, and sought back to the message and resumed at its ``deimos-retry-due`` time. Other
partitions (and rungs) keep flowing meanwhile, and the loop keeps polling, so the wait never
runs into ``max.poll.interval.ms``. Within a partition messages stay in order: nothing behind a
waiting message is handled before it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

from deimos.config import ConsumerSettings
from deimos.consumer.api import _Base
from deimos.consumer.loop import ConsumerLoop
from deimos.consumer.retry_topics import Ladder, dead_letters_for, due_ms
from deimos.runtime import Runtime

#: the longest a retry consumer waits in one poll: how late past its due time a message may
#: be picked up on an idle retry topic
RETRY_POLL_SECONDS = 0.2


def retry_settings(cs: ConsumerSettings) -> ConsumerSettings:
    """The settings of the retry consumer of ``cs``: every rung's topic, group
    ``<group>.retry``, one attempt a rung, from the earliest offset (a forward written
    before the group's first join is read too)."""
    return cs.model_copy(update={
        "name": f"{cs.name}.retry", "group_id": f"{cs.group_id}.retry",
        "topics": Ladder.topics(cs), "start_from_beginning": True,
        "retry": cs.retry.model_copy(update={"attempts": 1}),
        "max_wait_time": min(cs.max_wait_time, RETRY_POLL_SECONDS)})


class RetryTopicsLoop(ConsumerLoop):
    """The retry consumer of a ``retry_topics`` consumer: the broker loop over its rungs,
    each message handled once due (``deimos run`` starts one per ``concurrency``)."""

    def __init__(self, cls: type[_Base], settings: ConsumerSettings,
                 runtime: Runtime | None = None, stop: threading.Event | None = None,
                 event_loop: Any = None, index: int = 0) -> None:
        """``settings``: the consumer's own (the main topics'); the loop reads its rungs."""
        super().__init__(cls, retry_settings(settings), runtime, stop, event_loop, index=index)
        p = self.processor
        # forwards and decoding by the original topics, which the retry settings do not name
        p.dead_letters, p.decoder = dead_letters_for(p.handler, settings, self.runtime,
                                                     p._count_dead_letter, p.group)
        self.original = settings

    def handle(self, consumer: KafkaConsumer, msgs: list[Any]) -> None:
        """Handle the due messages; a partition's first message not yet due pauses it until
        it is, then it is read again from that message."""
        now = time.time() * 1000
        due: list[Any] = []
        waits: dict[tuple[str, int], tuple[int, int]] = {}
        for m in msgs:
            if m.error() is not None:
                due.append(m)  # the loop logs it
                continue
            tp = (m.topic(), m.partition())
            if tp in waits:
                continue  # behind a message not due yet: read again after the seek
            at = due_ms(m)
            if at > now:
                waits[tp] = (m.offset(), at)
            else:
                due.append(m)
        if due:
            super().handle(consumer, due)
        for (topic, partition), (offset, at) in waits.items():
            if (topic, partition) in self._retries:
                continue  # a message before it failed: that retry comes first
            consumer.pause([TopicPartition(topic, partition)])
            self._retries[(topic, partition)] = (
                offset, time.monotonic() + max(0.0, at / 1000.0 - time.time()))
