"""Fixtures of the Protobuf plugin's tests.

The ``_pb2`` modules are generated at test time from ``protos/`` with grpcio-tools (a dev
dependency) into a temporary directory, once per session, and imported from there: no
generated code is committed.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime, SchemaBackend
from deimos_protobuf import clear_cache, reset_clients

HERE = Path(__file__).parent
PROTOS = HERE / "protos"
EVOLUTION = HERE / "evolution"
COMPILED = HERE / "compiled"
MODULES = ["com.example.widget_pb2", "com.example.part_pb2", "com.example.legacy.order_pb2"]


def generate_pb2(src: Path, out: Path) -> None:
    """protoc --python_out for every .proto under ``src`` (grpcio-tools' bundled protoc)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p) for p in src.rglob("*.proto"))
    code = protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={out}", *files])
    assert code == 0, f"protoc failed for {files}"


@pytest.fixture(scope="session")
def pb2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The generated modules of ``protos/``, imported (their messages join the default
    descriptor pool)."""
    out = tmp_path_factory.mktemp("pb2")
    generate_pb2(PROTOS, out)
    sys.path.insert(0, str(out))
    return {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in MODULES}


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    reset_clients()
    clear_cache()


@pytest.fixture
def registry_url() -> str:
    """A mock registry of its own for each test."""
    return f"mock://proto-{uuid.uuid4().hex[:8]}"


MakeBackend = Callable[..., SchemaBackend]


@pytest.fixture
def make(registry_url: str, pb2: dict[str, ModuleType]) -> MakeBackend:
    def make(backend: str = "proto_schema_registry", schema: str | None = "Widget", *,
             namespace: str | None = "com.example", key_config: Any = "none",
             path: Path = PROTOS, topic: str = "widgets", url: str | None = None,
             protobuf: dict[str, Any] | None = None) -> SchemaBackend:
        data: dict[str, Any] = {
            "schema": {"backend": backend, "path": str(path),
                       "registry_url": url or registry_url},
            "protobuf": {"modules": MODULES, **(protobuf or {})},
        }
        settings = build_settings(data, environ={}).settings
        return Runtime(settings).schema_backend(
            topic=topic, schema=schema, namespace=namespace,
            key_config=KeyConfig.model_validate(key_config))
    return make
