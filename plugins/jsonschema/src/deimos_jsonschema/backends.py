"""The two JSON Schema backends; they differ only in the bytes before the JSON.

==========================  ===============================================================
backend                     bytes of one message
==========================  ===============================================================
``json_schema_registry``    Confluent wire format: ``0x00``, 4-byte big-endian schema id,
                            compact UTF-8 JSON (as confluent-kafka's JSONSerializer writes
                            it). The schema file's text is registered under the subject.
``json_local``              compact UTF-8 JSON and nothing else: no registry, readable by
                            any JSON consumer. The test stand-in (``mock``) of the registry
                            backend; it validates the same way.
==========================  ===============================================================

Both validate every payload while encoding (a compiled fast check, ``jsonschema`` for what
it does not vouch for) and raise one :class:`~deimos.errors.SchemaValidationError` with the
JSON path of every error of every payload before anything is produced. Decoding does not
validate (the writer did); it fills the reader schema's defaults for missing properties.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from confluent_kafka.schema_registry import Schema

from deimos.errors import CoercionError, DecodeError, SchemaValidationError
from deimos.hookspecs import hookimpl
from deimos.schema.base import (
    SchemaContext,
    SchemaField,
    decode_plain_keys,
    encode_plain_keys,
    key_field_name,
    key_records,
    plain_key_encoder,
)
from deimos.schema.registry import registry_client
from deimos.schema.serde import subject_name, writer_schema_id
from deimos.schema.state import CodecState

from . import schemas
from .settings import JsonSchemaSettings

_CACHE_KEY = "deimos_jsonschema"
_COERCE_KEY = "deimos_jsonschema.coerce"


def json_encoder(orjson: Any = None) -> Callable[[Any], bytes]:
    """The JSON encoder confluent-kafka's ``JSONSerializer`` uses in this environment, so both
    write the same bytes: orjson's ``dumps`` when orjson imports (confluent-kafka's
    ``json-fast`` extra installs it), else the standard library with compact separators and
    non-ASCII kept. The two differ in floats below 1e-4 (orjson ``1.5e-7`` and ``0.00001``,
    the standard library ``1.5e-07`` and ``1e-05``), in ``NaN``/``Infinity`` (orjson writes
    ``null``) and in integers beyond 64 bits (orjson refuses them); everything else is the
    same byte for byte."""
    if orjson is not None:
        return orjson.dumps
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    return lambda value: encode(value).encode()


def _load_orjson() -> Any:
    # Any failure, not only ImportError: confluent-kafka falls back to the standard library
    # just as broadly (a present but broken compiled extension).
    try:
        import orjson
    except Exception:
        return None
    return orjson


_encode_json = json_encoder(_load_orjson())
_decode_json = json.loads


class Codec:
    """One schema in one role (value or key) of one context: everything precomputed."""

    def __init__(self, schema: schemas.JsonSchema, role: str, fill_defaults: bool) -> None:
        self.schema = schema
        self.role = role
        self.root = schema.raw
        self.check = schema.check
        self.fill = schemas.defaults_filler(schema.raw) if fill_defaults else None
        #: bytes before every message (the registry header), once known
        self.header: bytes | None = None
        #: id -> payload that ``coerce`` found valid and returned as is. A producer calls
        #: coerce per payload and encode per batch on the same objects, so encode need not
        #: check them again (the check is a third of the cost of a message). Holding the
        #: payload keeps its id from being reused; encode pops what it uses.
        self._vouched: dict[int, Any] = {}

    def coerce(self, payload: Any) -> Any:
        if payload is None:
            return None
        check = self.check
        if check is not None and check(payload):
            vouched = self._vouched
            if len(vouched) > 100_000:  # coerced but never encoded (a caller's own use)
                vouched.clear()
            vouched[id(payload)] = payload
            return payload  # the fast path: already exactly what the schema says
        return schemas.coerce(self.root, self.root, payload)

    def encode_all(self, header: bytes, payloads: Sequence[Any], topic: str
                   ) -> list[bytes | None]:
        check = self.check
        enc = _encode_json
        out: list[bytes | None] = []
        append = out.append
        errors: list[tuple[str, str]] = []
        many = len(payloads) > 1
        pop = self._vouched.pop
        for i, p in enumerate(payloads):
            if p is None:
                append(None)
                continue
            if pop(id(p), None) is not p and (check is None or not check(p)):
                bad = self.schema.errors(p)
                if bad:
                    errors += [(path, f"{msg} (message {i})" if many else msg)
                               for path, msg in bad]
                    continue
            try:
                append(header + enc(p))
            except (TypeError, ValueError) as exc:
                errors.append(("$", f"not JSON-serializable: {exc}"
                                    + (f" (message {i})" if many else "")))
        if errors:
            raise SchemaValidationError(errors, topic)
        return out

    def encoder(self, header: bytes, topic: str) -> Callable[[Any], bytes | None]:
        """:meth:`encode_all` for one payload (``publish()``'s path): a payload the coercion
        vouched for, or that passes the compiled check, is serialized at once; anything
        else (a tombstone, an invalid payload) goes through :meth:`encode_all`, so its
        errors are the list hook's."""
        check, enc, pop, encode_all = self.check, _encode_json, self._vouched.pop, \
            self.encode_all

        def encode(p: Any) -> bytes | None:
            if p is not None and (pop(id(p), None) is p or (check is not None and check(p))):
                try:
                    return header + enc(p)
                except (TypeError, ValueError):
                    pass  # encode_all reports it
            return encode_all(header, (p,), topic)[0]

        return encode

    def decode_one(self, data: bytes, offset: int, what: str) -> Any:
        try:
            value = _decode_json(data[offset:] if offset else data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise DecodeError(f"{what} is not UTF-8 JSON: {exc}") from exc
        fill = self.fill
        return fill(value) if fill is not None else value


class _State(CodecState[Codec]):
    label = "JSON Schema"
    cache_key = _CACHE_KEY

    def __init__(self, context: SchemaContext) -> None:
        super().__init__(context)
        self.settings = _settings(context)

    def load(self, name: str) -> schemas.JsonSchema:
        return schemas.load(self.context.settings.schema.path, name,
                            self.settings.default_draft)

    def value_codec(self, name: str) -> Codec:
        return Codec(self.load(name), "value", self.settings.fill_defaults)

    def field_key_codec(self, value: Codec, field: str) -> Codec:
        return Codec(schemas.key_schema(value.schema, field), "key", False)

    def key_codec(self, name: str) -> Codec:
        return Codec(self.load(name), "key", False)


def _state(context: SchemaContext) -> _State:
    return _State.of(context)  # type: ignore[return-value]


def _settings(context: SchemaContext) -> JsonSchemaSettings:
    section = getattr(context.settings, "jsonschema", None)
    return section if isinstance(section, JsonSchemaSettings) else JsonSchemaSettings()


class JsonBackend:
    """Shared hooks; subclasses frame the JSON (``_header``/``_offset``)."""

    name: ClassVar[str] = "json"

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[JsonSchemaSettings]]:
        return {"jsonschema": JsonSchemaSettings}

    # -- values ------------------------------------------------------------------------------

    @hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        codec = _state(context).value()
        assert codec is not None
        return codec.encode_all(self._header(context, codec), payloads, context.topic)

    @hookimpl
    def deimos_schema_encoder(self, context: SchemaContext, role: str
                              ) -> Callable[[Any], bytes | None] | None:
        if role == "key":
            return plain_key_encoder(context.key_config)
        codec = _state(context).value()
        assert codec is not None
        return codec.encoder(self._header(context, codec), context.topic)

    @hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        return self._decode(context, _state(context).value(required=False), data, "value")

    @hookimpl
    def deimos_schema_validate(self, context: SchemaContext, payload: Any) -> None:
        if payload is None:
            return
        codec = _state(context).value()
        assert codec is not None
        errors = codec.schema.errors(payload)
        if errors:
            raise SchemaValidationError(errors, context.topic)

    @hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        coerce = context.cache.get(_COERCE_KEY)
        if coerce is None:
            codec = _state(context).value()
            assert codec is not None
            coerce = context.cache[_COERCE_KEY] = codec.coerce
        return coerce(payload)

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        codec = _state(context).value(required=False)
        return [] if codec is None else schemas.fields_of(codec.schema)

    @hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "json_local"

    # -- keys --------------------------------------------------------------------------------

    @hookimpl
    def deimos_schema_encode_key(self, context: SchemaContext, keys: Sequence[Any]
                                 ) -> list[bytes | None]:
        kc = context.key_config
        if kc.kind in ("plain", "none"):
            return encode_plain_keys(keys)
        codec = _state(context).key()
        assert codec is not None
        if kc.kind == "field":
            fname = key_field_name(kc)
            records: list[Any] = [None if k is None else {fname: k} for k in keys]
        else:
            props = codec.root.get("properties", {})
            single = next(iter(props)) if len(props) == 1 else None
            records = key_records(keys, single)
        records = [codec.coerce(r) for r in records]
        try:
            return codec.encode_all(self._header(context, codec), records, context.topic)
        except SchemaValidationError as exc:
            raise CoercionError([("<key>" + p.removeprefix("$"), m) for p, m in exc.errors],
                                context.topic) from None

    @hookimpl
    def deimos_schema_decode_key(self, context: SchemaContext, data: Sequence[bytes | None]
                                 ) -> list[Any]:
        kc = context.key_config
        if kc.kind in ("plain", "none"):
            return decode_plain_keys(data)
        decoded = self._decode(context, _state(context).key(required=False), data, "key")
        if kc.kind == "field":
            fname = key_field_name(kc)
            return [r.get(fname) if isinstance(r, dict) else r for r in decoded]
        return decoded

    # -- framing -----------------------------------------------------------------------------

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        raise NotImplementedError

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        raise NotImplementedError


class JsonSchemaRegistryBackend(JsonBackend):
    """``json_schema_registry``: Confluent wire format with a (mock or real) registry."""

    name = "json_schema_registry"

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        header = codec.header
        if header is None:
            options = _settings(context)
            client = registry_client(context.settings, options.registry_config)
            subject = subject_name(options.subject_name_strategy, context.topic, codec.role,
                                   codec.schema.full_name)
            sid, _ = writer_schema_id(context.settings, client, subject,
                                      Schema(codec.schema.text, "JSON"), options)
            header = codec.header = b"\x00" + sid.to_bytes(4, "big")
        return header

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        what = f"JSON {role} on topic {context.topic!r}"
        # JSON describes itself: any writer schema id decodes without fetching the schema;
        # the reader schema (when configured) only adds its defaults.
        one = codec.decode_one if codec is not None else _bare_decode
        out: list[Any] = []
        for d in data:
            if d is None:
                out.append(None)
                continue
            if len(d) < 5 or d[0] != 0:
                raise DecodeError(f"{what} is not in the Confluent wire format (magic byte 0 "
                                  f"and a 4-byte schema id); first bytes: {d[:5]!r}")
            out.append(one(d, 5, what))
        return out


def _bare_decode(data: bytes, offset: int, what: str) -> Any:
    try:
        return _decode_json(data[offset:])
    except ValueError as exc:
        raise DecodeError(f"{what} is not UTF-8 JSON: {exc}") from exc


class JsonLocalBackend(JsonBackend):
    """``json_local``: no registry, no framing: compact UTF-8 JSON."""

    name = "json_local"

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        return b""

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        what = f"JSON {role} on topic {context.topic!r}"
        one = codec.decode_one if codec is not None else _bare_decode
        return [None if d is None else one(d, 0, what) for d in data]
