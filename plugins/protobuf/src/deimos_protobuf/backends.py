"""The two Protobuf schema backends; they differ only in how the protobuf binary is framed.

===========================  ==============================================================
backend                      bytes of one message
===========================  ==============================================================
``proto_schema_registry``    Confluent wire format: ``0x00``, 4-byte big-endian schema id,
                             the message-index list (:mod:`deimos_protobuf.wire`), protobuf
                             binary. The ``.proto`` file is registered with its imports as
                             schema references. Decodes any writer id.
``proto_local``              the bare protobuf binary (``SerializeToString``), no framing and
                             no registry: what most non-Confluent protobuf producers write.
                             Decoding needs the configured message type. It is the test
                             stand-in (``mock``) of ``proto_schema_registry`` and validates
                             like it.
===========================  ==============================================================

Everything per schema (descriptor lookup, converter, registry id, header) happens once per
:class:`~deimos.schema.base.SchemaContext` and is kept in ``context.cache``; a payload that is
already a message of the schema's class is serialized without any conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import click
from confluent_kafka.schema_registry import Schema, SchemaReference
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import EncodeError, Message

from deimos.errors import CoercionError, DecodeError, SchemaValidationError
from deimos.hookspecs import hookimpl
from deimos.schema.base import (
    SchemaContext,
    SchemaField,
    decode_plain_keys,
    encode_plain_keys,
    key_records,
    plain_key_encoder,
)
from deimos.schema.registry import registry_client, registry_failure
from deimos.schema.serde import subject_name, writer_schema_id
from deimos.schema.state import CodecState

from . import schemas, wire
from .convert import Converter, _plain, to_dict
from .settings import ProtobufSettings

_CACHE_KEY = "deimos_protobuf"
_COERCE_KEY = "deimos_protobuf.coerce"


class Codec:
    """One message type in one role (value or key) of one context: everything precomputed."""

    def __init__(self, desc: Descriptor, role: str) -> None:
        self.desc = desc
        self.role = role
        self.converter = Converter(desc)
        self.cls = self.converter.cls
        #: Confluent header (registry backend) once the schema id is known
        self.header: bytes | None = None
        #: (writer schema id, message indexes) -> class to parse with
        self.readers: dict[tuple[int, tuple[int, ...]], Any] = {}

    def invalid(self, payloads: Sequence[Any], topic: str) -> SchemaValidationError:
        """The error for a batch protobuf refused to serialize: every bad path."""
        errors: list[tuple[str, str]] = []
        for i, p in enumerate(payloads):
            if p is None:
                continue
            for path, msg in self.converter.errors(p):
                errors.append((path, msg if len(payloads) == 1 else f"{msg} (message {i})"))
        if not errors:
            errors.append(("", f"{self.role} refused by protobuf"))
        return SchemaValidationError(errors, topic)

    def serialize_all(self, header: bytes, payloads: Sequence[Any], topic: str
                      ) -> list[bytes | None]:
        """The hot loop: messages of our class are serialized as they are; anything else
        (dicts, messages of a same-named class) is converted first."""
        cls = self.cls
        conv = self.converter.coerce
        try:
            return [None if p is None else
                    header + (p if type(p) is cls else conv(p)).SerializeToString()
                    for p in payloads]
        except CoercionError as exc:
            raise CoercionError(exc.errors, topic) from None
        except EncodeError:  # a proto2 required field is missing
            raise self.invalid(payloads, topic) from None


    def serializer(self, header: bytes, topic: str) -> Callable[[Any], bytes | None]:
        """:meth:`serialize_all` for one payload (``publish()``'s path): a message of our
        class is serialized at once, anything else goes through :meth:`serialize_all`
        (conversion, and the list hook's errors)."""
        cls, serialize_all, invalid = self.cls, self.serialize_all, self.invalid

        def encode(p: Any) -> bytes | None:
            if type(p) is cls:
                try:
                    return header + p.SerializeToString()
                except EncodeError:  # a proto2 required field is missing
                    raise invalid((p,), topic) from None
            return serialize_all(header, (p,), topic)[0]

        return encode


class _State(CodecState[Codec]):
    label = "Protobuf"
    cache_key = _CACHE_KEY
    needs = "a message type"
    hint = "set `schema` (and `namespace`, the proto package) on the producer/consumer"

    def __init__(self, context: SchemaContext) -> None:
        super().__init__(context)
        self.settings = _settings(context)
        #: consumers get dicts unless protobuf.decode_as = "message"
        self.as_dict = self.settings.decode_as == "dict"

    def find(self, name: str) -> Descriptor:
        return schemas.find(self.settings, self.context.settings.schema.path, name)

    def value_codec(self, name: str) -> Codec:
        return Codec(self.find(name), "value")

    def field_key_codec(self, value: Codec, field: str) -> Codec:
        return Codec(schemas.key_descriptor(value.desc, field), "key")

    def key_codec(self, name: str) -> Codec:
        return Codec(self.find(name), "key")


def _state(context: SchemaContext) -> _State:
    return _State.of(context)  # type: ignore[return-value]


def _settings(context: SchemaContext) -> ProtobufSettings:
    section = getattr(context.settings, "protobuf", None)
    return section if isinstance(section, ProtobufSettings) else ProtobufSettings()


class ProtoBackend:
    """Shared hooks; subclasses frame the protobuf binary (``_header``/``_decode``)."""

    name: ClassVar[str] = "proto"

    # -- general hooks -----------------------------------------------------------------------

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[ProtobufSettings]]:
        return {"protobuf": ProtobufSettings}

    @hookimpl
    def deimos_cli_commands(self) -> Sequence[click.Command]:
        from .cli import protobuf_group

        return [protobuf_group]

    # -- values ------------------------------------------------------------------------------

    @hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        codec = _state(context).value()
        assert codec is not None
        return codec.serialize_all(self._header(context, codec), payloads, context.topic)

    @hookimpl
    def deimos_schema_encoder(self, context: SchemaContext, role: str
                              ) -> Callable[[Any], bytes | None] | None:
        if role == "key":
            return plain_key_encoder(context.key_config)
        codec = _state(context).value()
        assert codec is not None
        return codec.serializer(self._header(context, codec), context.topic)

    @hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        st = _state(context)
        return self._decode(context, st.value(required=False), data, "value", st.as_dict)

    @hookimpl
    def deimos_schema_validate(self, context: SchemaContext, payload: Any) -> None:
        if payload is None:
            return
        codec = _state(context).value()
        assert codec is not None
        errors = codec.converter.errors(payload)
        if errors:
            raise SchemaValidationError(errors, context.topic)

    @hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        # Called once per message: one dict lookup to the bound coerce of the value codec.
        coerce = context.cache.get(_COERCE_KEY)
        if coerce is None:
            codec = _state(context).value()
            assert codec is not None
            coerce = context.cache[_COERCE_KEY] = codec.converter.coerce
        try:
            return coerce(payload)
        except CoercionError as exc:
            raise CoercionError(exc.errors, context.topic) from None

    @hookimpl
    def deimos_schema_native_types(self, context: SchemaContext) -> Sequence[type]:
        # a message object of the schema's own class is serialized as it is (coerce returns
        # it unchanged): a producer skips preparing it
        codec = _state(context).value()
        assert codec is not None
        return (codec.cls,)

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        codec = _state(context).value(required=False)
        return [] if codec is None else schemas.fields_of(codec.desc)

    @hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "proto_local"

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
            fname = codec.desc.fields[0].name
            records: list[Any] = [None if k is None else {fname: k} for k in keys]
        else:
            fields = codec.desc.fields
            single = fields[0].name if len(fields) == 1 else None
            records = key_records(keys, single, (Mapping, Message))
        try:
            messages = [codec.converter.coerce(r) for r in records]
        except CoercionError as exc:
            raise CoercionError([(f"<key>.{p}" if p else "<key>", m) for p, m in exc.errors],
                                context.topic) from None
        return codec.serialize_all(self._header(context, codec), messages, context.topic)

    @hookimpl
    def deimos_schema_decode_key(self, context: SchemaContext, data: Sequence[bytes | None]
                                 ) -> list[Any]:
        kc = context.key_config
        if kc.kind in ("plain", "none"):
            return decode_plain_keys(data)
        st = _state(context)
        codec = st.key(required=False)
        if kc.kind == "field":
            decoded = self._decode(context, codec, data, "key", False)
            if codec is None:
                return [None if m is None else next(iter(to_dict(m).values()), None)
                        for m in decoded]
            fd = codec.desc.fields[0]
            return [None if m is None else _plain(fd, getattr(m, fd.name)) for m in decoded]
        return self._decode(context, codec, data, "key", st.as_dict)

    # -- framing -----------------------------------------------------------------------------

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        raise NotImplementedError

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str, as_dict: bool) -> list[Any]:
        raise NotImplementedError


