"""Both Protobuf backends pass the shared schema backend conformance suite, with dict payloads
decoded to dicts and with generated message objects decoded to messages."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deimos.testing.conformance.schema import KeyCase, SchemaBackendConformance

PROTOS = Path(__file__).parent / "protos"
MODULES = ["com.example.widget_pb2", "com.example.part_pb2", "com.example.legacy.order_pb2"]


class _ProtoConformance(SchemaBackendConformance):
    @pytest.fixture
    def schema_dir(self, pb2: dict[str, ModuleType]) -> Any:
        return PROTOS

    @pytest.fixture
    def schema_name(self) -> str:
        return "Widget"

    @pytest.fixture
    def namespace(self) -> str:
        return "com.example"

    @pytest.fixture
    def extra_settings(self, registry_url: str) -> dict[str, Any]:
        return {"schema": {"registry_url": registry_url}, "protobuf": {"modules": MODULES}}

    @pytest.fixture
    def valid_payload(self) -> Any:
        return {"id": 1, "name": "gear", "tags": ["a", "b"], "color": "GREEN",
                "part": {"sku": "p-1", "qty": 2}, "side": 2.0}

    @pytest.fixture
    def expected_decoded(self, valid_payload: Any) -> Any:
        return {**valid_payload, "radius": None, "updated_at": None, "counts": {}}

    @pytest.fixture
    def payload_batch(self, valid_payload: Any) -> list[Any]:
        return [{**valid_payload, "id": i, "name": f"w{i}"} for i in range(5)]

    @pytest.fixture
    def invalid_payload(self) -> Any:
        return {"id": "not-a-number", "name": "x", "tags": ["ok", {"bad": 1}],
                "color": "PURPLE", "side": 1.0, "radius": 2.0}

    @pytest.fixture
    def invalid_paths(self) -> list[str]:
        return ["id", "tags[1]", "color", "shape"]

    @pytest.fixture
    def key_cases(self) -> list[KeyCase]:
        return [("plain", "k-1", "k-1"), ({"field": "id"}, 7, 7),
                ({"schema": "WidgetKey"}, {"id": 7, "region": "eu"}, {"id": 7, "region": "eu"})]

    @pytest.fixture
    def expected_field_names(self) -> list[str]:
        return ["id", "name", "tags", "color", "part", "side", "radius", "updated_at", "counts"]


class TestProtoSchemaRegistryConformance(_ProtoConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "proto_schema_registry"


class TestProtoLocalConformance(_ProtoConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "proto_local"


class TestProtoSchemaRegistryMessagesConformance(_ProtoConformance):
    """Generated message objects in, message objects out (``decode_as = "message"``)."""

    @pytest.fixture
    def backend_name(self) -> str:
        return "proto_schema_registry"

    @pytest.fixture
    def extra_settings(self, registry_url: str) -> dict[str, Any]:
        return {"schema": {"registry_url": registry_url},
                "protobuf": {"modules": MODULES, "decode_as": "message"}}

    @pytest.fixture
    def valid_payload(self, pb2: dict[str, ModuleType]) -> Any:
        w = pb2["widget_pb2"]
        return w.Widget(id=1, name="gear", tags=["a", "b"], color=w.GREEN,
                        part=pb2["part_pb2"].Part(sku="p-1", qty=2), side=2.0)

    @pytest.fixture
    def expected_decoded(self, valid_payload: Any) -> Any:
        return valid_payload

    @pytest.fixture
    def payload_batch(self, valid_payload: Any) -> list[Any]:
        out = []
        for i in range(5):
            m = type(valid_payload)()
            m.CopyFrom(valid_payload)
            m.id = i
            out.append(m)
        return out

    @pytest.fixture
    def key_cases(self, pb2: dict[str, ModuleType]) -> list[KeyCase]:
        key = pb2["widget_pb2"].WidgetKey(id=7, region="eu")
        return [({"field": "id"}, 7, 7), ({"schema": "WidgetKey"}, key, key)]
