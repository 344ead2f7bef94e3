"""How a registry-backed serializer finds the schema id it writes: confluent-kafka's serde
options, with the same names and meanings, shared by the Avro, Protobuf and JSON Schema
plugins (each plugin's settings section derives from :class:`RegistrySerdeSettings`).

==========================  ===================================================================
option                      meaning (as confluent-kafka's ``AvroSerializer`` & co.)
==========================  ===================================================================
``auto_register_schemas``   register the local schema under its subject on first use
                            (default); off: only look it up (``POST /subjects/{subject}``),
                            and a schema the registry does not know is an error
``normalize_schemas``       ask the registry to normalize the schema when registering or
                            looking it up (``?normalize=true``)
``use_latest_version``      write with the subject's latest registered version (its id, and
                            for Avro its schema); needs ``auto_register_schemas = false``
``use_schema_id``           write with this registered schema id (and for Avro its schema)
==========================  ===================================================================

The dotted spellings of confluent-kafka (``"auto.register.schemas"`` ...) are accepted too, and
``auto_register`` (the name deimos used before) still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from deimos.config import PassThrough, Section, Settings
from deimos.schema.registry import registry_failure

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

SubjectStrategy = Literal["topic", "record", "topic_record"]

_STRATEGIES = {"topicrecord": "topic_record", "topicrecordnamestrategy": "topic_record",
               "topicnamestrategy": "topic", "recordnamestrategy": "record"}


class RegistrySerdeSettings(Section):
    """Options every ``*_schema_registry`` backend shares."""

    subject_name_strategy: SubjectStrategy = Field(
        "topic",
        description="topic: '<topic>-value'/'-key'; record: the schema's full name; "
        "topic_record: '<topic>-<full name>' (as confluent-kafka's strategies)",
    )
    auto_register_schemas: bool = Field(
        True, validation_alias=AliasChoices("auto_register_schemas", "auto.register.schemas",
                                            "auto_register"),
        description="register schemas on first use; false only looks them up")
    normalize_schemas: bool = Field(
        False, validation_alias=AliasChoices("normalize_schemas", "normalize.schemas"),
        description="ask the registry to normalize schemas when registering or looking up")
    use_latest_version: bool = Field(
        False, validation_alias=AliasChoices("use_latest_version", "use.latest.version"),
        description="write with the subject's latest registered version "
        "(needs auto_register_schemas = false)")
    use_schema_id: int | None = Field(
        None, ge=1, validation_alias=AliasChoices("use_schema_id", "use.schema.id"),
        description="write with this registered schema id")
    registry_config: PassThrough = Field(
        default_factory=dict,
        description="extra confluent-kafka SchemaRegistryClient properties "
        "(timeout, max.retries, retries.wait.ms, ssl.ca.location ...)",
    )

    @field_validator("subject_name_strategy", mode="before")
    @classmethod
    def _strategy_spellings(cls, v: Any) -> Any:
        # The spellings of Ruby Deimos and Confluent's docs: "topic-record", "TopicRecord".
        if isinstance(v, str):
            low = v.strip().lower().replace("-", "_")
            return _STRATEGIES.get(low.replace("_", ""), low)
        return v

    @model_validator(mode="after")
    def _latest_needs_no_register(self) -> RegistrySerdeSettings:
        if self.use_latest_version and self.auto_register_schemas:
            raise ValueError("use_latest_version and auto_register_schemas cannot both be on "
                             "(as in confluent-kafka): set auto_register_schemas = false")
        return self

    @property
    def auto_register(self) -> bool:
        """The old name of :attr:`auto_register_schemas`."""
        return self.auto_register_schemas

    @property
    def uses_registered(self) -> bool:
        """Whether the writer schema comes from the registry rather than the local file."""
        return self.use_latest_version or self.use_schema_id is not None


def subject_name(strategy: str, topic: str, role: str, full_name: str) -> str:
    """The subject of a schema under confluent-kafka's three strategies."""
    if strategy == "record":
        return full_name
    if strategy == "topic_record":
        return f"{topic}-{full_name}"
    return f"{topic}-{role}"


def writer_schema_id(settings: Settings, client: SchemaRegistryClient, subject: str,
                     schema: Schema, options: RegistrySerdeSettings,
                     fmt: str | None = None) -> tuple[int, Schema | None]:
    """The id to write under ``subject`` and, when ``use_latest_version``/``use_schema_id``
    picked a registered schema, that schema (else ``None``: the local ``schema`` is it).
    ``fmt`` is the format to fetch a registered schema in (``"serialized"`` for Protobuf).
    Failures are :class:`~deimos.schema.registry.RegistryError` (or its retriable
    subclass)."""
    if options.use_schema_id is not None:
        action = f"fetch schema id {options.use_schema_id} (use_schema_id)"
    elif options.use_latest_version:
        action = f"fetch the latest version of subject {subject!r} (use_latest_version)"
    elif options.auto_register_schemas:
        action = f"register subject {subject!r}"
    else:
        action = f"look up subject {subject!r}"
    try:
        if options.use_schema_id is not None:
            sid = options.use_schema_id
            return sid, client.get_schema(sid, subject, fmt)
        if options.use_latest_version:
            latest = client.get_latest_version(subject, fmt)
            return int(latest.schema_id or 0), latest.schema
        norm = options.normalize_schemas
        if options.auto_register_schemas:
            return int(client.register_schema(subject, schema, normalize_schemas=norm)), None
        return int(client.lookup_schema(subject, schema, normalize_schemas=norm).schema_id
                   or 0), None
    except Exception as exc:
        raise registry_failure(settings, action, exc) from None
