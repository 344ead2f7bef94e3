"""The registry flow against a real Confluent-compatible schema registry, when one is named.

Set ``DEIMOS_TEST_REGISTRY_URL`` (e.g. ``http://user:password@localhost:8081``) to run these;
without it they are skipped, and the client side is tested against documented REST answers by
the plugins' ``*_registry_http`` tests. Subjects are unique per run, so a shared registry can
be used again. Checked against Karapace 3.15.0 (Aiven-Open/karapace, Kafka storage on the
embedded broker); see docs/schema-registry.md.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime
from deimos.schema.registry import RegistryError, registry_client

URL = os.environ.get("DEIMOS_TEST_REGISTRY_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set DEIMOS_TEST_REGISTRY_URL to a schema "
                                "registry to run the checks against a real one")

ORDER_AVSC = """{
  "type": "record",
  "name": "Order",
  "namespace": "com.shop",
  "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}]
}
"""
ORDER_AVSC_V2 = """{
  "type": "record",
  "name": "Order",
  "namespace": "com.shop",
  "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"},
             {"name": "status", "type": "string", "default": "PLACED"}]
}
"""
ORDER_AVSC_BAD = """{
  "type": "record",
  "name": "Order",
  "namespace": "com.shop",
  "fields": [{"name": "id", "type": "string"}]
}
"""
MONEY = """syntax = "proto3";
package shop;
message Price {
  string currency = 1;
  int64 cents = 2;
}
"""
ORDER_PROTO = """syntax = "proto3";
package shop;
import "shop/money.proto";
import "google/type/date.proto";
message Order {
  string id = 1;
  shop.Price price = 2;
  google.type.Date due = 3;
}
"""
WIDGET_JSON = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Widget", "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["id", "name"]})


def _backend(tmp_path: Path, backend: str, schema: str, namespace: str, topic: str,
             **extra: Any) -> Any:
    settings = build_settings({"schema": {"backend": backend, "path": str(tmp_path),
                                          "registry_url": URL}, **extra},
                              environ={}).settings
    return Runtime(settings).schema_backend(topic=topic, schema=schema, namespace=namespace,
                                            key_config=KeyConfig.model_validate("none"))


def _client() -> SchemaRegistryClient:
    return registry_client(build_settings({"schema": {"registry_url": URL}},
                                          environ={}).settings)


def _sid(data: bytes | None) -> int:
    assert data is not None and data[0] == 0
    return int.from_bytes(data[1:5], "big")


def _topic() -> str:
    return f"deimos-check-{uuid.uuid4().hex[:10]}"


def _avsc(root: Path, text: str) -> Path:
    # a directory per version: schema files are read once per process, as in a service
    (root / "com" / "shop").mkdir(parents=True)
    (root / "com" / "shop" / "Order.avsc").write_text(text)
    return root


def test_avro_shares_ids_and_one_version_with_avro_serializer_and_evolves_backward(
        tmp_path: Path) -> None:
    topic = _topic()
    b = _backend(_avsc(tmp_path / "v1", ORDER_AVSC), "avro_schema_registry", "Order",
                 "com.shop", topic)
    [ours] = b.encode(b.context, [{"id": 1, "note": "x"}])
    theirs = AvroSerializer(_client(), ORDER_AVSC)(
        {"id": 1, "note": "x"}, SerializationContext(topic, MessageField.VALUE))
    assert _sid(ours) == _sid(theirs) and ours == theirs
    assert _client().get_versions(f"{topic}-value") == [1]
    # a compatible change (a field with a default): a second version
    b2 = _backend(_avsc(tmp_path / "v2", ORDER_AVSC_V2), "avro_schema_registry", "Order",
                  "com.shop", topic)
    [v2] = b2.encode(b2.context, [{"id": 2, "note": "y"}])
    assert _sid(v2) != _sid(ours)
    assert _client().get_versions(f"{topic}-value") == [1, 2]
    assert b.decode(b.context, [v2]) == [{"id": 2, "note": "y"}]  # read with v1
    assert b2.decode(b2.context, [ours]) == [{"id": 1, "note": "x", "status": "PLACED"}]
    # incompatible under the registry's default BACKWARD: a clear error, nothing registered
    b3 = _backend(_avsc(tmp_path / "bad", ORDER_AVSC_BAD), "avro_schema_registry", "Order",
                  "com.shop", topic)
    with pytest.raises(RegistryError, match=r"(?i)incompatible|409"):
        b3.encode(b3.context, [{"id": "z"}])
    assert _client().get_versions(f"{topic}-value") == [1, 2]



def _check_against_registry(tmp_path: Path, topic: str, text: str) -> Any:
    """``deimos schemas check --against-registry`` in a process of its own, as CI runs it;
    ``.output`` is its stdout and stderr, ``.exit_code`` its status."""
    root = _avsc(tmp_path / uuid.uuid4().hex[:6], text)
    config = tmp_path / f"{uuid.uuid4().hex[:6]}.toml"
    config.write_text(f"""
[schema]
backend = "avro_schema_registry"
registry_url = "{URL}"
path = "{root}"

