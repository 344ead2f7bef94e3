"""Consumer lag: per group, topic and partition, the committed offset against the high
watermark, and a runnable that reports it as the ``consumer_lag`` gauge.

Lag is read from the broker rather than from inside the consumer loop so that it is right
for every consumer thread (and for groups whose consumers are down, where lag matters most),
and so that measuring it never slows the hot path. Committed offsets are fetched without
joining the group: an OffsetFetch with the group's id does not rebalance anyone.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

from deimos.config import DEFAULT_CLUSTER, ConsumerSettings, Settings
from deimos.kafka.config import admin_config, cluster_settings, reader_config
from deimos.runtime import Runtime, get_runtime

log = logging.getLogger("deimos.lag")

#: seconds between two reports while ``deimos run`` runs
DEFAULT_INTERVAL = 30.0


@dataclass(frozen=True)
class PartitionLag:
    """The lag of one group on one partition."""

    group: str
    topic: str
    partition: int
    #: the group's committed offset (the next offset it will read), None when it has none
    committed: int | None
    low: int
    high: int

    @property
    def inconsistent(self) -> bool:
        """The broker's high watermark is below the committed offset: no consumer can have
        committed past the log end, so the broker's figure is wrong (a broker defect, or the
        topic was deleted and recreated or truncated) and the lag of 0 means nothing."""
        return self.committed is not None and self.committed > self.high

    @property
    def lag(self) -> int:
        """Messages the group has still to read. With nothing committed, every message still
        on the partition counts (the group would start from the beginning)."""
        start = self.committed if self.committed is not None else self.low
        return max(0, self.high - max(start, self.low))


def _client(settings: Settings, group: str) -> KafkaConsumer:
    return KafkaConsumer(reader_config(settings, "lag", group=group))


def _consumers(settings: Settings) -> Iterator[ConsumerSettings]:
    """Every enabled consumer configured under ``[[consumers]]``, class attributes included
    (one that cannot be resolved is logged and skipped)."""
    from deimos.consumer import import_class, resolve_settings

    for entry in settings.consumers:
        if entry.disabled:
            continue
        try:
            yield resolve_settings(import_class(entry.class_path), entry) \
                if entry.class_path else entry
        except Exception as exc:
            log.warning("lag: skipping consumer %s: %s", entry.name or entry.class_path, exc)


def group_topics(settings: Settings, cluster: str | None = None) -> dict[str, list[str]]:
    """``group -> topics`` of every enabled consumer configured under ``[[consumers]]``
    (class attributes included), topic prefix applied; with ``cluster``, only the consumers
    of that cluster."""
    prefix = settings.producers.topic_prefix
    out: dict[str, list[str]] = {}
    for cs in _consumers(settings):
        if not cs.group_id or (cluster is not None
                               and (cs.cluster or DEFAULT_CLUSTER) != cluster):
            continue
        topics = out.setdefault(cs.group_id, [])
        topics.extend(prefix + t for t in cs.topics if prefix + t not in topics)
    return out


def group_clusters(settings: Settings) -> dict[str, str]:
    """``group -> the cluster its consumers read`` for every configured group."""
    return {cs.group_id: cs.cluster or DEFAULT_CLUSTER for cs in _consumers(settings)
            if cs.group_id}


def _committed_topics(settings: Settings, group: str, timeout: float) -> list[str]:
    """Topics ``group`` has committed offsets for (from the broker, for ``deimos lag GROUP``
    with a group that is not configured here)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(settings))
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                request_timeout=timeout)
    result = futures[group].result(timeout)
    return sorted({tp.topic for tp in result.topic_partitions or [] if tp.offset >= 0})


def consumer_lag(group: str, topics: Sequence[str] | None = None, *,
                 settings: Settings | None = None, timeout: float = 10.0
                 ) -> list[PartitionLag]:
    """The lag of ``group`` on every partition of ``topics`` (default: the topics it has
    committed offsets for), sorted by topic and partition."""
    settings = settings or get_runtime().settings
    if topics is None:
        topics = _committed_topics(settings, group, timeout)
    if not topics:
        return []
    group_client = _client(settings, group)
    reader = _client(settings, f"deimos-lag-{uuid.uuid4().hex[:12]}")
    try:
        tps = []
        for topic in topics:
            md = reader.list_topics(topic, timeout=timeout).topics.get(topic)
            if md is None or md.error is not None:
                log.warning("lag: topic %s of group %s: %s", topic, group,
                            md.error if md is not None else "not found")
                continue
            tps += [TopicPartition(topic, p) for p in sorted(md.partitions)]
        if not tps:
            return []
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in group_client.committed(tps, timeout=timeout)}
        rows = []
        for tp in tps:
            low, high = reader.get_watermark_offsets(tp, timeout=timeout, cached=False)
            off = committed.get((tp.topic, tp.partition), -1)
            rows.append(PartitionLag(group, tp.topic, tp.partition,
                                     off if off is not None and off >= 0 else None, low, high))
        return rows
    finally:
        group_client.close()
        reader.close()


class LagReporter:
    """A runnable for ``deimos run``: every ``interval`` seconds, the ``consumer_lag`` gauge
    (tags ``consumer_group``, ``topic``, ``partition``) of every configured group."""

    def __init__(self, runtime: Runtime | None = None, interval: float = DEFAULT_INTERVAL,
                 groups: dict[str, list[str]] | None = None) -> None:
        self.runtime = runtime or get_runtime()
        self.interval = interval
        self.groups = groups if groups is not None else group_topics(self.runtime.settings)
        #: each group measured on the cluster its consumers read
        self.clusters = group_clusters(self.runtime.settings)
        self._stop = threading.Event()
        #: partitions already warned about (inconsistent watermarks), once each
        self._warned: set[tuple[str, str, int]] = set()

    def report(self) -> list[PartitionLag]:
        """Measure and report once; a group that cannot be read is logged and skipped."""
        telemetry = self.runtime.telemetry
        rows: list[PartitionLag] = []
        for group, topics in self.groups.items():
            try:
                measured = consumer_lag(group, topics, settings=cluster_settings(
                    self.runtime.settings, self.clusters.get(group)))
            except Exception as exc:
                log.warning("lag: group %s could not be measured: %s", group, exc)
                continue
            for r in measured:
                if r.inconsistent and (r.group, r.topic, r.partition) not in self._warned:
                    self._warned.add((r.group, r.topic, r.partition))
                    log.warning("lag: %s[%s]: the broker reports high watermark %s, below "
                                "group %s's committed offset %s: its figure is inconsistent "
                                "(reported lag 0 is not a measurement)", r.topic, r.partition,
                                r.high, r.group, r.committed)
                telemetry.gauge("consumer_lag", r.lag, {
                    "consumer_group": r.group, "topic": r.topic, "partition": str(r.partition)})
            rows += measured
        return rows

    def run(self) -> None:
        while not self._stop.is_set():
            self.report()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()

    def __repr__(self) -> str:
        return f"LagReporter(groups={sorted(self.groups)}, interval={self.interval})"


def reporter_factories(interval: float = DEFAULT_INTERVAL) -> list[Callable[[], Any]]:
    """The lag reporter for ``deimos run``'s ``extra`` runnables: one when a metrics provider
    is enabled and a consumer is configured, else none (there would be nothing to report to,
    or nothing to measure)."""
    runtime = get_runtime()
    if not runtime.telemetry.metrics_enabled or not group_topics(runtime.settings):
        return []
    return [lambda: LagReporter(get_runtime(), interval)]
