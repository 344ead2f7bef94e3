"""Dead-letter replay: republish dead letters to the topic they came from.

A dead letter (:mod:`deimos.consumer.dead_letters`) carries the original message's bytes, key
and headers plus deimos's ``deimos-error-*`` headers, ``deimos-original-topic`` among them.
:func:`replay` reads a dead-letter topic without joining a group (partitions assigned, up to
the high watermarks read when it starts, so what fails again while it runs is not read again),
keeps the messages the filters select and publishes each to its original topic with its key,
its own headers (deimos's error headers dropped: a new failure writes fresh ones) and
``deimos-replay-count`` raised by one. A message already replayed ``max_replays`` times is
refused, so a message that keeps failing is not replayed forever.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaException, TopicPartition

from deimos.config import Settings
from deimos.consumer.dead_letters import ERROR_HEADERS, REPLAY_COUNT_HEADER
from deimos.errors import DeimosError
from deimos.inline import LastError, quiet, read_to_ends, unreachable
from deimos.kafka.config import reader_config
from deimos.message import Message

#: replays of one message before ``deimos dlq replay`` refuses it
DEFAULT_MAX_REPLAYS = 3

Outcome = Literal["replayed", "would replay", "refused", "skipped"]


@dataclass
class DeadLetter:
    """One message read from a dead-letter topic, and what replay did with it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    outcome: Outcome = "skipped"
    reason: str = ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace") if v is not None else None
        return None

    @property
    def original_topic(self) -> str | None:
        return self.header("deimos-original-topic")

    @property
    def error_class(self) -> str | None:
        return self.header("deimos-error-class")

    @property
    def replays(self) -> int:
        raw = self.header(REPLAY_COUNT_HEADER)
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            return 0

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """Its own headers without deimos's error headers, replay count raised by one."""
        drop = {*ERROR_HEADERS, REPLAY_COUNT_HEADER}
        kept = [(k, v) for k, v in self.headers if k not in drop]
        return [*kept, (REPLAY_COUNT_HEADER, str(self.replays + 1).encode())]


@dataclass
class ReplayFilter:
    """Which dead letters to replay (every criterion given must hold)."""

    partition: int | None = None
    #: offsets from ``from_offset`` to ``to_offset``, both included
    from_offset: int | None = None
    to_offset: int | None = None
    #: the ``deimos-error-class`` header: the full name or its last part (``ValueError``)
    error_class: str | None = None
    #: the raw key, as text
    key: str | None = None

    def matches(self, d: DeadLetter) -> bool:
        if self.partition is not None and d.partition != self.partition:
            return False
        if self.from_offset is not None and d.offset < self.from_offset:
            return False
        if self.to_offset is not None and d.offset > self.to_offset:
            return False
        if self.error_class is not None:
            cls = d.error_class or ""
            if cls != self.error_class and cls.rpartition(".")[2] != self.error_class:
                return False
        return self.key is None or (
            d.key is not None and d.key.decode(errors="replace") == self.key)


@dataclass
class ReplayResult:
    #: every dead letter the filters selected, with its outcome
    selected: list[DeadLetter] = field(default_factory=list)
    #: dead letters read from the topic
    read: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for d in self.selected if d.outcome == outcome)


def read_dead_letters(settings: Settings, topic: str, *, partition: int | None = None,
                      from_offset: int | None = None, timeout: float = 10.0
                      ) -> list[DeadLetter]:
    """Every message of ``topic`` up to its current high watermarks (from ``from_offset``
    when given), in partition and offset order."""
    last = LastError()
    consumer = KafkaConsumer(quiet(reader_config(settings, "dlq"), last))
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            raise unreachable(settings, f"reading {topic!r}", last.error or exc) from None
        if md is None or md.error is not None:
            reason = md.error if md is not None else "not found"
            raise DeimosError(f"dead-letter topic {topic!r} cannot be read: {reason}")
        pending: dict[int, int] = {}
        assign = []
        for p in sorted(md.partitions):
            if partition is not None and p != partition:
                continue
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout, cached=False)
            start = max(low, from_offset or 0)
            if high > start:
                pending[p] = high
                assign.append(TopicPartition(topic, p, start))
        if not assign:
            return []
        consumer.assign(assign)
        out = [DeadLetter(m.partition(), m.offset() or 0, m.key(), m.value(),
                          list(m.headers() or []))
               for m in read_to_ends(consumer, topic, pending, timeout)]
        if pending:
            raise DeimosError(f"reading {topic!r}: partitions {sorted(pending)} were not read "
                              f"to their end within {timeout}s")
    finally:
        consumer.close()
    out.sort(key=lambda d: (d.partition, d.offset))
    return out


def replay(settings: Settings, topic: str, selection: ReplayFilter | None = None, *,
           dry_run: bool = False, max_replays: int = DEFAULT_MAX_REPLAYS,
           timeout: float = 10.0) -> ReplayResult:
    """Republish the dead letters of ``topic`` that ``selection`` selects to their original
    topics (nothing is published with ``dry_run``); see the module doc."""
    from deimos.kafka import producers

    selection = selection or ReplayFilter()
    letters = read_dead_letters(settings, topic, partition=selection.partition,
                                from_offset=selection.from_offset, timeout=timeout)
    result = ReplayResult(read=len(letters))
    out: dict[str, list[tuple[DeadLetter, Message]]] = defaultdict(list)
    for d in letters:
        if not selection.matches(d):
            continue
        result.selected.append(d)
        target = d.original_topic
        if not target:
            d.reason = "no deimos-original-topic header (not a deimos dead letter)"
            continue
        if d.replays >= max_replays:
            d.outcome = "refused"
            d.reason = (f"already replayed {d.replays} time(s) (limit {max_replays}; "
                        "--max-replays raises it)")
            continue
        d.reason = f"to {target}"
        if dry_run:
            d.outcome = "would replay"
            continue
        out[target].append((d, Message(target, d.value, d.key, d.replay_headers(), d.key,
                                       d.key, d.value)))
    for target, pairs in out.items():
        producers.deliver(settings, target, [m for _, m in pairs])
        for d, _ in pairs:
            d.outcome = "replayed"
    return result


def as_rows(result: ReplayResult) -> list[dict[str, Any]]:
    """One JSON-ready row per selected dead letter."""
    return [{"partition": d.partition, "offset": d.offset,
             "key": d.key.decode(errors="replace") if d.key is not None else None,
             "error_class": d.error_class, "original_topic": d.original_topic,
             "replays": d.replays, "outcome": d.outcome, "reason": d.reason}
            for d in result.selected]
