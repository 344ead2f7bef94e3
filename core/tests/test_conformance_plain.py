"""The built-in ``plain`` schema backend passes the shared schema conformance suite."""

from __future__ import annotations

from typing import Any

import pytest

from deimos.testing.conformance.schema import KeyCase, SchemaBackendConformance


class TestPlainConformance(SchemaBackendConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "plain"

    @pytest.fixture
    def valid_payload(self) -> Any:
        return "hello, wörld"

    @pytest.fixture
    def payload_batch(self) -> list[Any]:
        return ["a", "b", "c", ""]

    @pytest.fixture
    def invalid_payload(self) -> Any:
        return {"not": "text"}

    @pytest.fixture
    def invalid_paths(self) -> list[str]:
        return [""]

    @pytest.fixture
    def key_cases(self) -> list[KeyCase]:
        return [("plain", "key-1", "key-1"), ("plain", 42, "42")]

    @pytest.fixture
    def expected_field_names(self) -> list[str]:
        return []
