"""The ``jsonschema`` settings section (``[jsonschema]`` in deimos.toml,
``DEIMOS_JSONSCHEMA__*`` in the environment).

Registry URL and credentials stay in core's ``schema`` section, shared by every
registry-backed plugin; the serializer options (subject name strategy,
``auto_register_schemas``, ``use_latest_version``, ``normalize_schemas``, ``use_schema_id``,
``registry_config``) come from core's :class:`~deimos.schema.serde.RegistrySerdeSettings`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from deimos.schema.serde import RegistrySerdeSettings, SubjectStrategy

__all__ = ["JsonSchemaSettings", "SubjectStrategy"]


class JsonSchemaSettings(RegistrySerdeSettings):
    """Options of the ``json_*`` schema backends."""

    default_draft: Literal["2020-12", "7"] = Field(
        "2020-12", description="draft for schemas without a $schema keyword")
    fill_defaults: bool = Field(
        True, description="decoding fills properties missing from a message with the "
        "reader schema's defaults (schema evolution)")

    @field_validator("default_draft", mode="before")
    @classmethod
    def _draft(cls, v: Any) -> Any:
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return v.strip().lower().removeprefix("draft").strip("-_ ")
        return v
