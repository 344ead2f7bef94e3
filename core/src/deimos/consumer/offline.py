"""A consumer's processing run over messages already in hand, without a subscription.

Two callers have messages but no group: the test helpers (messages built in memory, no
broker) and the inline consumer (:func:`deimos.inline.consume`, the last messages of a topic
read by assignment). Both run the same :class:`~deimos.consumer.MessageProcessor` and
:class:`~deimos.consumer.RetryPolicy` the broker loop runs, so retries, ``on_error`` and dead
letters behave as in production; only the pause/seek of the broker loop becomes a loop here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from deimos.config import ConsumerSettings
from deimos.consumer.processor import MessageProcessor
from deimos.runtime import Runtime

log = logging.getLogger("deimos.consumer")


def configured_entry(runtime: Runtime, cls: type) -> ConsumerSettings | None:
    """The ``[[consumers]]`` entry naming ``cls`` (its settings override the class's), if
    any."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    return next((e for e in runtime.settings.consumers
                 if e.class_path and e.class_path.replace(":", ".") == path), None)


def drive(processor: MessageProcessor, msgs: list[Any], *, wait: bool) -> int:
    """Process one topic-partition's ``msgs`` in offset order until each is done (handled,
    dead-lettered or skipped); the number of messages done.

    A failed message is handed to the handler again as the broker loop would, until the
    policy gives up on it. ``wait=False`` (the test helpers) retries at once and raises a
    :class:`~deimos.errors.TransientError`, since nothing would change while waiting;
    ``wait=True`` (the inline consumer) sleeps each backoff and waits out transient errors, as
    the broker loop does. A stop (``on_error = "raise"``, a dead letter that could not be
    written) raises its error after the messages before it are done.
    """
    done = 0
    while msgs:
        outcome = processor.process(msgs)
        first = msgs[0]
        topic, partition = first.topic(), first.partition()
        processor.policy.done(topic, partition, msgs, outcome)
        done += outcome.handled
        if outcome.stop is not None:
            raise outcome.stop
        if outcome.retry is None or outcome.retry_offset is None:
            return done
        if outcome.transient and not wait:
            raise outcome.retry
        retry = processor.policy.failed(topic, partition, outcome.retry_offset, outcome.retry)
        if wait:
            log.warning("consumer %s: %s[%d]@%d failed (attempt %d), retrying in %.2fs: %r",
                        processor.settings.name, topic, partition, outcome.retry_offset,
                        retry.attempt, retry.delay, outcome.retry)
            time.sleep(retry.delay)
        msgs = msgs[outcome.handled:]
    return done
