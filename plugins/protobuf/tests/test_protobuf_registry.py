"""Wire compatibility with confluent-kafka's ProtobufSerializer/ProtobufDeserializer (values,
keys, references, nested message indexes), schema evolution, .proto files compiled at load
time, and invalid payloads stopped before anything is produced."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.message_factory import GetMessageClass

import deimos
from deimos import config as _config
from deimos.backends import test as test_backend
from deimos.config import build_settings
from deimos.errors import DecodeError, SchemaError, SchemaValidationError
from deimos_protobuf import registry_client, wire

HERE = Path(__file__).parent
EVOLUTION = HERE / "evolution"
COMPILED = HERE / "compiled"


def _client(url: str) -> Any:
    return registry_client(build_settings({"schema": {"registry_url": url}}, environ={}).settings)


def _ser(client: Any, cls: Any, **conf: Any) -> ProtobufSerializer:
    return ProtobufSerializer(cls, client, {"use.deprecated.format": False, **conf})


def test_values_compatible_with_confluent_both_ways(make: Any, registry_url: str,
                                                    pb2: dict[str, ModuleType]) -> None:
    w = pb2["widget_pb2"]
    msg = w.Widget(id=3, name="gear", tags=["x"], color=w.BLUE, radius=1.5,
                   part=pb2["part_pb2"].Part(sku="p", qty=1))
    msg.updated_at.FromDatetime(dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc))
    msg.counts["a"] = 2
    b = make(protobuf={"decode_as": "message"})
    [ours] = b.encode(b.context, [b.coerce(b.context, msg)])
    client = _client(registry_url)
    ctx = SerializationContext("widgets", MessageField.VALUE)
    assert ProtobufDeserializer(w.Widget, {}, client)(ours, ctx) == msg
    theirs = _ser(client, w.Widget)(msg, ctx)
    assert theirs == ours  # same schema and references -> same id, same index list
    assert b.decode(b.context, [theirs]) == [msg]
    # the import (part.proto) is registered as a reference; the built-in timestamp is not
    registered = client.get_latest_version("widgets-value").schema
    assert [(r.name, r.subject) for r in registered.references] == [
        ("com/example/part.proto", "com/example/part.proto")]


def test_nested_message_index_list(make: Any, registry_url: str,
                                   pb2: dict[str, ModuleType]) -> None:
    note_cls = pb2["widget_pb2"].Widget.Note
    b = make(schema="com.example.Widget.Note", topic="notes", protobuf={"decode_as": "message"})
    [ours] = b.encode(b.context, [{"text": "hi"}])
    # nested type 0 is the map entry CountsEntry that map<> generates
    assert wire.message_indexes(note_cls.DESCRIPTOR) == [0, 1]
    assert ours is not None and ours[5:8] == b"\x04\x00\x02"  # zigzag: count 2, 0, 1
    client = _client(registry_url)
    ctx = SerializationContext("notes", MessageField.VALUE)
    assert ProtobufDeserializer(note_cls, {}, client)(ours, ctx) == note_cls(text="hi")
    theirs = _ser(client, note_cls)(note_cls(text="yo"), ctx)
    assert b.decode(b.context, [theirs]) == [note_cls(text="yo")]
    assert wire.parse(theirs, "x")[1] == (0, 1)
    key = wire.message_indexes(pb2["widget_pb2"].WidgetKey.DESCRIPTOR)
    assert key == [1] and wire.encode_indexes(key) == b"\x02\x02"


def test_keys_compatible_with_confluent(make: Any, registry_url: str,
                                        pb2: dict[str, ModuleType]) -> None:
    client = _client(registry_url)
    kctx = SerializationContext("widgets", MessageField.KEY)
    b = make(key_config={"field": "id"})
    [ours] = b.encode_key(b.context, ["42"])  # coerced to the int64 of Widget.id
    key_desc = b.context.cache["deimos_protobuf"].key().desc
    assert key_desc.full_name == "com.example.Widget_key"
    key_cls = GetMessageClass(key_desc)
    assert ProtobufDeserializer(key_cls, {}, client)(ours, kctx) == key_cls(id=42)
    assert client.get_latest_version("widgets-key").schema_id == int.from_bytes(ours[1:5], "big")
    theirs = _ser(client, key_cls)(key_cls(id=42), kctx)
    assert theirs == ours
    assert b.decode_key(b.context, [theirs]) == [42]

    wk = pb2["widget_pb2"].WidgetKey
    s = make(key_config={"schema": "WidgetKey"}, topic="skeys")
    [enc] = s.encode_key(s.context, [{"id": 1, "region": "eu"}])
    sctx = SerializationContext("skeys", MessageField.KEY)
    assert ProtobufDeserializer(wk, {}, client)(enc, sctx) == wk(id=1, region="eu")
    theirs = _ser(client, wk)(wk(id=2, region="us"), sctx)
    assert s.decode_key(s.context, [theirs]) == [{"id": 2, "region": "us"}]


def test_consumer_without_schema_decodes_with_the_writer_schema(
        make: Any, registry_url: str, pb2: dict[str, ModuleType]) -> None:
    client = _client(registry_url)
    w = pb2["widget_pb2"]
    data = _ser(client, w.Widget)(w.Widget(id=9, part=pb2["part_pb2"].Part(sku="s")),
                                  SerializationContext("any", MessageField.VALUE))
    b = make(schema=None, topic="any")
    [decoded] = b.decode(b.context, [data])
    assert decoded["id"] == 9 and decoded["part"] == {"sku": "s", "qty": 0}


def test_evolution_both_directions(make: Any) -> None:
    v1 = make(schema="Thing", namespace="com.evolve", path=EVOLUTION / "v1", topic="things")
    old = v1.encode(v1.context, [{"id": 1, "name": "a", "legacy": "gone"}])
    v2 = make(schema="Thing", namespace="com.evolve", path=EVOLUTION / "v2", topic="things")
    new = v2.encode(v2.context, [{"id": 2, "name": "b", "size": 9}])
    assert old[0] is not None and new[0] is not None and old[0][1:5] != new[0][1:5]
    # new reader, old message: the removed field is dropped, the added one has its default
    assert v2.decode(v2.context, old + new) == [{"id": 1, "name": "a", "size": 0},
                                               {"id": 2, "name": "b", "size": 9}]
    # old reader, new message: the unknown field is skipped
    assert v1.decode(v1.context, new) == [{"id": 2, "name": "b", "legacy": ""}]


def test_proto_files_compiled_at_load_time(make: Any) -> None:
    b = make(schema="Gadget", namespace="com.compiled", path=COMPILED, topic="gadgets")
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    payload = b.coerce(b.context, {"id": 7, "made_at": "2024-01-02T03:04:05Z",
                                   "meta": {"owner": "ops"}})
    assert b.decode(b.context, b.encode(b.context, [payload])) == [
        {"id": "7", "made_at": when, "meta": {"owner": "ops"}}]


def test_missing_message_names_where_it_looked(make: Any, tmp_path: Path) -> None:
    b = make(schema="Nope", path=tmp_path)
    with pytest.raises(SchemaError) as info:
        b.encode(b.context, [{}])
    assert "com.example.Nope" in str(info.value) and str(tmp_path) in str(info.value)


def test_proto2_required_fields(make: Any, pb2: dict[str, ModuleType]) -> None:
    b = make(schema="Order", namespace="com.example.legacy", topic="orders")
    with pytest.raises(SchemaValidationError) as info:
        b.encode(b.context, [b.coerce(b.context, {"qty": 1, "lines": [{}]})])
    paths = [p for p, _ in info.value.errors]
    assert "id" in paths and "lines[0].sku" in paths
    order = pb2["order_pb2"].Order(qty=1)  # a message object missing a required field
    with pytest.raises(SchemaValidationError) as info:
        b.encode(b.context, [order])
    assert [p for p, _ in info.value.errors] == ["id"]
    with pytest.raises(SchemaValidationError):
        b.validate(b.context, order)


def test_garbage_and_truncated_frames(make: Any) -> None:
    b = make()
    for bad in (b"\x00\x00", b"\x01\x00\x00\x00\x01\x00", b"\x00\x00\x00\x00\x01\x7f"):
        with pytest.raises(DecodeError):
            b.decode(b.context, [bad])


@pytest.fixture
def producer_settings(registry_url: str, pb2: dict[str, ModuleType]) -> Any:
    _config.reset()
    deimos.configure(schema={"backend": "proto_schema_registry", "registry_url": registry_url,
                             "path": str(HERE / "protos")},
                     protobuf={"modules": ["com.example.widget_pb2"]},
                     producers={"backend": "test"})
    test_backend.clear()
    yield
    test_backend.clear()
    _config.reset()


def test_bad_input_raises_before_anything_is_produced(producer_settings: Any) -> None:
    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"
        key_config = {"field": "id"}

    good = {"id": 1, "name": "ok"}
    bad = {"id": 2, "name": "x", "tags": ["a", ["nested"]], "part": {"qty": "many"}}
    with pytest.raises(SchemaValidationError) as info:
        WidgetProducer.publish_list([good, bad])
    paths = [p for p, _ in info.value.errors]
    assert "tags[1]" in paths and "part.qty" in paths
    assert "widgets" in str(info.value)
    assert test_backend.messages() == []
    WidgetProducer.publish_list([good, {"id": "3", "name": "coerced"}])
    sent = test_backend.messages()
    assert [m.encoded_payload[:1] for m in sent] == [b"\x00", b"\x00"]


def test_message_objects_are_published_without_a_coercion_call_and_as_their_dicts_are(
        producer_settings: Any, pb2: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """deimos_schema_native_types: a message of the schema's class skips the per-message
    preparation (half of a publish_list's CPU, measured), and sends the same bytes."""
    from deimos_protobuf.convert import Converter

    coerced: list[Any] = []
    original = Converter.coerce

    def counting(self: Converter, payload: Any) -> Any:
        if self.full_name == "com.example.Widget":  # values (keys have a converter too)
            coerced.append(payload)
        return original(self, payload)

    monkeypatch.setattr(Converter, "coerce", counting)

    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"
        key_config = {"field": "id"}

    widget = pb2["widget_pb2"].Widget
    dicts = [{"id": i, "name": f"w{i}"} for i in range(3)]
    WidgetProducer.publish_list(dicts)  # dicts: coerced into messages, keys from "id"
    assert len(coerced) == 3
    as_dicts = [m.encoded_payload for m in test_backend.messages()]
    test_backend.clear()
    coerced.clear()

    objects = [widget(id=i, name=f"w{i}") for i in range(3)]
    WidgetProducer.publish_list(objects, keys=[0, 1, 2])
    WidgetProducer.publish(objects[0], key=0)
    asyncio.run(WidgetProducer.apublish(objects[1], key=1))
    assert coerced == [], "message objects were coerced one by one"
    sent = test_backend.messages()
    assert [m.encoded_payload for m in sent] == [*as_dicts, as_dicts[0], as_dicts[1]]
    assert [m.payload for m in sent] == [*objects, objects[0], objects[1]]

    # without its key the message goes the general way: the key is read from its field
    WidgetProducer.publish(objects[2])
    assert test_backend.messages()[-1].encoded_key == sent[2].encoded_key
