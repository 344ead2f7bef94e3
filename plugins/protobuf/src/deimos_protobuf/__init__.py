"""Protobuf schema backends for deimos: ``proto_schema_registry`` (Confluent wire format) and
``proto_local`` (bare protobuf binary, the test stand-in), on google.protobuf and
confluent-kafka's schema registry client."""

from __future__ import annotations

from deimos.schema import registry_import  # noqa: F401  (first: quiets authlib's warnings)
from deimos.schema.registry import RegistryError, registry_client, reset_clients
from deimos_protobuf.backends import ProtoLocalBackend, ProtoSchemaRegistryBackend
from deimos_protobuf.convert import to_dict
from deimos_protobuf.schemas import clear_cache
from deimos_protobuf.settings import ProtobufSettings

__all__ = [
    "ProtoLocalBackend",
    "ProtoSchemaRegistryBackend",
    "ProtobufSettings",
    "RegistryError",
    "clear_cache",
    "registry_client",
    "reset_clients",
    "to_dict",
]
