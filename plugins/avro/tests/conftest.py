from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime, SchemaBackend
from deimos_avro import clear_cache, reset_clients

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
EVOLUTION = HERE / "evolution"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    reset_clients()
    clear_cache()


@pytest.fixture
def registry_url() -> str:
    """A mock registry of its own for each test."""
    return f"mock://test-{uuid.uuid4().hex[:8]}"


MakeBackend = Callable[..., SchemaBackend]


@pytest.fixture
def make(registry_url: str) -> MakeBackend:
    def make(backend: str = "avro_schema_registry", schema: str | None = "Widget", *,
             namespace: str | None = "com.example", key_config: Any = "none",
             path: Path = SCHEMAS, topic: str = "widgets", url: str | None = None,
             avro: dict[str, Any] | None = None, **schema_settings: Any) -> SchemaBackend:
        data: dict[str, Any] = {"schema": {"backend": backend, "path": str(path),
                                           "registry_url": url or registry_url,
                                           **schema_settings}}
        if avro:
            data["avro"] = avro
        settings = build_settings(data, environ={}).settings
        return Runtime(settings).schema_backend(
            topic=topic, schema=schema, namespace=namespace,
            key_config=KeyConfig.model_validate(key_config))
    return make
