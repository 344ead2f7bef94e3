"""Whether this process can reach its Kafka cluster, and the one place that says so in the log.

With the brokers down, librdkafka reports every reconnect attempt twice: a ``FAIL`` log line
and a ``_TRANSPORT`` error through ``error_cb``, from every client, several times a second.
Every client deimos makes (consumers, the shared producers, the DB producer's, ``deimos tail``
and ``deimos lag``) sends both to the :class:`BrokerConnection` of its
``kafka.bootstrap_servers`` instead (:func:`instrument`), which logs the condition **once**
(naming ``kafka.bootstrap_servers``), then a summary with the count every
``kafka.error_summary_interval`` seconds while it lasts, and once more when it clears.

"Clears" needs a positive signal, which librdkafka gives only through its statistics: every
client gets ``statistics.interval.ms`` (:data:`STATS_INTERVAL_MS` unless configured), and a
report with a broker ``UP`` and none stuck connecting clears the condition. An assignment or
a received message clears it too.

The same state answers the health endpoint: :attr:`BrokerConnection.down` is set by
``_ALL_BROKERS_DOWN`` (or a failure before the first connection) and cleared by a broker
``UP``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger("deimos.kafka")

#: librdkafka's own log lines go through Python logging under this logger
LIBRDKAFKA_LOGGER = logging.getLogger("deimos.librdkafka")

#: how often each client reports statistics (the "connection is back" signal), unless the
#: librdkafka property ``statistics.interval.ms`` is configured
STATS_INTERVAL_MS = 2000

#: seconds between summaries of a condition that lasts (``kafka.error_summary_interval``)
DEFAULT_SUMMARY_INTERVAL = 30.0

#: error codes that mean "cannot reach a broker"
CONNECTION_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                              KafkaError._RESOLVE})

#: librdkafka log facilities that report a (re)connect failure, already reported by error_cb
_CONNECT_FACILITIES = frozenset({"FAIL"})

_VARIABLE = re.compile(r"\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) "
                       r"suppressed)?\)|\s*\d+ identical error\(s\) suppressed")
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")


def _reason(text: str) -> str:
    """A failure's text without what changes from one attempt to the next."""
    return _VARIABLE.sub("", _THREAD.sub("", text)).strip()


class BrokerConnection:
    """The reachability of one ``kafka.bootstrap_servers`` list, shared by every client of
    this process that uses it."""

    def __init__(self, bootstrap: str, summary_interval: float = DEFAULT_SUMMARY_INTERVAL
                 ) -> None:
        self.bootstrap = bootstrap
        self.summary_interval = summary_interval
        self._lock = threading.Lock()
        #: every broker is unreachable (the health endpoint's "not ready")
        self.down = False
        #: a connection failure condition is open (logged once, summarised, cleared once)
        self.failing = False
        #: a broker was seen ``UP`` at least once
        self.ever_up = False
        self.failing_since: float | None = None
        self.last_error: str | None = None
        #: failures in the open condition, and since its last summary
        self.failures = 0
        self._since_summary = 0
        self._summary_at = 0.0

    def failed(self, reason: str, *, all_down: bool = False) -> None:
        """One connection failure (a ``FAIL`` log line or a ``_TRANSPORT`` error)."""
        now = time.monotonic()
        first = False
        summary = None
        with self._lock:
            if all_down or not self.ever_up:
                self.down = True
            if not all_down or self.last_error is None:
                self.last_error = reason
            self.failures += 1
            self._since_summary += 1
            if not self.failing:
                self.failing = first = True
                self.failing_since = self._summary_at = now
                self._since_summary = 0
            else:
                summary = self._summary_due(now)
        if first:
            log.error("cannot reach the Kafka brokers of kafka.bootstrap_servers %r: %s "
                      "(librdkafka keeps retrying; logged once, then every %.0fs until it "
                      "clears)", self.bootstrap, reason, self.summary_interval)
        elif summary is not None:
            self._log_summary(*summary)

    def tick(self) -> None:
        """The summary of a lasting condition, when it is due, whether or not a failure
        came: librdkafka backs off reconnecting (``reconnect.backoff.max.ms``), so failures
        can be seconds apart, and a summary that waited for one would come late. Called by
        every statistics report, which librdkafka sends on time with every broker down."""
        with self._lock:
            summary = self._summary_due(time.monotonic()) if self.failing else None
        if summary is not None:
            self._log_summary(*summary)

    def _summary_due(self, now: float) -> tuple[float, int] | None:
        """``(lasted, failures since the last summary)`` if a summary is due (resetting
        the count); the caller holds the lock and logs outside it."""
        if now - self._summary_at < self.summary_interval:
            return None
        count, self._since_summary = self._since_summary, 0
        self._summary_at = now
        return now - (self.failing_since or now), count

    def _log_summary(self, lasted: float, count: int) -> None:
        log.error("still cannot reach the Kafka brokers of kafka.bootstrap_servers %r "
                  "after %.0fs: %d more failure(s) in the last %.0fs; last: %s",
                  self.bootstrap, lasted, count, self.summary_interval, self.last_error)

    def reachable(self) -> None:
        """A positive signal: a broker is up (statistics, an assignment, a message)."""
        with self._lock:
            self.ever_up = True
            self.down = False
            if not self.failing:
                return
            self.failing = False
            lasted = time.monotonic() - (self.failing_since or time.monotonic())
            failures, self.failures = self.failures, 0
        log.warning("the Kafka brokers of kafka.bootstrap_servers %r are reachable again "
                    "after %.1fs (%d connection failure(s) meanwhile)", self.bootstrap, lasted,
                    failures)

    def stats(self, data: str) -> None:
        """A librdkafka statistics report: is any broker up, and is none still failing?"""
        try:
            report = json.loads(data)
        except ValueError:  # pragma: no cover - librdkafka writes valid JSON
            return
        self.report(report)

    def report(self, report: Mapping[str, Any]) -> None:
        """:meth:`stats` for a report already parsed."""
        brokers = report.get("brokers", {})
        states = [b.get("state") for b in brokers.values()
                  if b.get("source") not in ("logical", "internal")]
        if "UP" not in states:
            self.tick()
            return
        if self.failing and any(s in ("DOWN", "CONNECT", "TRY_CONNECT") for s in states):
            with self._lock:
                self.down = False  # some broker is up: ready, but the condition lasts
                self.ever_up = True
            return
        self.reachable()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"bootstrap_servers": self.bootstrap, "reachable": not self.down,
                    "connected_once": self.ever_up, "last_error": self.last_error,
                    "failing_for": None if not self.failing or self.failing_since is None
                    else round(time.monotonic() - self.failing_since, 1)}


