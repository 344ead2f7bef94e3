"""Fixtures of the deimos-otel tests (helpers in otel_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_helpers import sdk


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter, _ = sdk()
    exporter.clear()
    yield exporter
    exporter.clear()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return sdk()[1]
