"""Lazily built value and key codecs per :class:`SchemaContext`, shared by schema plugins.

A consumer may never encode, a producer never decode, and a plain-key producer never needs a
key schema, so codecs are built on first use and kept in the context's cache for the life of
the producer or consumer. A plugin subclasses :class:`CodecState` with the three ways its
format makes a codec; the key rules (``field`` key generated from the value schema, ``schema``
key resolved in the context's namespace) are the same for every format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from deimos.errors import SchemaError
from deimos.schema.base import SchemaContext

C = TypeVar("C")


class CodecState(ABC, Generic[C]):
    #: the format in error messages ("Avro", "Protobuf", ...)
    label: ClassVar[str] = "the"
    #: what the format calls a schema, and how to name one, in error messages
    needs: ClassVar[str] = "a schema"
    hint: ClassVar[str] = "set `schema` on the producer/consumer"
    #: where the state lives in ``SchemaContext.cache`` (default: the class's full name)
    cache_key: ClassVar[str | None] = None

    def __init__(self, context: SchemaContext) -> None:
        self.context = context
        self._value: C | None = None
        self._key: C | None = None

    @classmethod
    def of(cls, context: SchemaContext) -> CodecState[C]:
        """The state of ``context`` (made once, then read from its cache)."""
        key = cls.cache_key or f"{cls.__module__}.{cls.__qualname__}"
        state = context.cache.get(key)
        if state is None:
            state = context.cache[key] = cls(context)
        return state

    # -- what a format provides --------------------------------------------------------------

    @abstractmethod
    def value_codec(self, name: str) -> C:
        """The codec of value schema ``name`` (a full name)."""

    @abstractmethod
    def field_key_codec(self, value: C, field: str) -> C:
        """The codec of the key generated from ``field`` of the value schema."""

    @abstractmethod
    def key_codec(self, name: str) -> C:
        """The codec of an explicit key schema ``name`` (a full name)."""

    # -- shared rules ------------------------------------------------------------------------

    def value(self, required: bool = True) -> C | None:
        if self._value is None:
            name = self.context.full_name
            if name is None:
                if not required:
                    return None
                raise SchemaError(
                    f"The {self.label} schema backend {self.context.backend!r} needs "
                    f"{self.needs} for topic {self.context.topic!r}; {self.hint}")
            self._value = self.value_codec(name)
        return self._value

    def key(self, required: bool = True) -> C | None:
        if self._key is None:
            kc = self.context.key_config
            if kc.kind == "field":
                value = self.value(required)
                if value is None:
                    return None
                self._key = self.field_key_codec(value, kc.field or "")
            elif kc.kind == "schema":
                name = kc.schema_name or ""
                if "." not in name and self.context.namespace:
                    name = f"{self.context.namespace}.{name}"
                self._key = self.key_codec(name)
        return self._key
