"""The datadog providers pass the shared metrics and tracing conformance suites."""

from __future__ import annotations

from typing import Any

import pytest
from datadog_helpers import StatsdServer, flush_metrics, wait_for

from deimos.testing.conformance.metrics import MetricsConformance
from deimos.testing.conformance.tracing import TracingConformance


class TestDatadogMetricsConformance(MetricsConformance):
    @pytest.fixture
    def provider_name(self) -> str:
        return "datadog"

    @pytest.fixture
    def extra_settings(self, statsd: StatsdServer) -> dict[str, Any]:
        return {"datadog": {"host": "127.0.0.1", "port": statsd.port}}

    def test_the_suite_s_measurements_arrive(self, telemetry: Any, statsd: StatsdServer
                                             ) -> None:
        telemetry.increment("conformance.count", 3, {"topic": "t"})
        flush_metrics()
        wait_for(lambda: any(m.name == "deimos.conformance.count" for m in statsd.metrics()),
                 what="the counter datagram")
        (m,) = [m for m in statsd.metrics() if m.name == "deimos.conformance.count"]
        assert (m.value, m.type) == (3, "c")
        assert m.tags["topic"] == "t" and m.tags["service"] == "conformance"


class TestDatadogTracingConformance(TracingConformance):
    @pytest.fixture(autouse=True)
    def _collect(self, dd_spans: Any) -> None:
        pass

    @pytest.fixture
    def provider_name(self) -> str:
        return "datadog"
