"""Test settings of the sample service: its real schema backend and paths. The
``deimos_test_mode`` fixture (from deimos-kafka's pytest plugin) swaps the registry backend for
its validating stand-in and the producer backend for ``test``; nothing else is faked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import deimos

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def service_settings(deimos_reset: None) -> Iterator[None]:
    deimos.configure(
        schema={"backend": "avro_schema_registry", "path": str(HERE / "schemas"),
                "registry_url": "http://registry.invalid:8081",
                "generated_class_path": "sample_service.schema_classes"},
        consumers=[{"class": "sample_service.app:OrderConsumer"}],
    )
    yield
