"""Both JSON Schema backends pass the shared schema backend conformance suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deimos.testing.conformance.schema import KeyCase, SchemaBackendConformance

SCHEMAS = Path(__file__).parent / "schemas"


class _JsonConformance(SchemaBackendConformance):
    @pytest.fixture
    def schema_dir(self) -> Any:
        return SCHEMAS

    @pytest.fixture
    def schema_name(self) -> str:
        return "Widget"

    @pytest.fixture
    def namespace(self) -> str:
        return "com.example"

    @pytest.fixture
    def extra_settings(self, registry_url: str) -> dict[str, Any]:
        return {"schema": {"registry_url": registry_url}}

    @pytest.fixture
    def valid_payload(self) -> Any:
        return {"id": 1, "name": "gear", "tags": ["a", "b"], "color": "GREEN",
                "price": 2.5, "ref": "0b8f1c52-4a0e-4a53-9c1c-5d2f9e1d7a10",
                "updated_at": "2024-05-01T12:00:00Z", "part": {"sku": "p-1", "qty": 2}}

    @pytest.fixture
    def payload_batch(self, valid_payload: Any) -> list[Any]:
        return [{**valid_payload, "id": i, "name": f"w{i}"} for i in range(5)]

    @pytest.fixture
    def invalid_payload(self) -> Any:
        return {"id": "not-a-number", "name": "x", "tags": ["ok", {"bad": 1}],
                "color": "PURPLE", "ref": "nope", "updated_at": "yesterday",
                "part": {"qty": -1}, "extra": 1}

    @pytest.fixture
    def invalid_paths(self) -> list[str]:
        return ["$.id", "$.tags[1]", "$.color", "$.ref", "$.updated_at", "$.part.sku",
                "$.part.qty", "$.extra"]

    @pytest.fixture
    def key_cases(self) -> list[KeyCase]:
        return [("plain", "k-1", "k-1"), ({"field": "id"}, 7, 7),
                ({"schema": "WidgetKey"}, {"id": 7, "region": "eu"}, {"id": 7, "region": "eu"})]

    @pytest.fixture
    def expected_field_names(self) -> list[str]:
        return ["id", "name", "tags", "color", "price", "ref", "updated_at", "part"]


class TestJsonSchemaRegistryConformance(_JsonConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "json_schema_registry"


class TestJsonLocalConformance(_JsonConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "json_local"
