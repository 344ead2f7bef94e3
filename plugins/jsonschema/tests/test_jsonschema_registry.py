"""Wire compatibility with confluent-kafka's JSONSerializer/JSONDeserializer, evolution,
coercion per types and formats, draft 7, and bad input stopped before producing."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import deimos
from deimos import config as _config
from deimos.backends import test as test_backend
from deimos.config import build_settings
from deimos.errors import SchemaValidationError
from deimos_jsonschema import registry_client

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
EVOLUTION = HERE / "evolution"
WIDGET = {"id": 3, "name": "gëar", "tags": ["x"], "color": "BLUE", "part": {"sku": "p"}}


def _client(url: str) -> Any:
    return registry_client(build_settings({"schema": {"registry_url": url}}, environ={}).settings)


def test_values_compatible_with_confluent_both_ways(make: Any, registry_url: str) -> None:
    b = make()
    [ours] = b.encode(b.context, [b.coerce(b.context, WIDGET)])
    client = _client(registry_url)
    ctx = SerializationContext("widgets", MessageField.VALUE)
    text = (SCHEMAS / "com/example/Widget.json").read_text().strip()
    assert JSONDeserializer(text, schema_registry_client=client)(ours, ctx) == WIDGET
    theirs = JSONSerializer(text, client)(WIDGET, ctx)
    assert theirs == ours  # same schema text -> same id; same compact UTF-8 JSON
    assert b.decode(b.context, [theirs]) == [{**WIDGET, "price": None}]  # default filled


def test_keys_compatible_with_confluent(make: Any, registry_url: str) -> None:
    client = _client(registry_url)
    kctx = SerializationContext("widgets", MessageField.KEY)
    b = make(key_config={"field": "id"})
    [ours] = b.encode_key(b.context, ["42"])
    assert ours is not None and ours[5:] == b'{"id":42}'
    assert JSONDeserializer(None, schema_registry_client=client)(ours, kctx) == {"id": 42}
    key_text = client.get_latest_version("widgets-key").schema.schema_str
    assert json.loads(key_text)["required"] == ["id"]
    theirs = JSONSerializer(key_text, client)({"id": 42}, kctx)
    assert theirs == ours and b.decode_key(b.context, [theirs]) == [42]

    s = make(key_config={"schema": "WidgetKey"}, topic="skeys")
    key = {"id": 1, "region": "eu"}
    [enc] = s.encode_key(s.context, [key])
    sctx = SerializationContext("skeys", MessageField.KEY)
    assert JSONDeserializer(None, schema_registry_client=client)(enc, sctx) == key
    with pytest.raises(SchemaValidationError) as info:
        s.encode_key(s.context, [{"id": 1}])
    assert [p for p, _ in info.value.errors] == ["<key>.region"]


def test_json_local_is_plain_utf8_json(make: Any) -> None:
    b = make(backend="json_local")
    [enc] = b.encode(b.context, [WIDGET])
    assert enc is not None and json.loads(enc.decode("utf-8")) == WIDGET
    assert "gëar".encode() in enc


def test_evolution_defaults_and_open_content(make: Any) -> None:
    v1 = make(schema="Thing", path=EVOLUTION / "v1", topic="things")
    old = v1.encode(v1.context, [{"id": 1, "name": "a", "legacy": "kept"}])
    v2 = make(schema="Thing", path=EVOLUTION / "v2", topic="things")
    new = v2.encode(v2.context, [{"id": 2, "name": "b", "size": 9, "meta": {"v": 3}}])
    assert old[0] is not None and new[0] is not None and old[0][1:5] != new[0][1:5]
    assert v2.decode(v2.context, old) == [
        {"id": 1, "name": "a", "legacy": "kept", "size": 0, "meta": {"v": 2}}]
    assert v1.decode(v1.context, new) == [{"id": 2, "name": "b", "size": 9, "meta": {"v": 3}}]


def test_coerce_per_types_and_formats(make: Any) -> None:
    b = make()
    ref = uuid.uuid4()
    out = b.coerce(b.context, {"id": "12", "name": 5, "tags": [1, True], "price": "2.5",
                               "ref": ref, "updated_at": dt.datetime(2024, 5, 1, 12, 0),
                               "part": {"sku": 7, "qty": 3.0}})
    assert out == {"id": 12, "name": "5", "tags": ["1", "true"], "price": 2.5,
                   "ref": str(ref), "updated_at": "2024-05-01T12:00:00Z",
                   "part": {"sku": "7", "qty": 3}}
    b.validate(b.context, out)
    payload = dict(WIDGET)
    assert b.coerce(b.context, payload) is payload  # the fast path returns it untouched


def test_draft7_with_definitions_and_anyof(make: Any) -> None:
    b = make(schema="Legacy")
    assert b.coerce(b.context, {"id": 5, "kind": "3"}) == {"id": "5", "kind": 3}
    with pytest.raises(SchemaValidationError) as info:
        b.encode(b.context, [{"id": "x", "lines": [{"sku": "a"}, {}], "kind": "later"}])
    paths = [p for p, _ in info.value.errors]
    assert "$.lines[1].sku" in paths and "$.kind" in paths


def test_schema_fields(make: Any) -> None:
    b = make()
    fields = {f.name: f for f in b.fields(b.context)}
    assert fields["price"].nullable and fields["price"].has_default
    assert fields["color"].enum_symbols == ("RED", "GREEN", "BLUE")
    assert fields["updated_at"].type == "string(date-time)"
    assert b.mock(b.context) == "json_local"


@pytest.fixture
def producing(registry_url: str) -> Any:
    _config.reset()
    deimos.configure(schema={"backend": "json_schema_registry", "registry_url": registry_url,
                             "path": str(SCHEMAS)}, producers={"backend": "test"})
    test_backend.clear()
    yield
    test_backend.clear()
    _config.reset()


def test_bad_input_raises_before_anything_is_produced(producing: Any) -> None:
    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"
        key_config = {"field": "id"}

    good = {"id": 1, "name": "ok"}
    bad = {"id": 2, "name": "", "tags": ["a", ["nested"]], "part": {"qty": -2}}
    with pytest.raises(SchemaValidationError) as info:
        WidgetProducer.publish_list([good, bad])
    paths = [p for p, _ in info.value.errors]
    assert {"$.name", "$.tags[1]", "$.part.sku", "$.part.qty"} <= set(paths)
    assert test_backend.messages() == []
    WidgetProducer.publish_list([good, {"id": "3", "name": "coerced"}])
    assert [m.encoded_payload[5:] for m in test_backend.messages()] == [
        b'{"id":1,"name":"ok"}', b'{"id":3,"name":"coerced"}']
