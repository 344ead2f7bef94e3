"""Built-in schema backends: ``plain`` (text/bytes, no schema) and ``mock`` (JSON, no checks)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from deimos.errors import DecodeError, SchemaValidationError
from deimos.hookspecs import hookimpl
from deimos.schema.base import (
    SchemaContext,
    SchemaField,
    decode_plain_keys,
    encode_plain_key,
    encode_plain_keys,
)

_STR = frozenset({str})


class PlainSchemaBackend:
    """Values and keys are text: ``str`` is sent as UTF-8, ``bytes`` as is; consumers get
    ``str`` back. Anything else is an error, since there is no schema to say how to encode it.
    """

    @hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]) -> list[
            bytes | None]:
        try:
            if _STR.issuperset(map(type, payloads)):
                return list(map(str.encode, payloads))  # all text: the loop in C
            return [p.encode() if type(p) is str else p if p is None or type(p) is bytes
                    else _bad(context, p) for p in payloads]
        except UnicodeEncodeError as exc:
            raise SchemaValidationError([("", f"not encodable as UTF-8: {exc}")],
                                        context.topic) from exc

    @hookimpl
    def deimos_schema_encoder(self, context: SchemaContext, role: str
                              ) -> Callable[[Any], bytes | None]:
        if role == "key":
            return encode_plain_key
        topic = context.topic

        def encode(p: Any) -> bytes | None:
            if type(p) is str:
                try:
                    return p.encode()
                except UnicodeEncodeError as exc:
                    raise SchemaValidationError(
                        [("", f"not encodable as UTF-8: {exc}")], topic) from exc
            if p is None or type(p) is bytes:
                return p
            return _bad(context, p)

        encode.utf8_text = True  # type: ignore[attr-defined]  # publish() encodes str inline
        return encode

    @hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        try:
            return [None if d is None else d.decode() for d in data]
        except UnicodeDecodeError as exc:
            raise DecodeError(f"plain value on topic {context.topic!r} is not UTF-8: {exc}"
                              ) from exc

    @hookimpl
    def deimos_schema_encode_key(self, context: SchemaContext, keys: Sequence[Any]
                                 ) -> list[bytes | None]:
        return encode_plain_keys(keys)

    @hookimpl
    def deimos_schema_decode_key(self, context: SchemaContext, data: Sequence[bytes | None]
                                 ) -> list[Any]:
        return decode_plain_keys(data)

    @hookimpl
    def deimos_schema_validate(self, context: SchemaContext, payload: Any) -> None:
        if payload is not None and not isinstance(payload, (str, bytes)):
            _bad(context, payload)

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        return []

    @hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "plain"


def _bad(context: SchemaContext, payload: Any) -> bytes:
    raise SchemaValidationError(
        [("", f"the plain schema backend takes str or bytes, not {type(payload).__name__}; "
              "configure a schema backend (avro, protobuf, json) for structured payloads")],
        context.topic,
    )


class MockSchemaBackend:
    """Payloads and keys as JSON with no validation: the stand-in of last resort in tests."""

    @hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        return [None if p is None else json.dumps(p, sort_keys=True, default=str).encode()
                for p in payloads]

    @hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        try:
            return [None if d is None else json.loads(d) for d in data]
        except ValueError as exc:
            raise DecodeError(f"mock value on topic {context.topic!r} is not JSON: {exc}"
                              ) from exc

    @hookimpl
    def deimos_schema_encode_key(self, context: SchemaContext, keys: Sequence[Any]
                                 ) -> list[bytes | None]:
        return [None if k is None else json.dumps(k, sort_keys=True, default=str).encode()
                for k in keys]

    @hookimpl
    def deimos_schema_decode_key(self, context: SchemaContext, data: Sequence[bytes | None]
                                 ) -> list[Any]:
        return [None if d is None else json.loads(d) for d in data]

    @hookimpl
    def deimos_schema_validate(self, context: SchemaContext, payload: Any) -> None:
        return None

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        return []

    @hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "mock"
