"""The three Avro schema backends; they differ only in how an Avro datum is framed.

==========================  =========================================================
backend                     bytes of one message
==========================  =========================================================
``avro_schema_registry``    Confluent wire format: ``0x00``, 4-byte big-endian schema
                            id, Avro binary. Decodes any writer id (schema evolution).
``avro_local``              Avro single-object encoding (Avro spec): ``0xC3 0x01``,
                            8-byte little-endian CRC-64-AVRO fingerprint of the schema's
                            canonical form, Avro binary. No registry; decoding needs the
                            same local schema (a different fingerprint is an error).
``avro_validation``         Avro's JSON encoding (Avro spec; unions as
                            ``{"type": value}``) of the validated payload: readable,
                            decodes back to the same Python values as binary Avro.
==========================  =========================================================

Everything per schema (parsing, checker compilation, registry id, 5-byte header) happens
once per :class:`~deimos.schema.base.SchemaContext` and is kept in ``context.cache``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from confluent_kafka.schema_registry import Schema
from fastavro import json_reader, json_writer, schemaless_reader, schemaless_writer

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
from deimos.schema.serde import subject_name
from deimos.schema.state import CodecState

from . import registry, schemas
from .coercion import Coercer, Validator, branch_checker, compile_checker
from .settings import AvroSettings

_CACHE_KEY = "deimos_avro"
_COERCE_KEY = "deimos_avro.coerce"
_SINGLE_OBJECT_MAGIC = b"\xc3\x01"


class Codec:
    """One schema in one role (value or key) of one context: everything precomputed."""

    def __init__(self, schema: schemas.AvroSchema, role: str) -> None:
        self.schema = schema
        self.role = role
        self.parsed = schema.parsed
        #: what the writer writes with: ``parsed``, or the registered schema that
        #: ``use_latest_version``/``use_schema_id`` chose
        self.write_parsed = schema.parsed
        named = schema.named
        self.check = compile_checker(schema.parsed, named)
        self.coercer = Coercer(named, branch_checker(named))
        self.validator = Validator(named)
        #: bytes before every datum (registry id header / single-object header)
        self.header: bytes | None = None
        #: registry writer id -> (writer schema, reader schema or None when identical)
        self.writers: dict[int, tuple[Any, Any]] = {}

    def coerce(self, payload: Any) -> Any:
        if payload is None or self.check(payload):
            return payload  # the fast path: already exactly what the schema says
        return self.coercer.coerce(self.parsed, payload, "")

    def errors(self, payload: Any) -> list[tuple[str, str]]:
        return self.validator.errors(self.parsed, payload)

    def invalid(self, payloads: Sequence[Any], topic: str, exc: BaseException
                ) -> SchemaValidationError:
        """The error for a batch the writer rejected: every bad path of every payload."""
        errors: list[tuple[str, str]] = []
        for i, p in enumerate(payloads):
            if p is None:
                continue
            for path, msg in self.errors(p):
                errors.append((path, msg if len(payloads) == 1 else f"{msg} (message {i})"))
        if not errors:
            errors.append(("", f"{self.role} rejected by the Avro writer: "
                               f"{type(exc).__name__}: {exc}"))
        return SchemaValidationError(errors, topic)


class _State(CodecState[Codec]):
    label = "Avro"
    cache_key = _CACHE_KEY

    @property
    def root(self) -> str:
        return self.context.settings.schema.path

    def value_codec(self, name: str) -> Codec:
        return Codec(schemas.load(self.root, name), "value")

    def field_key_codec(self, value: Codec, field: str) -> Codec:
        return Codec(schemas.key_schema(value.schema, field), "key")

    def key_codec(self, name: str) -> Codec:
        return Codec(schemas.load(self.root, name), "key")


def _state(context: SchemaContext) -> _State:
    return _State.of(context)  # type: ignore[return-value]


def _avro_settings(context: SchemaContext) -> AvroSettings:
    avro = getattr(context.settings, "avro", None)
    return avro if isinstance(avro, AvroSettings) else AvroSettings()


class AvroBackend:
    """Shared hooks; subclasses frame the Avro datum (``_encode``/``_decode``)."""

    name: ClassVar[str] = "avro"

    # -- general hooks -----------------------------------------------------------------------

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[AvroSettings]]:
        return {"avro": AvroSettings}

    @hookimpl
    def deimos_registry_compatibility(self, schema_type: str, reader: str, writer: str
                                      ) -> list[str] | None:
        if schema_type.upper() != "AVRO":
            return None
        from .compatibility import incompatibilities

        return incompatibilities(reader, writer)

    # -- values ------------------------------------------------------------------------------

    @hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        codec = _state(context).value()
        assert codec is not None
        return self._encode(context, codec, payloads)

    @hookimpl
    def deimos_schema_encoder(self, context: SchemaContext, role: str
                              ) -> Callable[[Any], bytes | None] | None:
        if role == "key":
            return plain_key_encoder(context.key_config)
        codec = _state(context).value()
        assert codec is not None
        header = self._frame(context, codec)
        return None if header is None else _writer_of(codec, header, context.topic)

    def _frame(self, context: SchemaContext, codec: Codec) -> bytes | None:
        """The header binary datums are prefixed with; ``None`` where this backend does not
        write framed binary Avro (then ``publish()`` uses the list hook)."""
        return None

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
        errors = codec.errors(payload)
        if errors:
            raise SchemaValidationError(errors, context.topic)

    @hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        # Called once per message: one dict lookup, then the compiled "already right" check
        # inline (no further call levels on the hot path); only a payload that fails it goes
        # through the coercer.
        check = context.cache.get(_COERCE_KEY)
        if check is None:
            codec = _state(context).value()
            assert codec is not None
            check = context.cache[_COERCE_KEY] = codec.check
        if payload is None or check(payload):
            return payload
        codec = _state(context).value()
        assert codec is not None
        try:
            return codec.coercer.coerce(codec.parsed, payload, "")
        except CoercionError as exc:
            raise CoercionError(exc.errors, context.topic) from None

    @hookimpl
    def deimos_schema_checker(self, context: SchemaContext) -> Callable[[Any], bool] | None:
        # the compiled "already right" check that deimos_schema_coerce returns on
        codec = _state(context).value()
        assert codec is not None
        return codec.check

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        codec = _state(context).value(required=False)
        return [] if codec is None else schemas.fields_of(codec.schema)

    @hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "avro_validation"

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
            fields = codec.parsed.get("fields") if isinstance(codec.parsed, dict) else None
            single = fields[0]["name"] if fields and len(fields) == 1 else None
            records = key_records(keys, single)
        try:
            records = [codec.coerce(r) for r in records]
        except CoercionError as exc:
            raise CoercionError([(f"<key>.{p}" if p else "<key>", m) for p, m in exc.errors],
                                context.topic) from None
        return self._encode(context, codec, records)

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

    def _encode(self, context: SchemaContext, codec: Codec, payloads: Sequence[Any]
                ) -> list[bytes | None]:
        raise NotImplementedError

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        raise NotImplementedError


class _Sink:
    """What fastavro's writer writes into in :func:`_write_all`: its ``write`` is a list's
    ``append``. Why: the C writer encodes a datum into a ``bytearray`` of its own and hands
    it to ``fo.write`` once, so a ``BytesIO`` per datum (made, written into, copied out,
    freed) is work for nothing (measured: 1,100 instructions of 46,500 per 6-field record).
    A writer that writes several pieces (fastavro's pure-Python fallback) is joined."""

    __slots__ = ("write",)

    def __init__(self, write: Callable[[Any], None]) -> None:
        self.write = write


def _write_all(codec: Codec, header: bytes, payloads: Sequence[Any], topic: str
               ) -> list[bytes | None]:
    """The hot loop: fastavro's writer into a :class:`_Sink` of this call's own (calls in
    other threads have theirs), each datum prefixed by the header built once."""
    schema = codec.write_parsed
    writer = schemaless_writer
    parts: list[Any] = []
    sink, pop = _Sink(parts.append), parts.pop
    out: list[bytes | None] = []
    append = out.append
    try:
        for p in payloads:
            if p is None:
                append(None)
                continue
            writer(sink, schema, p)  # type: ignore[arg-type]
            if len(parts) == 1:
                append(header + pop())
            else:
                append(header + b"".join(parts))
                parts.clear()
    except Exception as exc:  # fastavro raises TypeError/ValueError/AttributeError...
        raise codec.invalid(payloads, topic, exc) from None
    return out


def _writer_of(codec: Codec, header: bytes, topic: str) -> Callable[[Any], bytes | None]:
    """:func:`_write_all` for one payload: ``publish()``'s encoder. A ``BytesIO`` per call,
    not a :class:`_Sink`: one kept in this closure would be shared by every thread that
    publishes, and a thread switch between the write and the read would swap two messages'
    values (a sink made per call costs as much as the ``BytesIO``)."""
    schema = codec.write_parsed
    writer = schemaless_writer
    new = io.BytesIO

    def encode(p: Any) -> bytes | None:
        if p is None:
            return None
        buf = new()
        try:
            writer(buf, schema, p)
        except Exception as exc:  # as in _write_all
            raise codec.invalid((p,), topic, exc) from None
        return header + buf.getvalue()

    return encode


class AvroSchemaRegistryBackend(AvroBackend):
    """``avro_schema_registry``: Confluent wire format with a (mock or real) registry."""

    name = "avro_schema_registry"

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        header = codec.header
        if header is None:
            options = _avro_settings(context)
            subject = subject_name(options.subject_name_strategy, context.topic, codec.role,
                                   codec.schema.full_name)
            sid, registered = registry.schema_id(context.settings, subject, codec.schema,
                                                 options)
            if registered is not None and registered.canonical != codec.schema.canonical:
                # use_latest_version/use_schema_id: write with the registered schema, as
                # confluent-kafka's AvroSerializer does; reading it back resolves to ours.
                codec.write_parsed = registered.parsed
                codec.writers[sid] = (registered.parsed, codec.parsed)
            else:
                # Our own id needs no resolution when we read it back.
                codec.writers[sid] = (codec.parsed, None)
            header = codec.header = b"\x00" + sid.to_bytes(4, "big")
        return header

    def _encode(self, context: SchemaContext, codec: Codec, payloads: Sequence[Any]
                ) -> list[bytes | None]:
        return _write_all(codec, self._header(context, codec), payloads, context.topic)

    def _frame(self, context: SchemaContext, codec: Codec) -> bytes | None:
        return self._header(context, codec)

    @hookimpl
    def deimos_schema_registry_schemas(self, context: SchemaContext
                                       ) -> list[tuple[str, Schema]]:
        options = _avro_settings(context)
        state = _state(context)
        codecs = [state.value()]
        if context.key_config.kind in ("field", "schema"):
            codecs.append(state.key())
        return [(subject_name(options.subject_name_strategy, context.topic, c.role,
                              c.schema.full_name), Schema(c.schema.text, "AVRO"))
                for c in codecs if c is not None]

    def _writer(self, context: SchemaContext, codec: Codec | None, sid: int
                ) -> tuple[Any, Any]:
        writer = registry.writer_schema(context.settings, sid)
        if codec is None or writer.canonical == codec.schema.canonical:
            entry: tuple[Any, Any] = (writer.parsed, None)
        else:
            entry = (writer.parsed, codec.parsed)  # fastavro resolves writer -> reader
        if codec is not None:
            codec.writers[sid] = entry
        return entry

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        writers = codec.writers if codec is not None else context.cache.setdefault(
            f"{_CACHE_KEY}.writers", {})
        reader = schemaless_reader
        out: list[Any] = []
        append = out.append
        for d in data:
            if d is None:
                append(None)
                continue
            if len(d) < 5 or d[0] != 0:
                raise DecodeError(
                    f"Avro {role} on topic {context.topic!r} is not in the Confluent wire "
                    f"format (magic byte 0 and a 4-byte schema id); first bytes: {d[:5]!r}")
            sid = int.from_bytes(d[1:5], "big")
            entry = writers.get(sid)
            if entry is None:
                entry = self._writer(context, codec, sid)
                writers[sid] = entry
            buf = io.BytesIO(d)
            buf.seek(5)
            try:
                append(reader(buf, entry[0], entry[1]))
            except Exception as exc:
                raise DecodeError(
                    f"Avro {role} on topic {context.topic!r} (writer schema id {sid}) cannot "
                    f"be decoded: {type(exc).__name__}: {exc}") from exc
        return out


class AvroLocalBackend(AvroBackend):
    """``avro_local``: no registry; Avro single-object encoding with the local schema."""

    name = "avro_local"

    def _encode(self, context: SchemaContext, codec: Codec, payloads: Sequence[Any]
                ) -> list[bytes | None]:
        return _write_all(codec, self._frame(context, codec), payloads, context.topic)

    def _frame(self, context: SchemaContext, codec: Codec) -> bytes:
        if codec.header is None:
            codec.header = _SINGLE_OBJECT_MAGIC + codec.schema.fingerprint
        return codec.header

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        if codec is None:
            raise DecodeError(f"avro_local needs a schema to decode topic {context.topic!r}")
        if codec.header is None:
            codec.header = _SINGLE_OBJECT_MAGIC + codec.schema.fingerprint
        header, schema = codec.header, codec.parsed
        out: list[Any] = []
        for d in data:
            if d is None:
                out.append(None)
                continue
            if not d.startswith(header):
                if d.startswith(_SINGLE_OBJECT_MAGIC):
                    raise DecodeError(
                        f"Avro {role} on topic {context.topic!r} was written with schema "
                        f"fingerprint {d[2:10].hex()}, not {codec.schema.full_name} "
                        f"({header[2:].hex()}); avro_local cannot resolve other schemas")
                raise DecodeError(f"Avro {role} on topic {context.topic!r} is not in Avro "
                                  f"single-object encoding; first bytes: {d[:4]!r}")
            buf = io.BytesIO(d)
            buf.seek(10)
            try:
                out.append(schemaless_reader(buf, schema, None))
            except Exception as exc:
                raise DecodeError(f"Avro {role} on topic {context.topic!r} cannot be decoded: "
                                  f"{type(exc).__name__}: {exc}") from exc
        return out


class AvroValidationBackend(AvroBackend):
    """``avro_validation``: the test stand-in. Validates every payload against the schema
    and encodes it with Avro's JSON encoding, so tests see readable bytes and decode gets
    the same Python values binary Avro would give."""

    name = "avro_validation"

    def _encode(self, context: SchemaContext, codec: Codec, payloads: Sequence[Any]
                ) -> list[bytes | None]:
        errors: list[tuple[str, str]] = []
        for i, p in enumerate(payloads):
            if p is not None:
                errors += [(path, msg if len(payloads) == 1 else f"{msg} (message {i})")
                           for path, msg in codec.errors(p)]
        if errors:
            raise SchemaValidationError(errors, context.topic)
        out: list[bytes | None] = []
        for p in payloads:
            if p is None:
                out.append(None)
                continue
            buf = io.StringIO()
            try:
                json_writer(buf, codec.parsed, [p])
            except Exception as exc:
                raise codec.invalid([p], context.topic, exc) from None
            out.append(buf.getvalue().rstrip("\n").encode())
        return out

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str) -> list[Any]:
        if codec is None:
            raise DecodeError(
                f"avro_validation needs a schema to decode topic {context.topic!r}")
        out: list[Any] = []
        for d in data:
            if d is None:
                out.append(None)
                continue
            try:
                out.append(next(iter(json_reader(io.StringIO(d.decode()), codec.parsed))))
            except Exception as exc:
                raise DecodeError(f"Avro JSON {role} on topic {context.topic!r} cannot be "
                                  f"decoded: {type(exc).__name__}: {exc}") from exc
        return out
