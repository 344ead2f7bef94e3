"""Avro schema backends for deimos: ``avro_schema_registry``, ``avro_local`` and
``avro_validation`` (fastavro for Avro, confluent-kafka's client for the registry)."""

from __future__ import annotations

from deimos.schema import registry_import  # noqa: F401  (first: quiets authlib's warnings)
from deimos_avro.backends import (
    AvroLocalBackend,
    AvroSchemaRegistryBackend,
    AvroValidationBackend,
)
from deimos_avro.registry import RegistryError, registry_client, reset_clients
from deimos_avro.schemas import clear_cache
from deimos_avro.settings import AvroSettings

__all__ = [
    "AvroLocalBackend",
    "AvroSchemaRegistryBackend",
    "AvroSettings",
    "AvroValidationBackend",
    "RegistryError",
    "clear_cache",
    "registry_client",
    "reset_clients",
]
