"""Avro against a registry over HTTP that compares schemas as text (it does not canonicalise):
the same ids and versions as confluent-kafka's AvroSerializer for the same ``.avsc``, the
serializer options with confluent-kafka's names, and registry failures that say whether they
are worth retrying."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deimos.config import build_settings
from deimos.errors import ConfigError, TransientError
from deimos.schema.registry import RegistryError, RegistryUnavailableError
from deimos.testing.registry_server import RegistryServer
from deimos_avro import registry_client

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
EVOLUTION = HERE / "evolution"
#: the test injects failures itself: no client-side retries
FAST = {"max.retries": 0, "timeout": 2}
ORDER = """{
  "type": "record",
  "name": "Order",
  "namespace": "com.shop",
  "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}]
}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry.json", user="svc", password="pw") as srv:
        yield srv


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    root = tmp_path / "avsc"
    (root / "com" / "shop").mkdir(parents=True)
    (root / "com" / "shop" / "Order.avsc").write_text(ORDER)
    return root


def _url(server: RegistryServer) -> str:
    return server.url.replace("http://", "http://svc:pw@")


def _client(server: RegistryServer) -> Any:
    return registry_client(build_settings({"schema": {"registry_url": _url(server)},
                                           "avro": {"registry_config": FAST}},
                                          environ={}).settings)


def _versions(server: RegistryServer, subject: str) -> list[dict[str, Any]]:
    return list(json.loads(server.store.path.read_text())["subjects"][subject])


def _sid(data: bytes | None) -> int:
    assert data is not None and data[0] == 0
    return int.from_bytes(data[1:5], "big")


def test_same_id_and_one_version_as_avro_serializer_whoever_registers_first(
        make: Any, server: RegistryServer, shop: Path) -> None:
    order = {"id": 1, "note": "n"}
    client = _client(server)
    # confluent-kafka first, then deimos
    theirs = AvroSerializer(client, ORDER)(order, SerializationContext("a", MessageField.VALUE))
    ours_b = make(schema="Order", namespace="com.shop", path=shop, topic="a", url=_url(server),
                  avro={"registry_config": FAST})
    [ours] = ours_b.encode(ours_b.context, [order])
    assert ours == theirs and len(_versions(server, "a-value")) == 1
    # deimos first, then confluent-kafka
    b = make(schema="Order", namespace="com.shop", path=shop, topic="b", url=_url(server),
             avro={"registry_config": FAST})
    [ours] = b.encode(b.context, [order])
    theirs = AvroSerializer(client, ORDER)(order, SerializationContext("b", MessageField.VALUE))
    assert ours == theirs and len(_versions(server, "b-value")) == 1
    stored = json.loads(server.store.path.read_text())["schemas"][str(_sid(ours))]["schema"]
    assert stored == ORDER.strip()  # the file's text, not fastavro's rewrite


def test_key_schema_file_gets_the_same_id_as_avro_serializer(
        make: Any, server: RegistryServer) -> None:
    key = {"id": 7, "region": "eu"}
    text = (SCHEMAS / "com/example/WidgetKey.avsc").read_text()
    b = make(key_config={"schema": "WidgetKey"}, topic="k", url=_url(server),
             avro={"registry_config": FAST})
    [ours] = b.encode_key(b.context, [key])
    kctx = SerializationContext("k", MessageField.KEY)
    theirs = AvroSerializer(_client(server), text)(key, kctx)
    assert ours == theirs and len(_versions(server, "k-key")) == 1
    assert AvroDeserializer(_client(server))(ours, kctx) == key


def test_auto_register_off_only_looks_up(make: Any, server: RegistryServer, shop: Path
                                         ) -> None:
    def backend(topic: str) -> Any:
        return make(schema="Order", namespace="com.shop", path=shop, topic=topic,
                    url=_url(server), avro={"registry_config": FAST,
                                            "auto.register.schemas": False})

    b = backend("lookup")
    with pytest.raises(RegistryError) as info:
        b.encode(b.context, [{"id": 1, "note": "n"}])
    assert not isinstance(info.value, TransientError)
    assert "look up subject 'lookup-value'" in str(info.value) and "HTTP 404" in str(info.value)
    assert not [p for m, p, _ in server.requests if m == "POST" and p.endswith("/versions")]
    AvroSerializer(_client(server), ORDER)({"id": 1, "note": "n"},
                                          SerializationContext("lookup", MessageField.VALUE))
    b = backend("lookup")
    [data] = b.encode(b.context, [{"id": 2, "note": "m"}])
    assert _sid(data) == _versions(server, "lookup-value")[0]["id"]