[[producers.topics]]
topic = "{topic}"
schema = "Order"
namespace = "com.shop"
key_config = "plain"
""")
    done = subprocess.run([sys.executable, "-m", "deimos", "--config", str(config), "schemas",
                           "check", "--against-registry"], capture_output=True, text=True,
                          timeout=120, check=False)
    done.output = done.stdout + done.stderr  # type: ignore[attr-defined]
    done.exit_code = done.returncode  # type: ignore[attr-defined]
    return done


def test_schemas_check_against_the_registry_follows_its_compatibility_rules(
        tmp_path: Path) -> None:
    topic = _topic()
    subject = f"{topic}-value"
    new = _check_against_registry(tmp_path, topic, ORDER_AVSC)
    assert new.exit_code == 0 and f"new subject  {subject}" in new.output, new.output
    _client().register_schema(subject, Schema(ORDER_AVSC, "AVRO"))
    ok = _check_against_registry(tmp_path, topic, ORDER_AVSC_V2)
    assert ok.exit_code == 0 and f"compatible  {subject}" in ok.output, ok.output
    bad = _check_against_registry(tmp_path, topic, ORDER_AVSC_BAD)
    assert bad.exit_code == 1 and f"incompatible  {subject}" in bad.output, bad.output
    _client().set_compatibility(subject, "NONE")
    assert _check_against_registry(tmp_path, topic, ORDER_AVSC_BAD).exit_code == 0
    assert _client().get_versions(subject) == [1]  # checking registers nothing

SHIPMENT_PROTO = """syntax = "proto3";
package shop;
import "google/type/date.proto";
message Shipment {
  string id = 1;
  google.type.Date due = 2;
}
"""

_DECODE = """
import json, sys
from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime
url, topic, path, schema, data = sys.argv[1:]
local = {"path": path} if schema else {}
settings = build_settings({"schema": {"backend": "proto_schema_registry", "registry_url": url,
                                      **local}}, environ={}).settings
b = Runtime(settings).schema_backend(topic=topic, schema=schema or None,
                                     namespace="shop" if schema else None,
                                     key_config=KeyConfig.model_validate("none"))
print(json.dumps(b.decode(b.context, [bytes.fromhex(data)]), default=str))
"""


def _decode_elsewhere(topic: str, value: bytes, path: Path | None = None,
                      schema: str = "") -> Any:
    """Decode in a fresh process (no schema compiled or imported yet)."""
    out = subprocess.run([sys.executable, "-c", _DECODE, str(URL), topic, str(path or ""),
                          schema, value.hex()],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_protobuf_with_references_registers_like_confluent_and_decodes(
        tmp_path: Path) -> None:
    """A schema importing another file of the user's (a reference) and ``google/type``.

    Karapace (3.15.0, and the same code in 6.2) answers HTTP 500 to
    ``GET /schemas/ids/{id}?format=serialized`` for a schema with references (it parses it
    without them), so there the consumer is given the schema (``schema.path``), as it would
    be for confluent-kafka's ProtobufDeserializer; a schema without references is decoded
    from the registry alone.
    """
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "money.proto").write_text(MONEY)
    (tmp_path / "shop" / "order.proto").write_text(ORDER_PROTO)
    (tmp_path / "shop" / "shipment.proto").write_text(SHIPMENT_PROTO)
    topic = _topic()
    b = _backend(tmp_path, "proto_schema_registry", "Order", "shop", topic)
    payload = {"id": "o-1", "price": {"currency": "EUR", "cents": 150},
               "due": {"year": 2026, "month": 12, "day": 1}}
    [value] = b.encode(b.context, [b.coerce(b.context, payload)])
    from deimos_protobuf import schemas

    cls = schemas.message_class(b.context.cache["deimos_protobuf"].value().desc)
    theirs = ProtobufSerializer(cls, _client(), {"use.deprecated.format": False})(
        cls(id="o-1"), SerializationContext(topic, MessageField.VALUE))
    assert theirs[:6] == value[:6]  # the same schema id and message index
    assert "shop/money.proto" in _client().get_subjects()  # the reference, as a subject
    assert _decode_elsewhere(topic, value, tmp_path, "Order") == [payload]

    topic2 = _topic()
    b2 = _backend(tmp_path, "proto_schema_registry", "Shipment", "shop", topic2)
    shipment = {"id": "s-1", "due": {"year": 2027, "month": 1, "day": 2}}
    [value2] = b2.encode(b2.context, [b2.coerce(b2.context, shipment)])
    assert _decode_elsewhere(topic2, value2) == [shipment]  # from the registry alone


def test_json_schema_shares_ids_and_bytes_with_json_serializer(tmp_path: Path) -> None:
    (tmp_path / "com" / "example").mkdir(parents=True)
    (tmp_path / "com" / "example" / "Widget.json").write_text(WIDGET_JSON)
    topic = _topic()
    b = _backend(tmp_path, "json_schema_registry", "Widget", "com.example", topic)
    [ours] = b.encode(b.context, [b.coerce(b.context, {"id": 1, "name": "w"})])
    theirs = JSONSerializer(WIDGET_JSON, _client())(
        {"id": 1, "name": "w"}, SerializationContext(topic, MessageField.VALUE))
    assert ours == theirs
    assert _client().get_versions(f"{topic}-value") == [1]


def test_no_log_record_or_error_carries_the_registry_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from urllib.parse import urlsplit

    password = urlsplit(str(URL)).password
    if not password:
        pytest.skip("DEIMOS_TEST_REGISTRY_URL has no password to look for")
    caplog.set_level(logging.DEBUG)
    topic = _topic()
    b = _backend(_avsc(tmp_path / "v1", ORDER_AVSC), "avro_schema_registry", "Order",
                 "com.shop", topic)
    [ours] = b.encode(b.context, [{"id": 1, "note": "x"}])
    assert b.decode(b.context, [ours]) == [{"id": 1, "note": "x"}]
    bad = _backend(_avsc(tmp_path / "bad", ORDER_AVSC_BAD), "avro_schema_registry", "Order",
                   "com.shop", topic)
    with pytest.raises(RegistryError) as info:
        bad.encode(bad.context, [{"id": "z"}])
    texts = [r.getMessage() for r in caplog.records] + [str(info.value), repr(info.value)]
    assert any("HTTP" in t or "subjects" in t for t in texts)  # the client did log requests
    assert not [t for t in texts if password in t]
