"""librdkafka's statistics as metrics (Ruby Deimos's ``rd_kafka_metrics``).

Every client deimos makes already asks librdkafka for a statistics report every
``statistics.interval.ms`` (:mod:`deimos.kafka.connection` reads them to see a cluster come
back). The long-lived clients (the shared producers and the group consumers) also hand each
report to a :class:`StatisticsForwarder`, which turns the figures an operator watches into
gauges for the enabled metrics providers:

* per broker: round-trip times (average, p95, p99) and the requests waiting to be sent and
  waiting for an answer;
* per client: the messages (and bytes) in a producer's local queue;
* per partition a group consumer is assigned: its lag as librdkafka sees it (the partition's
  end against the offset deimos stored) and the change since the previous report.

Nothing is forwarded while no metrics provider is enabled or ``metrics.kafka_statistics``
is off. The gauges are listed in :mod:`deimos.metrics.catalogue` (``docs/metrics.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.runtime import Runtime
    from deimos.telemetry import Telemetry

log = logging.getLogger("deimos.kafka")

#: broker gauges: deimos name -> (window of the broker's statistics, field, scale)
_BROKER_WINDOWS = (
    ("kafka.broker.rtt_avg", "rtt", "avg"),
    ("kafka.broker.rtt_p95", "rtt", "p95"),
    ("kafka.broker.rtt_p99", "rtt", "p99"),
)
#: broker gauges read as they are: deimos name -> field
_BROKER_COUNTS = (
    ("kafka.broker.outbuf_requests", "outbuf_cnt"),
    ("kafka.broker.waitresp_requests", "waitresp_cnt"),
)


class StatisticsForwarder:
    """Gauges from the statistics reports of one client; ``tags`` (``client``: producer or
    consumer, ``consumer_group`` for a consumer, the cluster's ``bootstrap``) go on each.
    ``runtime`` gives the runtime to report to, asked per report; by default the runtime
    current when the client was made (held weakly). A shared producer can outlive the
    settings it was made for: its reports keep going to its own runtime's providers, never to
    those of later settings, and stop when that runtime is gone. No runtime is ever built
    here (that would load settings and plugins on librdkafka's thread)."""

    def __init__(self, tags: Mapping[str, str],
                 runtime: Callable[[], Runtime | None] | None = None) -> None:
        self._runtime = runtime or _runtime_now()
        self.tags = dict(tags)
        #: (topic, partition) -> lag in the previous report (for ``consumer.lags_delta``)
        self._lags: dict[tuple[str, int], int] = {}

    def __call__(self, report: Mapping[str, Any]) -> None:
        runtime = self._runtime()
        if runtime is None:
            return
        telemetry = runtime.telemetry
        if not telemetry.metrics_enabled or not runtime.settings.metrics.kafka_statistics:
            return
        try:
            self._forward(telemetry, report)
        except Exception:  # pragma: no cover - a malformed report must not break the client
            log.exception("could not forward librdkafka statistics")

    def _forward(self, telemetry: Telemetry, report: Mapping[str, Any]) -> None:
        gauge = telemetry.gauge
        base = self.tags
        if report.get("type") == "producer":
            gauge("kafka.producer.queue_messages", report.get("msg_cnt", 0), base)
            gauge("kafka.producer.queue_bytes", report.get("msg_size", 0), base)
        for name, broker in (report.get("brokers") or {}).items():
            if broker.get("source") in ("logical", "internal") or broker.get("nodeid", 0) < 0:
                continue  # the bootstrap placeholders and the internal broker: no traffic
            tags = {**base, "broker": str(broker.get("nodename") or name)}
            for metric, window, field in _BROKER_WINDOWS:
                stats = broker.get(window) or {}
                if stats.get("cnt"):  # microseconds in the report; seconds as a gauge
                    gauge(metric, stats.get(field, 0) / 1e6, tags)
            for metric, field in _BROKER_COUNTS:
                gauge(metric, broker.get(field, 0), tags)
        if report.get("type") == "consumer":
            self._lags_of(gauge, report)

    def _lags_of(self, gauge: Callable[..., None], report: Mapping[str, Any]) -> None:
        seen: set[tuple[str, int]] = set()
        for topic, t in (report.get("topics") or {}).items():
            for pid, p in (t.get("partitions") or {}).items():
                partition = int(pid)
                # -1: librdkafka's placeholder partition; lag -1: not known yet (no stored
                # offset or no watermark fetched)
                lag = p.get("consumer_lag_stored", -1)
                if partition < 0 or lag is None or lag < 0:
                    continue
                key = (topic, partition)
                seen.add(key)
                tags = {**self.tags, "topic": topic, "partition": str(partition)}
                gauge("consumer.lags", lag, tags)
                previous = self._lags.get(key)
                gauge("consumer.lags_delta", 0 if previous is None else lag - previous, tags)
                self._lags[key] = lag
        for key in set(self._lags) - seen:
            del self._lags[key]  # revoked: a later assignment starts over



def _runtime_now() -> Callable[[], Runtime | None]:
    """A weak reference to the process's current runtime (a callable giving None when there
    is none or it is gone)."""
    import weakref

    from deimos import runtime

    current = runtime._runtime
    if current is None:
        return lambda: None
    return weakref.ref(current)
