"""The otel providers pass the shared metrics and tracing conformance suites."""

from __future__ import annotations

from typing import Any

import pytest

from deimos.testing.conformance.metrics import MetricsConformance
from deimos.testing.conformance.tracing import TracingConformance


class TestOtelMetricsConformance(MetricsConformance):
    @pytest.fixture(autouse=True)
    def _sdk(self, reader: Any) -> None:
        pass

    @pytest.fixture
    def provider_name(self) -> str:
        return "otel"


class TestOtelTracingConformance(TracingConformance):
    @pytest.fixture(autouse=True)
    def _sdk(self, spans: Any) -> None:
        pass

    @pytest.fixture
    def provider_name(self) -> str:
        return "otel"

    def test_conformance_spans_are_exported(self, telemetry: Any, spans: Any) -> None:
        with pytest.raises(ValueError), telemetry.span(
                "conformance process", {"messaging.system": "kafka",
                                        "messaging.operation.type": "process",
                                        "messaging.destination.name": "c"}):
            raise ValueError("boom")
        (span,) = spans.get_finished_spans()
        assert span.name == "process c"
        assert span.status.status_code.name == "ERROR"
        assert span.attributes["error.type"] == "builtins.ValueError"
