"""Types shared by schema backends and the code that calls them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


# -- keys: rules every schema backend shares --------------------------------------------------


_STR = frozenset({str})


def encode_plain_keys(keys: Sequence[Any]) -> list[bytes | None]:
    """Plain keys (``plain``/``none`` key configs): unencoded UTF-8 text, as Ruby Deimos."""
    if _STR.issuperset(map(type, keys)):
        return list(map(str.encode, keys))  # all text: the loop in C
    return [None if k is None else k if type(k) is bytes else str(k).encode() for k in keys]


def encode_plain_key(k: Any) -> bytes | None:
    """One plain key (``publish()``'s path), as :func:`encode_plain_keys` encodes each."""
    tk = type(k)
    return k.encode() if tk is str else k if tk is bytes or k is None else str(k).encode()


def plain_key_encoder(key_config: KeyConfig) -> Callable[[Any], bytes | None] | None:
    """A schema backend's ``deimos_schema_encoder(context, "key")``: the one-key encoder
    of plain keys; None for a schema-encoded key (``publish()`` then takes the list hook)."""
    return encode_plain_key if key_config.kind in ("plain", "none") else None


def decode_plain_keys(data: Sequence[bytes | None]) -> list[str | None]:
    return [None if d is None else d.decode(errors="replace") for d in data]


def key_field_name(key_config: KeyConfig) -> str:
    """The field of a key generated from ``key_config.field`` (``a.b.id`` -> ``id``)."""
    return (key_config.field or "").rpartition(".")[2]


def key_records(keys: Sequence[Any], single: str | None,
                records: tuple[type, ...] = (Mapping,)) -> list[Any]:
    """Keys for an explicit key schema: a bare value goes into the schema's only field
    ``single`` (as Ruby Deimos accepts ``publish(payload, key: 5)``); records pass as they
    are."""
    return [k if k is None or isinstance(k, records) or single is None else {single: k}
            for k in keys]
