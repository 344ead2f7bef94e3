"""Wire compatibility with confluent-kafka's serializers, schema evolution, subjects and
registry errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deimos.config import build_settings
from deimos.errors import DecodeError, SchemaError
from deimos_avro import RegistryError, registry_client

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
EVOLUTION = HERE / "evolution"

WIDGET = {"id": 3, "name": "gear", "tags": ["x"], "color": "BLUE",
          "part": {"sku": "p", "qty": 1}, "shape": {"radius": 1.5}}


def _client(url: str) -> Any:
    return registry_client(build_settings({"schema": {"registry_url": url}}, environ={}).settings)


def _cache(b: Any) -> Any:
    return b.context.cache["deimos_avro"]


def test_values_compatible_with_confluent_both_ways(make: Any, registry_url: str) -> None:
    b = make()
    [ours] = b.encode(b.context, [b.coerce(b.context, WIDGET)])
    assert ours is not None and ours[0] == 0
    client = _client(registry_url)
    ctx = SerializationContext("widgets", MessageField.VALUE)
    assert AvroDeserializer(client)(ours, ctx) == WIDGET
    text = _cache(b).value().schema.text
    theirs = AvroSerializer(client, text)(WIDGET, ctx)
    assert theirs == ours  # same schema -> same id -> same bytes
    other = AvroSerializer(client, (SCHEMAS / "com/example/Part.avsc").read_text(),
                           conf={"auto.register.schemas": True})
    part_bytes = other({"sku": "s", "qty": 4}, SerializationContext("parts", MessageField.VALUE))
    parts = make(schema=None, topic="parts")  # no reader schema: decode with the writer's
    assert parts.decode(parts.context, [part_bytes]) == [{"sku": "s", "qty": 4}]


def test_keys_compatible_with_confluent(make: Any, registry_url: str) -> None:
    client = _client(registry_url)
    kctx = SerializationContext("widgets", MessageField.KEY)
    b = make(key_config={"field": "id"})
    [ours] = b.encode_key(b.context, ["42"])
    assert AvroDeserializer(client)(ours, kctx) == {"id": 42}
    key_text = _cache(b).key().schema.text
    assert json.loads(key_text)["name"] == "com.example.Widget_key"
    assert client.get_latest_version("widgets-key").schema_id == int.from_bytes(ours[1:5], "big")
    theirs = AvroSerializer(client, key_text)({"id": 42}, kctx)
    assert b.decode_key(b.context, [theirs]) == [42]

    s = make(key_config={"schema": "WidgetKey"}, topic="skeys")
    key = {"id": 1, "region": "eu"}
    [enc] = s.encode_key(s.context, [key])
    assert AvroDeserializer(client)(enc, SerializationContext("skeys", MessageField.KEY)) == key
    assert s.decode_key(s.context, [enc]) == [key]


def test_plain_key_is_utf8(make: Any) -> None:
    b = make(key_config="plain")
    assert b.encode_key(b.context, ["ключ", 5, b"raw"]) == ["ключ".encode(), b"5", b"raw"]
    assert b.decode_key(b.context, ["ключ".encode()]) == ["ключ"]


def test_evolution_new_reader_reads_old_messages(make: Any) -> None:
    v1 = make(schema="Thing", path=EVOLUTION / "v1", topic="things")
    old = v1.encode(v1.context, [{"id": 1, "name": "a", "legacy": "gone"}])
    v2 = make(schema="Thing", path=EVOLUTION / "v2", topic="things")
    new = v2.encode(v2.context, [{"id": 2, "name": "b", "size": 9}])
    assert old[0][1:5] != new[0][1:5]  # two schema versions, two ids
    # v2 reads v1 (added field gets its default, removed field is dropped) and itself
    assert v2.decode(v2.context, old + new) == [{"id": 1, "name": "a", "size": 3},
                                                {"id": 2, "name": "b", "size": 9}]
    writers = _cache(v2).value().writers
    assert len(writers) == 2  # parsed once per writer id, then cached


def test_evolution_incompatible_reader_is_a_decode_error(make: Any) -> None:
    v2 = make(schema="Thing", path=EVOLUTION / "v2", topic="things")
    new = v2.encode(v2.context, [{"id": 2, "name": "b", "size": 9}])
    v1 = make(schema="Thing", path=EVOLUTION / "v1", topic="things")
    with pytest.raises(DecodeError, match="things"):
        v1.decode(v1.context, new)  # v1 needs 'legacy', which v2 messages lack


@pytest.mark.parametrize(("strategy", "subject"), [
    ("topic", "widgets-value"),
    ("record", "com.example.Widget"),
    ("topic-record", "widgets-com.example.Widget"),
])
def test_subject_name_strategy(make: Any, registry_url: str, strategy: str,
                               subject: str) -> None:
    b = make(avro={"subject_name_strategy": strategy})
    b.encode(b.context, [WIDGET])
    assert subject in _client(registry_url).get_subjects()


def test_lookup_only_fails_for_unregistered_subject(make: Any) -> None:
    b = make(avro={"auto_register": False})
    with pytest.raises(RegistryError, match="look up subject 'widgets-value'"):
        b.encode(b.context, [WIDGET])


def test_schema_id_resolved_once(make: Any, registry_url: str) -> None:
    b = make()
    calls = []
    client = _client(registry_url)
    original = client.register_schema
    client.register_schema = lambda *a, **k: calls.append(a) or original(*a, **k)
    for _ in range(3):
        b.encode(b.context, [WIDGET, WIDGET])
    assert len(calls) == 1


def test_unreachable_registry_names_url_without_password(make: Any) -> None:
    b = make(url="http://user:secret@127.0.0.1:1",
             avro={"registry_config": {"max.retries": 0, "timeout": 2}})
    with pytest.raises(RegistryError) as info:
        b.encode(b.context, [WIDGET])
    msg = str(info.value)
    assert "127.0.0.1:1" in msg and "Cannot reach the schema registry" in msg
    assert "secret" not in msg and info.value.__cause__ is None


def test_credentials_from_settings_are_masked(make: Any) -> None:
    b = make(url="http://127.0.0.1:1", user="bob", password="hunter2",
             avro={"registry_config": {"max.retries": 0, "timeout": 2}})
    with pytest.raises(RegistryError) as info:
        b.encode(b.context, [WIDGET])
    assert "hunter2" not in str(info.value)


def test_not_wire_format_is_decode_error(make: Any) -> None:
    b = make()
    with pytest.raises(DecodeError, match="Confluent wire format"):
        b.decode(b.context, [b"{}"])


def test_avro_local_single_object_encoding(make: Any) -> None:
    b = make("avro_local")
    [enc] = b.encode(b.context, [WIDGET])
    assert enc is not None and enc[:2] == b"\xc3\x01"
    assert b.decode(b.context, [enc]) == [WIDGET]
    other = make("avro_local", schema="Part")
    with pytest.raises(DecodeError, match="fingerprint"):
        other.decode(other.context, [enc])


def test_avro_validation_encodes_avro_json(make: Any) -> None:
    b = make("avro_validation")
    [enc] = b.encode(b.context, [WIDGET])
    assert enc is not None
    doc = json.loads(enc)
    assert doc["id"] == 3 and doc["shape"] == {"com.example.Circle": {"radius": 1.5}}
    assert b.decode(b.context, [enc]) == [WIDGET]


def test_mock_is_avro_validation(make: Any) -> None:
    for name in ("avro_schema_registry", "avro_local", "avro_validation"):
        b = make(name)
        assert b.mock(b.context) == "avro_validation"


def test_missing_schema_for_backend(make: Any) -> None:
    b = make(schema=None)
    with pytest.raises(SchemaError, match="needs a schema"):
        b.encode(b.context, [WIDGET])
