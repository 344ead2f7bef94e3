"""Built-in metrics providers: ``log`` (to the ``deimos.metrics`` logger) and ``mock``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from deimos.hookspecs import hookimpl

log = logging.getLogger("deimos.metrics")


def _fmt_tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}:{v}" for k, v in tags.items())


class LogMetrics:
    """Writes every measurement to the log at INFO: handy in development and in the demo."""

    @hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        log.info("increment %s %s [%s]", name, value, _fmt_tags(tags))

    @hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        log.info("gauge %s %s [%s]", name, value, _fmt_tags(tags))

    @hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        log.info("histogram %s %s [%s]", name, value, _fmt_tags(tags))

    @hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        log.info("time %s %.6fs [%s]", name, seconds, _fmt_tags(tags))


class MockMetrics:
    """Keeps every measurement in memory, for assertions in tests.

    ``records`` holds ``(kind, name, value, tags)`` tuples; one instance is shared by the
    process (entry points instantiate the class once per registry).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[tuple[str, str, Any, dict[str, str]]] = []

    def _add(self, kind: str, name: str, value: Any, tags: Mapping[str, str]) -> None:
        with self._lock:
            self.records.append((kind, name, value, dict(tags)))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def total(self, name: str, **tags: str) -> float:
        """Sum of counter ``name`` over records whose tags include ``tags``."""
        with self._lock:
            return sum(
                v for k, n, v, t in self.records
                if k == "increment" and n == name and all(t.get(a) == b for a, b in tags.items())
            )

    @hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        self._add("increment", name, value, tags)

    @hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._add("gauge", name, value, tags)

    @hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._add("histogram", name, value, tags)

    @hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        self._add("time", name, seconds, tags)
