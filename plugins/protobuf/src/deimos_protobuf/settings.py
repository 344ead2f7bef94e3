"""The ``protobuf`` settings section (``[protobuf]`` in deimos.toml, ``DEIMOS_PROTOBUF__*``).

Registry URL and credentials stay in core's ``schema`` section, shared by every
registry-backed plugin; the serializer options (subject name strategy,
``auto_register_schemas``, ``use_latest_version``, ``normalize_schemas``, ``use_schema_id``,
``registry_config``) come from core's :class:`~deimos.schema.serde.RegistrySerdeSettings`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from deimos.schema.serde import RegistrySerdeSettings, SubjectStrategy

__all__ = ["ProtobufSettings", "SubjectStrategy"]


def _split_commas(v: Any) -> Any:
    if isinstance(v, str):
        return [part.strip() for part in v.split(",") if part.strip()]
    return v


class ProtobufSettings(RegistrySerdeSettings):
    """Options of the ``proto_*`` schema backends."""

    modules: list[str] = Field(
        default_factory=list,
        description="compiled _pb2 modules to import so their messages can be found by full "
        "name (\"myapp.protos.widget_pb2,...\")",
    )
    decode_as: Literal["dict", "message"] = Field(
        "dict", description="consumers get dicts (field name -> Python value) or the "
        "generated message objects")
    key_proto_path: str | None = Field(
        None, description="where `deimos protobuf key-protos` writes the generated key "
        "messages (Ruby's schema.proto_schema_key_path); unset: schema.path")
    compile_proto_files: bool = Field(
        True, description="compile .proto files under schema.path at load time when "
        "grpcio-tools is installed (deimos-protobuf[compile])")

    _split = field_validator("modules", mode="before")(_split_commas)
