"""Fixtures of the deimos-datadog tests (helpers in datadog_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from datadog_helpers import SpanCollector, StatsdServer

import deimos


@pytest.fixture
def statsd() -> Iterator[StatsdServer]:
    server = StatsdServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def dd_spans() -> SpanCollector:
    from ddtrace.trace import tracer

    collector = SpanCollector()
    tracer.configure(trace_processors=[collector.filter])
    return collector


@pytest.fixture
def configure(deimos_reset: None) -> Callable[..., None]:
    def configure(**sections: Any) -> None:
        deimos.configure(**sections)
    return configure
