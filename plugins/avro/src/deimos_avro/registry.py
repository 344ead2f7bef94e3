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
from deimos.schema.serde import RegistrySerdeSettings, writer_schema_id

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


def schema_id(settings: Settings, subject: str, schema: AvroSchema,
              options: RegistrySerdeSettings) -> tuple[int, AvroSchema | None]:
    """The id to write ``schema`` with under ``subject`` (registered or looked up, or the
    one ``use_latest_version``/``use_schema_id`` names, then with the registered schema to
    write with, references resolved); the client caches ids."""
    client = registry_client(settings)
    sid, registered = writer_schema_id(settings, client, subject, Schema(schema.text, "AVRO"),
                                       options)
    if registered is None:
        return sid, None
    return sid, _parse(settings, sid, client, registered)


def writer_schema(settings: Settings, sid: int) -> AvroSchema:
    """The schema a message was written with, references resolved."""
    client = registry_client(settings)
    try:
        sch = client.get_schema(sid)
    except Exception as exc:
        raise _fail(settings, f"fetch schema id {sid}", exc) from None
    return _parse(settings, sid, client, sch)


def _parse(settings: Settings, sid: int, client: Any, sch: Schema) -> AvroSchema:
    try:
        named: list[Any] = []
        _collect_refs(client, sch, named, set())
    except Exception as exc:
        raise _fail(settings, f"fetch the references of schema id {sid}", exc) from None
    try:
        raw = json.loads(sch.schema_str or "null")
        if named:
            # Schema references: inline the referenced definitions (fastavro's expand_schema
            # over a union that defines them first) so the writer schema stands alone.
            raw = expand_schema([*named, raw])[-1]
        return from_dict(raw)
    except Exception as exc:
        raise RegistryError(f"Schema id {sid} from the schema registry at "
                            f"{safe_url(settings)} is not a usable Avro schema: "
                            f"{type(exc).__name__}: {exc}") from None


def _collect_refs(client: Any, sch: Schema, out: list[Any], seen: set[str]) -> None:
    for ref in sch.references or []:
        if ref.name is None or ref.name in seen:
            continue
        seen.add(ref.name)
        registered = client.get_version(ref.subject, ref.version)
        _collect_refs(client, registered.schema, out, seen)
        out.append(json.loads(registered.schema.schema_str))
