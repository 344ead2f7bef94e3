"""The ``avro`` settings section (``[avro]`` in deimos.toml, ``DEIMOS_AVRO__*`` in the env).

Registry URL and credentials stay in core's ``schema`` section (``schema.registry_url``,
``schema.user``, ``schema.password``) because every registry-backed plugin shares them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from deimos.config import PassThrough, Section

SubjectStrategy = Literal["topic", "record", "topic_record"]


class AvroSettings(Section):
    """Options of the ``avro_*`` schema backends."""

    subject_name_strategy: SubjectStrategy = Field(
        "topic",
        description="topic: '<topic>-value'/'-key'; record: the record's full name; "
        "topic_record: '<topic>-<full name>' (as confluent-kafka's strategies)",
    )
    auto_register: bool = Field(
        True, description="register schemas on first use; false only looks them up"
    )
    registry_config: PassThrough = Field(
        default_factory=dict,
        description="extra confluent-kafka SchemaRegistryClient properties "
        "(timeout, max.retries, ssl.ca.location ...)",
    )

    @field_validator("subject_name_strategy", mode="before")
    @classmethod
    def _dashes(cls, v: Any) -> Any:
        # Accept the spellings of Ruby Deimos and Confluent docs: "topic-record", "TopicRecord".
        if isinstance(v, str):
            low = v.strip().lower().replace("-", "_")
            return {"topicrecord": "topic_record", "topicrecordnamestrategy": "topic_record",
                    "topicnamestrategy": "topic", "recordnamestrategy": "record"}.get(low, low)
        return v
