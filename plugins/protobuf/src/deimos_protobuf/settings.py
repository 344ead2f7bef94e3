"""The ``protobuf`` settings section (``[protobuf]`` in deimos.toml, ``DEIMOS_PROTOBUF__*``).

Registry URL and credentials stay in core's ``schema`` section, shared by every
registry-backed plugin.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from deimos.config import PassThrough, Section

SubjectStrategy = Literal["topic", "record", "topic_record"]


def _split_commas(v: Any) -> Any:
    if isinstance(v, str):
        return [part.strip() for part in v.split(",") if part.strip()]
    return v


class ProtobufSettings(Section):
    """Options of the ``proto_*`` schema backends."""

    modules: list[str] = Field(
        default_factory=list,
        description="compiled _pb2 modules to import so their messages can be found by full "
        "name (\"myapp.protos.widget_pb2,...\")",
    )
    decode_as: Literal["dict", "message"] = Field(
        "dict", description="consumers get dicts (field name -> Python value) or the "
        "generated message objects")
    compile_proto_files: bool = Field(
        True, description="compile .proto files under schema.path at load time when "
        "grpcio-tools is installed (deimos-protobuf[compile])")
    subject_name_strategy: SubjectStrategy = Field(
        "topic", description="topic: '<topic>-value'/'-key'; record: the message's full name; "
        "topic_record: '<topic>-<full name>'")
    auto_register: bool = Field(
        True, description="register schemas (and their imports) on first use; false only "
        "looks them up")
    registry_config: PassThrough = Field(
        default_factory=dict,
        description="extra confluent-kafka SchemaRegistryClient properties")

    _split = field_validator("modules", mode="before")(_split_commas)

    @field_validator("subject_name_strategy", mode="before")
    @classmethod
    def _dashes(cls, v: Any) -> Any:
        if isinstance(v, str):
            low = v.strip().lower().replace("-", "_")
            return {"topicrecord": "topic_record"}.get(low, low)
        return v
