"""The ``datadog`` metrics provider: every measurement to DogStatsD.

Names pass through unchanged (``deimos.handler``, ``deimos.publish`` with the default
namespace), tags become ``key:value``. The client is configured so the hot path never waits
on a socket: datagrams are buffered (counters and gauges aggregated in process) and a
background thread flushes them every ``flush_interval`` into a bounded queue that drops when
full.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from deimos.config import Settings
from deimos.hookspecs import hookimpl
from deimos_datadog.settings import DatadogSettings

if TYPE_CHECKING:
    from datadog.dogstatsd.base import DogStatsd

log = logging.getLogger("deimos.datadog")

_TAG_CACHE_MAX = 4096


def make_client(s: DatadogSettings) -> DogStatsd:
    """A DogStatsd client for ``s``: buffered, aggregated, with a non-blocking sender."""
    from datadog.dogstatsd.base import DogStatsd

    return DogStatsd(
        host=s.host, port=s.port, socket_path=s.socket_path, namespace=s.namespace,
        constant_tags=[f"{k}:{v}" for k, v in s.tags.items()] or None,
        disable_buffering=False, flush_interval=s.flush_interval,
        disable_aggregation=not s.aggregation,
        disable_background_sender=False, sender_queue_size=s.sender_queue_size,
        sender_queue_timeout=0, socket_timeout=0,
        disable_telemetry=not s.client_telemetry,
    )


class DatadogMetrics:
    """Sends deimos metrics to the Datadog agent's DogStatsD endpoint.

    ``time`` is reported as a DogStatsD timing in milliseconds (``|ms``), as Ruby Deimos
    does; ``histogram`` and ``gauge`` map to their DogStatsD types.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: DogStatsd | None = None
        self._settings: DatadogSettings | None = None
        self._tags: dict[tuple[tuple[str, str], ...], list[str]] = {}
        atexit.register(self.close)

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[DatadogSettings]]:
        return {"datadog": DatadogSettings}

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        self._use(settings.section("datadog"))

    def _use(self, s: DatadogSettings) -> DogStatsd:
        # Reconfiguring with the same section keeps the client (and its threads).
        with self._lock:
            if self._client is not None and s == self._settings:
                return self._client
            old = self._client
            self._client = make_client(s)
            self._settings = s
        if old is not None:
            old.stop(timeout=1.0)
        return self._client

    @property
    def client(self) -> DogStatsd:
        """The DogStatsd client (made with default settings if deimos never configured us)."""
        return self._client or self._use(DatadogSettings())

    def flush(self, timeout: float = 5.0) -> None:
        """Send everything buffered or aggregated now (tests, shutdown)."""
        if self._client is not None:
            self._client.flush_aggregated_metrics()
            self._client.flush()
            self._client.wait_for_pending(timeout)

    def close(self) -> None:
        """Flush and stop the client's threads (registered with atexit)."""
        with self._lock:
            client, self._client, self._settings = self._client, None, None
        if client is not None:
            try:
                client.stop(timeout=2.0)
            except Exception:  # never fail interpreter shutdown over metrics
                log.debug("stopping the DogStatsd client failed", exc_info=True)

    def _dd_tags(self, tags: Mapping[str, str]) -> list[str] | None:
        # deimos builds the same few tag sets over and over: format each once
        if not tags:
            return None
        key = tuple(tags.items())
        got = self._tags.get(key)
        if got is None:
            if len(self._tags) >= _TAG_CACHE_MAX:
                self._tags.clear()
            got = self._tags[key] = [f"{k}:{v}" for k, v in key]
        return got

    @hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        self.client.increment(name, value, tags=self._dd_tags(tags))

    @hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.client.gauge(name, value, tags=self._dd_tags(tags))

    @hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self.client.histogram(name, value, tags=self._dd_tags(tags))

    @hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        self.client.timing(name, seconds * 1000.0, tags=self._dd_tags(tags))


