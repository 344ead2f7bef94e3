"""The template's plugins against deimos's conformance suites: keep the classes for the kinds
your plugin provides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deimos.plugins import get_registry
from deimos.testing.conformance.metrics import MetricsConformance
from deimos.testing.conformance.producer_backend import Delivered, ProducerBackendConformance
from deimos.testing.conformance.schema import SchemaBackendConformance
from deimos.testing.conformance.tracing import TracingConformance


class TestTemplateBackend(ProducerBackendConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "template"

    @pytest.fixture
    def delivered(self) -> Callable[[], Delivered]:
        backend = get_registry().get("producer_backend", "template").obj
        return lambda: list(backend.delivered)


class TestTemplateSchemaBackend(SchemaBackendConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "template"

    @pytest.fixture
    def valid_payload(self) -> Any:
        return {"id": 1, "name": "widget"}

    @pytest.fixture
    def payload_batch(self) -> list[Any]:
        return [{"id": 1}, {"id": 2}, {"id": 3}]

    @pytest.fixture
    def invalid_payload(self) -> Any:
        return ["not", "an", "object"]


class TestTemplateMetrics(MetricsConformance):
    @pytest.fixture
    def provider_name(self) -> str:
        return "template"


class TestTemplateTracer(TracingConformance):
    @pytest.fixture
    def provider_name(self) -> str:
        return "template"
