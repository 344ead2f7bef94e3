"""Registry calls of the Avro backends.

The client cache itself (one confluent-kafka client per URL and credentials, so ``mock://``
registries are shared) lives in core, :mod:`deimos.schema.registry`, shared with the Protobuf
and JSON Schema plugins; the names below are kept for existing imports.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro.schema import expand_schema

from deimos.config import Settings, get_settings
from deimos.schema import registry as _shared
from deimos.schema.registry import RegistryError, reset_clients, safe_url

from .schemas import AvroSchema, from_dict

__all__ = ["RegistryError", "registry_client", "reset_clients", "safe_url", "schema_id",
           "writer_schema"]


def registry_client(settings: Settings | None = None) -> SchemaRegistryClient:
    """The shared client for ``schema.registry_url`` (``mock://name`` -> in-memory), with the
    ``avro.registry_config`` properties."""
    settings = settings or get_settings()
    avro = getattr(settings, "avro", None)
    return _shared.registry_client(settings, avro.registry_config if avro is not None else None)


def _fail(settings: Settings, action: str, exc: Exception) -> RegistryError:
    return _shared.registry_failure(settings, action, exc)


def schema_id(settings: Settings, subject: str, schema: AvroSchema, register: bool) -> int:
    """Register (or only look up) ``schema`` under ``subject``; the client caches ids."""
    client = registry_client(settings)
    sch = Schema(schema.text, "AVRO")
    try:
        if register:
            return int(client.register_schema(subject, sch))
        return int(client.lookup_schema(subject, sch).schema_id or 0)
    except Exception as exc:
        action = "register" if register else "look up"
        raise _fail(settings, f"{action} subject {subject!r}", exc) from None


def writer_schema(settings: Settings, sid: int) -> AvroSchema:
    """The schema a message was written with, references resolved."""
    client = registry_client(settings)
    try:
        sch = client.get_schema(sid)
        named: list[Any] = []
        _collect_refs(client, sch, named, set())
    except Exception as exc:
        raise _fail(settings, f"fetch schema id {sid}", exc) from None
    raw = json.loads(sch.schema_str or "null")
    if named:
        # Schema references: inline the referenced definitions (fastavro's expand_schema
        # over a union that defines them first) so the writer schema stands alone.
        raw = expand_schema([*named, raw])[-1]
    return from_dict(raw)


def _collect_refs(client: Any, sch: Schema, out: list[Any], seen: set[str]) -> None:
    for ref in sch.references or []:
        if ref.name is None or ref.name in seen:
            continue
        seen.add(ref.name)
        registered = client.get_version(ref.subject, ref.version)
        _collect_refs(client, registered.schema, out, seen)
        out.append(json.loads(registered.schema.schema_str))
