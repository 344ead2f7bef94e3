"""JSON Schema backends for deimos: ``json_schema_registry`` (Confluent wire format) and
``json_local`` (plain UTF-8 JSON, the test stand-in), validated with ``jsonschema``
(draft 2020-12 and draft 7)."""

from __future__ import annotations

from deimos.schema import registry_import  # noqa: F401  (first: quiets authlib's warnings)
from deimos.schema.registry import RegistryError, registry_client, reset_clients
from deimos_jsonschema.backends import JsonLocalBackend, JsonSchemaRegistryBackend
from deimos_jsonschema.schemas import clear_cache
from deimos_jsonschema.settings import JsonSchemaSettings

__all__ = [
    "JsonLocalBackend",
    "JsonSchemaRegistryBackend",
    "JsonSchemaSettings",
    "RegistryError",
    "clear_cache",
    "registry_client",
    "reset_clients",
]
