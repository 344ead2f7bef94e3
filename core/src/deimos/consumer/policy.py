"""The error policy: what one pass over a batch came to, and when a failed message is tried
again.

:class:`Outcome` is the single answer :meth:`MessageProcessor.process` gives, to the broker
loop and to the test helpers alike; :class:`RetryPolicy` counts attempts per message, tells
whether a message's retries are used up, and how long its partition waits. The loop carries
the waits out (pause, seek, resume); the test helpers retry at once; both drive the same
policy object.

``on_error`` names one behaviour each, once a message's ``retry.attempts`` are used up:

* ``raise`` (default): the consumer stops after committing what succeeded before the
  message; the runner restarts it from there (nothing is lost);
* ``retry``: the message is never given up on: it is tried again with the backoff (capped at
  ``retry.max_backoff``) until it succeeds, its partition paused meanwhile, the others
  flowing;
* ``dead_letter``: the original bytes, key and headers plus error headers go to
  ``dead_letter_topic``, then the partition moves on;
* ``skip``: logged and counted, then the partition moves on.
* ``retry_topics``: forwarded to the first rung of the retry-topic ladder, then the
  partition moves on (:mod:`deimos.consumer.retry_topics`); ``retry.attempts`` is 1 unless
  set.

A message that cannot be decoded is not retried (decoding it again gives the same answer) and
goes to ``on_error`` at once, except under ``retry``, where it stops the consumer as ``raise``
does (retrying it forever could never succeed). A :class:`~deimos.errors.TransientError` is
nobody's message's fault: it is retried with the backoff without counting an attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deimos.config import ConsumerSettings
from deimos.errors import TransientError
from deimos.retry import Backoff


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one topic-partition's messages came to.

    ``handled`` leading messages are done (handled, dead-lettered or skipped): their offsets
    may be stored. Then at most one of: ``retry`` (try the message at ``retry_offset`` again,
    after the policy's delay) or ``stop`` (the consumer must stop: ``on_error = "raise"``, a
    fatal error, a dead letter that could not be written).

    ``give_up`` (transactional consumers only): the message at ``retry_offset`` used up its
    retries on this attempt number; ``on_error`` applies to it once the aborted transaction's
    messages are read again (nothing of a failed handler call may commit).
    """

    handled: int
    retry: BaseException | None = None
    retry_offset: int | None = None
    stop: BaseException | None = None
    give_up: int = 0

    @property
    def transient(self) -> bool:
        return isinstance(self.retry, TransientError)


#: ``Outcome(n)`` by ``n``: the answer of every pass that handled all its messages, made once
#: per batch size (a frozen dataclass's ``__init__`` is an ``object.__setattr__`` call per
#: field: some 2,000 instructions a batch, callgrind)
_ALL_HANDLED: dict[int, Outcome] = {}


def all_handled(n: int) -> Outcome:
    """``Outcome(n)``, shared (frozen): ``_ALL_HANDLED.get(n) or all_handled(n)`` in a hot
    path skips even this call."""
    outcome = _ALL_HANDLED.get(n)
    if outcome is None:
        outcome = _ALL_HANDLED[n] = Outcome(n)
    return outcome


class Stop(Exception):
    """Unwinds processing when the consumer must stop; becomes ``Outcome(stop=...)``."""

    def __init__(self, handled: int, error: BaseException) -> None:
        self.handled = handled
        self.error = error
        super().__init__(str(error))


@dataclass(frozen=True)
class Retry:
    """A retry the policy scheduled: the message, its attempt number, the wait."""

    offset: int
    attempt: int
    delay: float
    counted: bool


class RetryPolicy:
    """Attempts per message and the backoff, for one consumer."""

    def __init__(self, settings: ConsumerSettings) -> None:
        r = settings.retry
        self.attempts = r.attempts
        if settings.on_error == "retry_topics" and "attempts" not in r.model_fields_set:
            # the ladder is the retry schedule: no in-process retry (no pause) unless asked
            self.attempts = 1
        self.forever = settings.on_error == "retry"
        self.backoff = Backoff.from_settings(r)
        self._attempts: dict[tuple[str, int, int], int] = {}
        #: consecutive transient failures per partition: the backoff of an outage
        self._outages: dict[tuple[str, int], int] = {}
        #: offsets that finished ahead of a failed message under ``max_concurrency``: its
        #: retry does not handle them again
        self._ahead: dict[tuple[str, int], set[int]] = {}

    @property
    def tracking(self) -> bool:
        """Whether :meth:`done` has anything to forget (a message being retried, one handled
        ahead of a failure, an outage): the batch loop skips the call otherwise."""
        return bool(self._attempts or self._ahead or self._outages)

    def attempt(self, topic: str, partition: int, offset: int) -> int:
        """The number of the attempt about to be made at the message (1 for the first)."""
        return self._attempts.get((topic, partition, offset), 0) + 1

    def exhausted(self, attempt: int) -> bool:
        """Whether a message that failed on ``attempt`` is given up on (``on_error``)."""
        return not self.forever and attempt >= self.attempts

    def failed(self, topic: str, partition: int, offset: int, error: BaseException) -> Retry:
        """Record a failure to be retried; the retry to schedule."""
        if isinstance(error, TransientError):
            outage = self._outages.get((topic, partition), 0) + 1
            self._outages[(topic, partition)] = outage
            return Retry(offset, self._attempts.get((topic, partition, offset), 0),
                         self.backoff.delay(outage), counted=False)
        key = (topic, partition, offset)
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        return Retry(offset, attempt, self.backoff.delay(attempt), counted=True)

    def ahead(self, topic: str, partition: int) -> set[int]:
        """Offsets of the partition already handled ahead of a failure (not to run again)."""
        return self._ahead.get((topic, partition)) or set()

    def finished_ahead(self, topic: str, partition: int, offsets: set[int]) -> None:
        self._ahead.setdefault((topic, partition), set()).update(offsets)

    def done(self, topic: str, partition: int, msgs: Sequence[Any], outcome: Outcome) -> None:
        """Forget what the first ``outcome.handled`` of ``msgs`` (now done) were counted.

        Takes the messages, not their offsets: reading every offset of every batch cost the
        batch loop a fifth of its instructions (callgrind), and it is only needed while some
        message of the consumer is being retried or was handled ahead of a failure. A pass
        not ended by a transient error ends its partition's outage (the next one starts at
        the first backoff again)."""
        if self._attempts or self._ahead:
            offsets = [m.offset() for m in msgs[:outcome.handled]]
            if self._attempts:
                for off in offsets:
                    self._attempts.pop((topic, partition, off), None)
            if self._ahead:
                ahead = self._ahead.get((topic, partition))
                if ahead:
                    ahead.difference_update(offsets)
                    if not ahead:
                        del self._ahead[(topic, partition)]
        if self._outages and not outcome.transient:
            self._outages.pop((topic, partition), None)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: whoever gets it next counts afresh."""
        self._outages.pop((topic, partition), None)
        self._ahead.pop((topic, partition), None)
        for key in [k for k in self._attempts if k[0] == topic and k[1] == partition]:
            del self._attempts[key]