_connections: dict[str, BrokerConnection] = {}
_connections_lock = threading.Lock()


def connection(bootstrap: str, summary_interval: float | None = None) -> BrokerConnection:
    """The process's :class:`BrokerConnection` for ``bootstrap``."""
    with _connections_lock:
        conn = _connections.get(bootstrap)
        if conn is None:
            conn = _connections[bootstrap] = BrokerConnection(
                bootstrap, DEFAULT_SUMMARY_INTERVAL if summary_interval is None
                else summary_interval)
        elif summary_interval is not None:
            conn.summary_interval = summary_interval
        return conn


def connections() -> list[BrokerConnection]:
    with _connections_lock:
        return list(_connections.values())


class FilteringLogger:
    """What librdkafka gets as its ``logger``: connect failures go to the
    :class:`BrokerConnection` (which logs them once), every other line to
    :data:`LIBRDKAFKA_LOGGER` as before."""

    def __init__(self, conn: BrokerConnection) -> None:
        self.conn = conn

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if len(args) == 3 and args[0] in _CONNECT_FACILITIES:
            # the same failure reaches error_cb as _TRANSPORT: counted there, not twice
            LIBRDKAFKA_LOGGER.debug(fmt, *args)
            return
        LIBRDKAFKA_LOGGER.log(level, fmt, *args)


def instrument(conf: dict[str, Any], *, summary_interval: float | None = None,
               on_error: Callable[[KafkaError], None] | None = None,
               on_connection_error: Callable[[KafkaError], None] | None = None,
               on_stats: Callable[[Mapping[str, Any]], None] | None = None
               ) -> dict[str, Any]:
    """``conf`` with deimos's logger, error and statistics callbacks for one client.

    ``on_error`` gets every error that is not a connection failure (those are the
    :class:`BrokerConnection`'s, which logs them once); without it, such errors are logged
    as warnings (fatal ones as errors). ``on_connection_error`` also sees the connection
    failures, to count them (the DB producer reports a broker it cannot reach while a batch
    still waits), never to log them again. ``on_stats`` gets every statistics report too
    (parsed once): :mod:`deimos.kafka.statistics` forwards them to the metrics providers.
    """
    bootstrap = str(conf.get("bootstrap.servers", ""))
    conn = connection(bootstrap, summary_interval)

    def error_cb(err: KafkaError) -> None:
        if err.code() in CONNECTION_CODES and not err.fatal():
            conn.failed(_reason(err.str()), all_down=err.code() == KafkaError._ALL_BROKERS_DOWN)
            if on_connection_error is not None:
                on_connection_error(err)
        elif on_error is not None:
            on_error(err)
        elif err.fatal():
            log.error("Kafka client (kafka.bootstrap_servers %r): fatal: %s", bootstrap, err)
        else:
            log.warning("Kafka client (kafka.bootstrap_servers %r): %s", bootstrap, err)

    stats_cb: Callable[[str], None] = conn.stats
    if on_stats is not None:
        def stats_cb(data: str) -> None:
            try:
                report = json.loads(data)
            except ValueError:  # pragma: no cover - librdkafka writes valid JSON
                return
            conn.report(report)
            on_stats(report)

    out = {**conf, "logger": FilteringLogger(conn), "error_cb": error_cb,
           "stats_cb": stats_cb}
    out.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
    return out