def test_use_latest_version_writes_with_the_latest_registered_schema(
        make: Any, server: RegistryServer) -> None:
    client = _client(server)
    ctx = SerializationContext("things", MessageField.VALUE)
    for v in ("v1", "v2"):
        text = (EVOLUTION / v / "com/example/Thing.avsc").read_text()
        AvroSerializer(client, text)({"id": 0, "name": "x", "legacy": "l", "size": 1}, ctx)
    latest = _versions(server, "things-value")[-1]["id"]
    b = make(schema="Thing", path=EVOLUTION / "v1", topic="things", url=_url(server),
             avro={"registry_config": FAST, "use_latest_version": True,
                   "auto_register_schemas": False})
    [data] = b.encode(b.context, [{"id": 1, "name": "a", "legacy": "gone"}])
    assert _sid(data) == latest
    # written with v2 (the field v1 has not is its default), read back as v1 by deimos
    assert AvroDeserializer(client)(data, ctx) == {"id": 1, "name": "a", "size": 3}
    assert len(_versions(server, "things-value")) == 2  # nothing registered


def test_use_schema_id_and_normalize_schemas(make: Any, server: RegistryServer,
                                             shop: Path) -> None:
    client = _client(server)
    AvroSerializer(client, ORDER)({"id": 1, "note": "n"},
                                  SerializationContext("o", MessageField.VALUE))
    sid = _versions(server, "o-value")[0]["id"]
    b = make(schema="Order", namespace="com.shop", path=shop, topic="p", url=_url(server),
             avro={"registry_config": FAST, "use.schema.id": sid})
    [data] = b.encode(b.context, [{"id": 1, "note": "n"}])
    assert _sid(data) == sid
    n = make(schema="Order", namespace="com.shop", path=shop, topic="q", url=_url(server),
             avro={"registry_config": FAST, "normalize_schemas": True})
    n.encode(n.context, [{"id": 1, "note": "n"}])
    assert any(p.endswith("/subjects/q-value/versions") and q.get("normalize") == "True"
               for m, p, q in server.requests if m == "POST")


def test_use_latest_version_with_auto_register_is_a_settings_error() -> None:
    with pytest.raises(ConfigError, match="auto_register_schemas"):
        build_settings({"avro": {"use_latest_version": True}}, environ={})


def test_registry_outage_while_producing_is_retriable_then_recovers(
        make: Any, server: RegistryServer, shop: Path) -> None:
    b = make(schema="Order", namespace="com.shop", path=shop, topic="out", url=_url(server),
             avro={"registry_config": FAST})
    server.fail_with(503)
    with pytest.raises(RegistryUnavailableError) as info:
        b.encode(b.context, [{"id": 1, "note": "n"}])
    assert isinstance(info.value, TransientError) and "retriable" in str(info.value)
    assert "pw@" not in str(info.value)
    server.fail_with(None)
    [data] = b.encode(b.context, [{"id": 1, "note": "n"}])
    assert _sid(data) == _versions(server, "out-value")[0]["id"]


def test_consumer_decode_failures_are_transient_only_when_the_registry_is(
        make: Any, server: RegistryServer) -> None:
    b = make(schema=None, topic="in", url=_url(server), avro={"registry_config": FAST})
    frame = b"\x00\x00\x00\x00\x09\x02"
    with pytest.raises(RegistryError) as info:
        b.decode(b.context, [frame])
    assert not isinstance(info.value, TransientError) and "HTTP 404" in str(info.value)
    server.fail_with(429)
    with pytest.raises(RegistryUnavailableError):
        b.decode(b.context, [frame])
    server.fail_with(200, b"not json at all")
    with pytest.raises(RegistryError) as info:
        b.decode(b.context, [frame])
    assert not isinstance(info.value, TransientError)
