"""Types shared by schema backends and the code that calls them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.config import KeyConfig, Settings


@dataclass
class SchemaContext:
    """What a schema backend needs to encode or decode for one topic.

    Built once per producer/consumer and reused for every batch, so a backend can keep parsed
    schemas, registry ids and compiled validators in :attr:`cache` instead of looking them up
    per message.
    """

    backend: str
    schema: str | None
    namespace: str | None
    topic: str
    key_config: KeyConfig
    settings: Settings
    #: for the backend's own use; lives as long as this context
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str | None:
        """``namespace.schema`` unless the schema is already qualified."""
        if self.schema is None:
            return None
        if "." in self.schema or not self.namespace:
            return self.schema
        return f"{self.namespace}.{self.schema}"

    @property
    def value_subject(self) -> str:
        return f"{self.topic}-value"

    @property
    def key_subject(self) -> str:
        return f"{self.topic}-key"


@dataclass(frozen=True)
class SchemaField:
    """One field of a schema, as record consumers and producers see it."""

    name: str
    type: str
    default: Any = None
    has_default: bool = False
    nullable: bool = False
    enum_symbols: tuple[str, ...] | None = None
