"""Non-blocking retry topics (``on_error = "retry_topics"``): a ladder of delays, one topic a
rung, so a failing message waits without holding up its partition.

A message given up on (its in-process ``retry.attempts`` used up) is forwarded, as a dead
letter is and with the same error headers, to ``<topic>.retry.1``; the partition moves on at
once. The forward is one of the batch's dead letters (:class:`RetryForwarder` is a
:class:`~deimos.consumer.dead_letters.DeadLetters`), so it is acknowledged before any offset
of the batch is stored, and a forward that cannot be written stops the consumer at the
message, as an unwritable dead letter does.

:class:`~deimos.consumer.retry_loop.RetryTopicsLoop` reads every rung of a consumer, in
its own group, with the consumer's handler class and decoding, each message once it is due. A
failure on rung ``n`` goes to rung ``n + 1``; after the last rung to ``dead_letter_topic``,
with the original topic, partition and offset and the attempts of every rung. One attempt a
rung: the ladder is the retry schedule.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from deimos.config import ConsumerSettings, Settings
from deimos.consumer.api import _Base
from deimos.consumer.dead_letters import ERROR_HEADERS, DeadLetters, error_headers
from deimos.consumer.decoding import Decoder
from deimos.errors import ConfigError, DecodeError
from deimos.kafka.config import cluster_settings
from deimos.message import Message
from deimos.runtime import Runtime, SchemaBackend

log = logging.getLogger("deimos.consumer")

#: the rung a forwarded message is on (1 for ``<topic>.retry.1``)
RETRY_ATTEMPT_HEADER = "deimos-retry-attempt"
#: when the retry consumer may handle it: milliseconds since the epoch
RETRY_DUE_HEADER = "deimos-retry-due"
RETRY_HEADERS = (RETRY_ATTEMPT_HEADER, RETRY_DUE_HEADER)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")


def parse_duration(value: str) -> float:
    """``"500ms"``, ``"5s"``, ``"1m"``, ``"1h"`` (a bare number: seconds) in seconds."""
    m = _DURATION.fullmatch(value)
    if m is None:
        raise ValueError("not a duration: a number with a unit, ms, s, m or h (\"500ms\", "
                         "\"5s\", \"1m\"); a bare number is seconds")
    seconds = float(m[1]) * _UNITS[m[2] or "s"]
    if seconds <= 0:
        raise ValueError("a rung's delay must be longer than 0")
    return seconds


def retry_topic(topic: str, rung: int) -> str:
    """The topic of rung ``rung`` (1-based) of ``topic``."""
    return f"{topic}.retry.{rung}"


def check_settings(cs: ConsumerSettings) -> None:
    """What ``on_error = "retry_topics"`` needs, checked on a consumer's merged settings (its
    class attributes and its ``[[consumers]]`` entry): a :class:`ConfigError` naming the
    setting."""
    where = f"consumers.{cs.name}"
    if cs.on_error != "retry_topics":
        if cs.retry_topics:
            raise ConfigError([(f"{where}.retry_topics", f"set, but on_error is "
                                f"{cs.on_error!r}: set on_error = 'retry_topics' to use the "
                                "ladder")])
        return
    if not cs.retry_topics:
        raise ConfigError([(f"{where}.retry_topics", "on_error 'retry_topics' needs "
                            "retry_topics, the delays of the ladder (retry_topics = [\"5s\", "
                            "\"1m\", \"10m\"])")])
    if not cs.dead_letter_topic:
        raise ConfigError([(f"{where}.dead_letter_topic", "on_error 'retry_topics' needs "
                            "dead_letter_topic: where a message goes after the last rung of "
                            "retry_topics")])
    if cs.topic_pattern:
        raise ConfigError([(f"{where}.topic_pattern", "on_error 'retry_topics' needs its "
                            "topics named in topics, not topic_pattern: the retry consumer "
                            "must know which retry topics to read (and the pattern could "
                            "match them too)")])
    if cs.transactional:
        raise ConfigError([(f"{where}.transactional", "on_error 'retry_topics' forwards a "
                            "failed message and moves on, which a transaction of the batch "
                            "would abort with it: use one of them (a transactional consumer "
                            "retries in place, or dead-letters within its transaction)")])


class Ladder:
    """The rungs of one consumer: for each topic read, the original topic and its rung (0 for
    the consumer's own topics), topic prefix applied."""

    def __init__(self, settings: ConsumerSettings, prefix: str) -> None:
        self.delays = [parse_duration(d) for d in settings.retry_topics]
        self._read: dict[str, tuple[str, int]] = {}
        for t in settings.topics:
            self._read[prefix + t] = (prefix + t, 0)
            for n in range(1, len(self.delays) + 1):
                self._read[retry_topic(prefix + t, n)] = (prefix + t, n)

    def read_from(self, topic: str) -> tuple[str, int]:
        """``(original topic, rung)`` of a message read from ``topic``."""
        return self._read.get(topic, (topic, 0))

    @staticmethod
    def topics(settings: ConsumerSettings) -> list[str]:
        """Every retry topic of ``settings`` as configured (without the topic prefix)."""
        return [retry_topic(t, n) for t in settings.topics
                for n in range(1, len(settings.retry_topics) + 1)]


def _header(headers: list[tuple[str, Any]], name: str) -> str | None:
    for k, v in reversed(headers):
        if k == name and v is not None:
            return bytes(v).decode(errors="replace")
    return None


def due_ms(msg: Any) -> int:
    """The ``deimos-retry-due`` header of ``msg`` (0, due now, when missing or unreadable)."""
    raw = _header(list(msg.headers() or []), RETRY_DUE_HEADER)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


class RetryForwarder(DeadLetters):
    """The dead letters of a ``retry_topics`` consumer: a message given up on goes to the
    next rung of the topic it was read from, after the last rung (or undecodable, which no
    retry can change) to ``dead_letter_topic``."""

    def __init__(self, settings: ConsumerSettings, runtime: Runtime,
                 count: Callable[[Any], None], group: str) -> None:
        super().__init__(settings, runtime, count)
        self.ladder = Ladder(settings, runtime.settings.producers.topic_prefix)
        self.group = group
        self._cluster = settings.cluster
        self._where_retry = f"consumer {settings.name}.cluster"
        #: messages forwarded to a retry topic by this consumer
        self.forwarded = 0

    def destination(self, msg: Any, exc: BaseException) -> tuple[str, int]:
        """Where ``msg`` goes: ``(retry topic, rung)``, or ``(dead_letter_topic, 0)``."""
        original, rung = self.ladder.read_from(msg.topic())
        if isinstance(exc, DecodeError) or rung >= len(self.ladder.delays):
            assert self.topic is not None
            return self.topic, 0
        return retry_topic(original, rung + 1), rung + 1

    def first_read(self, msg: Any, attempts: int
                   ) -> tuple[tuple[str, int | str, int | str], int]:
        """Where ``msg`` was first read and its attempts in all: read from a rung, its error
        headers' (the earlier rungs' attempts added to ``attempts``); else ``msg``'s own."""
        if not self.ladder.read_from(msg.topic())[1]:
            return (msg.topic(), msg.partition(), msg.offset()), attempts
        own = list(msg.headers() or [])
        with contextlib.suppress(ValueError):
            attempts += int(_header(own, "deimos-attempts") or 0)
        return (_header(own, "deimos-original-topic") or self.ladder.read_from(msg.topic())[0],
                _header(own, "deimos-original-partition") or msg.partition(),
                _header(own, "deimos-original-offset") or msg.offset()), attempts

    def message(self, msg: Any, exc: BaseException, attempts: int) -> Message:
        """The forward (or dead letter) of ``msg``: its bytes, key and own headers, the error
        headers naming where it was first read, and, on a rung, the retry headers."""
        own = list(msg.headers() or [])
        where, attempts = self.first_read(msg, attempts)
        drop = {*ERROR_HEADERS, *RETRY_HEADERS}
        headers = [(k, v) for k, v in own if k not in drop]
        headers += error_headers(exc, self.message_limit, *where, attempts)
        to, rung = self.destination(msg, exc)
        if rung:
            due = int((time.time() + self.ladder.delays[rung - 1]) * 1000)
            headers += [(RETRY_ATTEMPT_HEADER, str(rung).encode()),
                        (RETRY_DUE_HEADER, str(due).encode())]
        key, value = msg.key(), msg.value()
        return Message(to, value, key, headers, None, key, value)

    def retry_kafka_settings(self) -> Settings:
        """The settings with the consumer's own cluster (the retry topics') as ``kafka``."""
        return cluster_settings(self.runtime.settings, self._cluster, where=self._where_retry)

    def _send(self, messages: list[Message]) -> None:
        from deimos.kafka import producers

        by_topic: dict[str, list[Message]] = {}
        for m in messages:
            by_topic.setdefault(m.topic, []).append(m)
        for topic, group in by_topic.items():
            on = self.kafka_settings() if topic == self.topic else self.retry_kafka_settings()
            producers.deliver(on, topic, group)

    def _written(self, m: Any, error: BaseException, attempts: int) -> None:
        to, rung = self.destination(m, error)
        if not rung:
            super()._written(m, error, self.first_read(m, attempts)[1])
            return
        self.forwarded += 1
        self.runtime.telemetry.increment("retries", 1,
                                         {"topic": m.topic(), "consumer_group": self.group})
        log.warning("message %s[%s]@%s forwarded to retry topic %s (rung %d of %d, in %s): "
                    "%r", m.topic(), m.partition(), m.offset(), to, rung,
                    len(self.ladder.delays), f"{self.ladder.delays[rung - 1]:g}s", error)


class RetryDecoder(Decoder):
    """The consumer's decoding, a retry topic's messages decoded as its original topic's."""

    def __init__(self, handler: _Base, settings: ConsumerSettings, runtime: Runtime,
                 ladder: Ladder) -> None:
        super().__init__(handler, settings, runtime)
        self.ladder = ladder

    def schema_for(self, topic: str) -> SchemaBackend:
        return super().schema_for(self.ladder.read_from(topic)[0])


def dead_letters_for(handler: _Base, settings: ConsumerSettings, runtime: Runtime,
                     count: Callable[[Any], None], group: str
                     ) -> tuple[DeadLetters, Decoder]:
    """A consumer's dead letters and decoder: the retry ladder's under ``retry_topics``."""
    if settings.on_error != "retry_topics":
        return DeadLetters(settings, runtime, count), Decoder(handler, settings, runtime)
    forwarder = RetryForwarder(settings, runtime, count, group)
    return forwarder, RetryDecoder(handler, settings, runtime, forwarder.ladder)
