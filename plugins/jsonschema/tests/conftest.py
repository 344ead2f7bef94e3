from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime, SchemaBackend
from deimos_jsonschema import clear_cache, reset_clients

SCHEMAS = Path(__file__).parent / "schemas"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    reset_clients()
    clear_cache()


@pytest.fixture
def registry_url() -> str:
    """A mock registry of its own for each test."""
    return f"mock://json-{uuid.uuid4().hex[:8]}"


MakeBackend = Callable[..., SchemaBackend]


@pytest.fixture
def make(registry_url: str) -> MakeBackend:
    def make(backend: str = "json_schema_registry", schema: str | None = "Widget", *,
             namespace: str | None = "com.example", key_config: Any = "none",
             path: Path = SCHEMAS, topic: str = "widgets", url: str | None = None,
             jsonschema: dict[str, Any] | None = None) -> SchemaBackend:
        data: dict[str, Any] = {"schema": {"backend": backend, "path": str(path),
                                           "registry_url": url or registry_url}}
        if jsonschema:
            data["jsonschema"] = jsonschema
        settings = build_settings(data, environ={}).settings
        return Runtime(settings).schema_backend(
            topic=topic, schema=schema, namespace=namespace,
            key_config=KeyConfig.model_validate(key_config))
    return make
