"""The ``jsonschema`` settings section (``[jsonschema]`` in deimos.toml,
``DEIMOS_JSONSCHEMA__*`` in the environment).

Registry URL and credentials stay in core's ``schema`` section, shared by every
registry-backed plugin.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from deimos.config import PassThrough, Section

SubjectStrategy = Literal["topic", "record", "topic_record"]


class JsonSchemaSettings(Section):
    """Options of the ``json_*`` schema backends."""

    default_draft: Literal["2020-12", "7"] = Field(
        "2020-12", description="draft for schemas without a $schema keyword")
    subject_name_strategy: SubjectStrategy = Field(
        "topic", description="topic: '<topic>-value'/'-key'; record: the schema's full name; "
        "topic_record: '<topic>-<full name>'")
    auto_register: bool = Field(
        True, description="register schemas on first use; false only looks them up")
    fill_defaults: bool = Field(
        True, description="decoding fills properties missing from a message with the "
        "reader schema's defaults (schema evolution)")
    registry_config: PassThrough = Field(
        default_factory=dict,
        description="extra confluent-kafka SchemaRegistryClient properties")

    @field_validator("subject_name_strategy", mode="before")
    @classmethod
    def _dashes(cls, v: Any) -> Any:
        if isinstance(v, str):
            low = v.strip().lower().replace("-", "_")
            return {"topicrecord": "topic_record"}.get(low, low)
        return v

    @field_validator("default_draft", mode="before")
    @classmethod
    def _draft(cls, v: Any) -> Any:
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return v.strip().lower().removeprefix("draft").strip("-_ ")
        return v