def _parse(cls: Any, data: bytes, what: str) -> Message:
    try:
        return cls.FromString(data)
    except (ProtoDecodeError, ValueError, TypeError) as exc:
        raise DecodeError(f"{what} cannot be decoded as {cls.DESCRIPTOR.full_name}: "
                          f"{type(exc).__name__}: {exc}") from exc


class ProtoSchemaRegistryBackend(ProtoBackend):
    """``proto_schema_registry``: Confluent wire format with a (mock or real) registry."""

    name = "proto_schema_registry"

    @staticmethod
    def _client(context: SchemaContext) -> Any:
        return registry_client(context.settings, _settings(context).registry_config)

    def _references(self, context: SchemaContext, client: Any, file: FileDescriptor
                    ) -> list[SchemaReference]:
        """Every imported file (but the built-in ones) registered under its file name and
        referenced by it, depth first: what confluent-kafka's ProtobufSerializer does, so
        both register identical schemas and get the same ids."""
        options = _settings(context)
        refs = []
        for dep in file.dependencies:
            if schemas.is_builtin(dep.name):
                continue
            dep_refs = self._references(context, client, dep)
            schema = Schema(schemas.schema_text(dep), "PROTOBUF", dep_refs)
            norm = options.normalize_schemas
            register = options.auto_register_schemas
            try:
                if register:
                    client.register_schema(dep.name, schema, normalize_schemas=norm)
                version = client.lookup_schema(dep.name, schema, normalize_schemas=norm).version
            except Exception as exc:
                action = "register" if register else "look up"
                raise registry_failure(context.settings,
                                       f"{action} reference {dep.name!r}", exc) from None
            refs.append(SchemaReference(dep.name, dep.name, version))
        return refs

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        header = codec.header
        if header is None:
            options = _settings(context)
            client = self._client(context)
            file = codec.desc.file
            # use_latest_version/use_schema_id write the registered id without registering
            # anything, references included (as confluent-kafka's ProtobufSerializer).
            refs = [] if options.uses_registered else self._references(context, client, file)
            schema = Schema(schemas.schema_text(file), "PROTOBUF", refs)
            subject = subject_name(options.subject_name_strategy, context.topic, codec.role,
                                   codec.desc.full_name)
            sid, _ = writer_schema_id(context.settings, client, subject, schema, options,
                                      "serialized")
            indexes = wire.message_indexes(codec.desc)
            header = codec.header = wire.header(sid, indexes)
            codec.readers[(sid, tuple(indexes))] = codec.cls
        return header

    def _writer_class(self, context: SchemaContext, sid: int, indexes: tuple[int, ...]
                      ) -> Any:
        """The class of the message a writer registered (consumers without a schema). The
        schema is asked for in its serialized form (``format=serialized``), as
        confluent-kafka's ProtobufDeserializer does: a real registry answers ``.proto`` text
        otherwise."""
        client = self._client(context)
        try:
            sch = client.get_schema(sid, fmt="serialized")
            pool, fdp = schemas.writer_pool(client, sch)
        except Exception as exc:
            raise registry_failure(context.settings, f"fetch schema id {sid}", exc) from None
        return schemas.message_class(schemas.descriptor_at(pool, fdp, indexes))

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str, as_dict: bool) -> list[Any]:
        readers = codec.readers if codec is not None else context.cache.setdefault(
            f"{_CACHE_KEY}.writers.{role}", {})
        header = codec.header if codec is not None else None
        hlen = len(header) if header else 0
        what = f"Protobuf {role} on topic {context.topic!r}"
        out: list[Any] = []
        append = out.append
        for d in data:
            if d is None:
                append(None)
                continue
            if header is not None and d[:hlen] == header:
                msg = _parse(codec.cls, d[hlen:], what)  # type: ignore[union-attr]
            else:
                sid, indexes, offset = wire.parse(d, what)
                cls = readers.get((sid, indexes))
                if cls is None:
                    # With a reader message configured, read every writer's bytes with it
                    # (protobuf resolves by field number: added fields take their defaults,
                    # unknown ones are kept aside), as confluent-kafka's deserializer does.
                    cls = codec.cls if codec is not None else self._writer_class(
                        context, sid, indexes)
                    readers[(sid, indexes)] = cls
                msg = _parse(cls, d[offset:], f"{what} (writer schema id {sid})")
            append(to_dict(msg) if as_dict else msg)
        return out


class ProtoLocalBackend(ProtoBackend):
    """``proto_local``: no registry, no framing: the bare protobuf binary."""

    name = "proto_local"

    def _header(self, context: SchemaContext, codec: Codec) -> bytes:
        return b""

    def _decode(self, context: SchemaContext, codec: Codec | None,
                data: Sequence[bytes | None], role: str, as_dict: bool) -> list[Any]:
        if codec is None:
            raise DecodeError(f"proto_local needs a message type (`schema`) to decode "
                              f"the {role}s of topic {context.topic!r}")
        what = f"Protobuf {role} on topic {context.topic!r}"
        cls = codec.cls
        msgs = [None if d is None else _parse(cls, d, what) for d in data]
        return [None if m is None else to_dict(m) for m in msgs] if as_dict else msgs
