"""JSON Schema bytes next to confluent-kafka's JSONSerializer with and without its json-fast
extra (orjson), and the registry flow over HTTP with basic auth, keys as well as values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deimos.config import build_settings
from deimos.testing.registry_server import RegistryServer
from deimos_jsonschema import backends, registry_client

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
FAST = {"max.retries": 0, "timeout": 2}
#: floats where orjson and the standard library write different digits
TINY = {"id": 1, "name": "ёж", "price": 1.5e-7}
SMALL = {"id": 2, "name": "x", "price": 0.00001}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry.json", user="svc", password="pw") as srv:
        yield srv


def _client(url: str) -> Any:
    return registry_client(build_settings({"schema": {"registry_url": url},
                                           "jsonschema": {"registry_config": FAST}},
                                          environ={}).settings)


def _stdlib_dumps(value: Any) -> str:
    # confluent-kafka's own fallback when orjson does not import (common/json_schema.py)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_bytes_match_json_serializer_with_orjson(make: Any, registry_url: str) -> None:
    """orjson is installed (dev group: confluent-kafka[json-fast]): both use it."""
    assert backends._encode_json is orjson.dumps
    b = make()
    text = (SCHEMAS / "com/example/Widget.json").read_text().strip()
    ctx = SerializationContext("widgets", MessageField.VALUE)
    ser = JSONSerializer(text, _client(registry_url))
    for payload in (TINY, SMALL):
        [ours] = b.encode(b.context, [b.coerce(b.context, payload)])
        assert ours == ser(payload, ctx)
    assert ours is not None and ours.endswith(b'"price":0.00001}')


def test_bytes_match_json_serializer_without_orjson(make: Any, registry_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Where orjson is absent both fall back to the standard library: the same bytes again,
    and the documented difference from the orjson bytes."""
    monkeypatch.setattr(backends, "_encode_json", backends.json_encoder(None))
    b = make()
    text = (SCHEMAS / "com/example/Widget.json").read_text().strip()
    ctx = SerializationContext("widgets", MessageField.VALUE)
    ser = JSONSerializer(text, _client(registry_url), json_encode=_stdlib_dumps)
    [ours] = b.encode(b.context, [b.coerce(b.context, TINY)])
    assert ours == ser(TINY, ctx)
    assert ours is not None and ours.endswith(b'"price":1.5e-07}')
    assert orjson.dumps(TINY).endswith(b'"price":1.5e-7}')


def test_values_and_keys_over_http_share_ids_with_confluent(make: Any, server: RegistryServer
                                                            ) -> None:
    url = server.url.replace("http://", "http://svc:pw@")
    client = _client(url)
    b = make(key_config={"schema": "WidgetKey"}, url=url,
             jsonschema={"registry_config": FAST})
    key = {"id": 1, "region": "eu"}
    [value] = b.encode(b.context, [b.coerce(b.context, TINY)])
    [enc_key] = b.encode_key(b.context, [key])
    vctx = SerializationContext("widgets", MessageField.VALUE)
    kctx = SerializationContext("widgets", MessageField.KEY)
    text = (SCHEMAS / "com/example/Widget.json").read_text().strip()
    key_text = (SCHEMAS / "com/example/WidgetKey.json").read_text().strip()
    assert JSONSerializer(text, client)(TINY, vctx) == value
    assert JSONSerializer(key_text, client)(key, kctx) == enc_key
    assert JSONDeserializer(None, schema_registry_client=client)(enc_key, kctx) == key
    assert b.decode_key(b.context, [enc_key]) == [key]
    store = json.loads(server.store.path.read_text())["subjects"]
    assert len(store["widgets-value"]) == len(store["widgets-key"]) == 1
