"""The built-in producer backend, metrics and tracing providers pass the same conformance
suites third-party plugins run (schema backends run theirs elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from deimos.backends import test as test_backend
from deimos.testing.conformance.metrics import MetricsConformance
from deimos.testing.conformance.producer_backend import Delivered, ProducerBackendConformance
from deimos.testing.conformance.tracing import TracingConformance


class TestTestBackendConformance(ProducerBackendConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "test"

    @pytest.fixture
    def delivered(self) -> Iterator[Callable[[], Delivered]]:
        test_backend.clear()
        yield lambda: [(m.topic, m.encoded_key, m.encoded_payload)
                       for m in test_backend.messages()]
        test_backend.clear()


@pytest.mark.parametrize("name", ["log", "mock"])
class TestBuiltinMetricsConformance(MetricsConformance):
    @pytest.fixture
    def provider_name(self, name: str) -> str:
        return name


@pytest.mark.parametrize("name", ["log", "mock"])
class TestBuiltinTracingConformance(TracingConformance):
    @pytest.fixture
    def provider_name(self, name: str) -> str:
        return name
