"""Dead letters: a message given up on goes, with its original bytes, key and headers plus
deimos's error headers, to the consumer's ``dead_letter_topic``.

The dead letters of a batch are queued and written together, in one delivery wait, before any
of their offsets may be stored. If they cannot be written, the consumer stops at the first of
them: nothing from it on is committed, so it is redelivered after the restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from deimos.config import ConsumerSettings, Settings
from deimos.consumer.policy import Stop
from deimos.errors import PublishError
from deimos.kafka.config import cluster_settings
from deimos.message import Message
from deimos.runtime import Runtime

log = logging.getLogger("deimos.consumer")

ERROR_HEADERS = (
    "deimos-error-class",
    "deimos-error-message",
    "deimos-original-topic",
    "deimos-original-partition",
    "deimos-original-offset",
    "deimos-attempts",
)


#: header of a replayed dead letter: how many times ``deimos dlq replay`` republished it
REPLAY_COUNT_HEADER = "deimos-replay-count"


def _values(params: Any) -> Iterator[str]:
    """Every bound parameter value (``executemany`` lists and nested mappings walked)."""
    if isinstance(params, Mapping):
        for v in params.values():
            yield from _values(v)
    elif isinstance(params, (list, tuple)):
        for v in params:
            yield from _values(v)
    elif params is not None:
        yield params.decode(errors="replace") if isinstance(params, bytes) else str(params)


def error_message(exc: BaseException, limit: int = 1024) -> bytes:
    """The ``deimos-error-message`` header: ``str(exc)`` as UTF-8, at most ``limit`` bytes
    (cut on a character boundary, ``...`` marking the cut).

    A SQLAlchemy ``StatementError`` (``IntegrityError``, ``DataError``, ...) prints its
    statement's bound parameters, customer data that must not be copied into a topic: only
    the driver's error (``orig``; for psycopg its primary message, without the ``DETAIL`` that
    repeats the row) and the SQL text with its placeholders are kept, and any parameter value
    the driver quoted in its message (MariaDB's ``Duplicate entry '...'``) is replaced by
    ``<redacted>``.
    """
    text = str(exc)
    orig, statement = getattr(exc, "orig", None), getattr(exc, "statement", None)
    if hasattr(exc, "params") and isinstance(statement, str):
        primary = getattr(getattr(orig, "diag", None), "message_primary", None)
        if orig is not None:
            detail = f"({type(orig).__module__}.{type(orig).__qualname__}) " \
                     f"{primary or orig}"
        else:
            detail = str(exc.args[0]) if exc.args else type(exc).__name__
        for value in sorted(set(_values(getattr(exc, "params", None))), key=len,
                            reverse=True):
            if len(value) >= 2:
                detail = detail.replace(value, "<redacted>")
        text = f"{detail}\n[SQL: {statement}]"
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return data
    return data[:max(0, limit - 3)].decode(errors="ignore").encode() + b"..."


def error_headers(exc: BaseException, limit: int, topic: str, partition: int | str,
                  offset: int | str, attempts: int) -> list[tuple[str, bytes]]:
    """:data:`ERROR_HEADERS` for a message read at ``topic[partition]@offset`` that failed
    with ``exc`` after ``attempts`` attempts (the message capped at ``limit`` bytes)."""
    return [
        ("deimos-error-class", f"{type(exc).__module__}.{type(exc).__qualname__}".encode()),
        ("deimos-error-message", error_message(exc, limit)),
        ("deimos-original-topic", topic.encode()),
        ("deimos-original-partition", str(partition).encode()),
        ("deimos-original-offset", str(offset).encode()),
        ("deimos-attempts", str(attempts).encode()),
    ]


class DeadLetters:
    """The dead letters of the batch being processed, for one consumer."""

    def __init__(self, settings: ConsumerSettings, runtime: Runtime,
                 count: Callable[[Any], None]) -> None:
        self.topic = settings.dead_letter_topic
        self.message_limit = settings.dead_letter_error_bytes
        self.runtime = runtime
        #: where dead letters go: ``dead_letter_cluster``, else the consumer's own cluster
        #: (:class:`~deimos.consumer.ConsumerLoop` checks the name before it starts; the
        #: test helpers, which swap :attr:`sender`, need no such cluster configured)
        self.cluster = settings.dead_letter_cluster or settings.cluster
        self._where = f"consumer {settings.name}." + (
            "dead_letter_cluster" if settings.dead_letter_cluster else "cluster")
        #: writes one batch's dead letters and waits for them (the test helpers swap it)
        self.sender: Callable[[list[Message]], None] = self._send
        self._count = count
        #: the dead letters of the batch being processed so far: (message, error, attempts)
        self.queued: list[tuple[Any, BaseException, int]] = []
        #: messages written to the dead-letter topic by this consumer
        self.written = 0

    def kafka_settings(self) -> Settings:
        """The settings with the dead letters' cluster as the ``kafka`` section."""
        return cluster_settings(self.runtime.settings, self.cluster, where=self._where)

    def add(self, msg: Any, exc: BaseException, attempts: int) -> None:
        self.queued.append((msg, exc, attempts))

    def clear(self) -> None:
        self.queued = []

    def keep_before(self, offset: int) -> None:
        """Drop what was queued at or after ``offset`` (the consumer stops there)."""
        self.queued = [d for d in self.queued if d[0].offset() < offset]

    def message(self, msg: Any, exc: BaseException, attempts: int) -> Message:
        """The dead letter of ``msg`` (:data:`ERROR_HEADERS` after its own headers)."""
        assert self.topic is not None
        headers = list(msg.headers() or [])
        headers += error_headers(exc, self.message_limit, msg.topic(), msg.partition(),
                                 msg.offset(), attempts)
        key, value = msg.key(), msg.value()
        return Message(self.topic, value, key, headers, None, key, value)

    def _send(self, messages: list[Message]) -> None:
        from deimos.kafka import producers

        producers.deliver(self.kafka_settings(), messages[0].topic, messages)

    def flush(self, msgs: list[Any]) -> None:
        """Write what is queued for group ``msgs``; :class:`Stop` at the first dead letter
        of the group if they could not be written."""
        dead, self.queued = self.queued, []
        if not dead:
            return
        try:
            self.sender([self.message(m, e, a) for m, e, a in dead])
        except Exception as send_error:
            first = [m.offset() for m in msgs].index(dead[0][0].offset())
            raise Stop(first, PublishError(
                f"could not write {len(dead)} message(s) to dead-letter topic "
                f"{self.topic!r}: {send_error}")) from send_error
        for m, error, attempts in dead:
            self._written(m, error, attempts)

    def _written(self, m: Any, error: BaseException, attempts: int) -> None:
        """``m``'s dead letter was acknowledged: counted and logged."""
        self.written += 1
        self._count(m)
        log.error("message %s[%s]@%s sent to dead-letter topic %s after %d attempt(s): %r",
                  m.topic(), m.partition(), m.offset(), self.topic, attempts, error)
