"""Protobuf against a registry over HTTP that answers as Confluent's documents: schemas come
back as ``.proto`` text unless ``format=serialized`` is asked for; imports of the user's other
files are references, ``google/type/*.proto`` imports are not and must resolve anyway."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deimos.config import build_settings
from deimos.errors import TransientError
from deimos.schema.registry import RegistryError, RegistryUnavailableError, registry_client
from deimos.testing.registry_server import RegistryServer
from deimos_protobuf import schemas

MONEY = """syntax = "proto3";
package shop;
message Price {
  string currency = 1;
  int64 cents = 2;
}
"""
ORDER = """syntax = "proto3";
package shop;
import "shop/money.proto";
import "google/type/date.proto";
import "google/type/decimal.proto";
message Order {
  string id = 1;
  shop.Price price = 2;
  google.type.Date due = 3;
  google.type.Decimal rate = 4;
}
"""
#: no client-side retries: the tests inject the failures themselves
FAST = {"registry_config": {"max.retries": 0, "timeout": 2}}
PAYLOAD = {"id": "o-1", "price": {"currency": "EUR", "cents": 150},
           "due": {"year": 2026, "month": 12, "day": 1}, "rate": {"value": "1.25"}}


@pytest.fixture
def protos(tmp_path: Path) -> Path:
    root = tmp_path / "protos"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "money.proto").write_text(MONEY)
    (root / "shop" / "order.proto").write_text(ORDER)
    return root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    text = {"shop/money.proto": MONEY, "shop/order.proto": ORDER}
    with RegistryServer(tmp_path / "registry.json", user="svc", password="s3cret",
                        proto_text=text) as srv:
        yield srv


def _url(server: RegistryServer) -> str:
    return server.url.replace("http://", "http://svc:s3cret@")


def test_user_imports_and_google_type_compile_register_and_match_confluent(
        make: Any, protos: Path, server: RegistryServer) -> None:
    b = make(schema="Order", namespace="shop", path=protos, topic="orders", url=_url(server),
             key_config={"field": "id"}, protobuf=FAST)
    [value] = b.encode(b.context, [b.coerce(b.context, PAYLOAD)])
    [key] = b.encode_key(b.context, ["o-1"])
    assert value is not None and key is not None
    store = json.loads(server.store.path.read_text())
    # the user's other file is a reference subject; google/type/* are known types
    assert set(store["subjects"]) == {"orders-value", "orders-key", "shop/money.proto"}
    client = registry_client(build_settings({"schema": {"registry_url": _url(server)}},
                                            environ={}).settings)
    cls = schemas.message_class(b.context.cache["deimos_protobuf"].value().desc)
    theirs = ProtobufSerializer(cls, client, {"use.deprecated.format": False})(
        cls(**{"id": "o-1"}), SerializationContext("orders", MessageField.VALUE))
    assert theirs[:6] == value[:6]  # the same id (and message index) as confluent-kafka's


_CONSUME = """
import json, sys
from deimos.config import KeyConfig, build_settings
from deimos.runtime import Runtime
assert "google.type.decimal_pb2" not in sys.modules  # nothing imported it yet
settings = build_settings({"schema": {"backend": "proto_schema_registry",
                                      "registry_url": sys.argv[1]}}, environ={}).settings
b = Runtime(settings).schema_backend(topic="orders", schema=None, namespace=None,
                                     key_config=KeyConfig.model_validate({"field": "id"}))
value, key = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
print(json.dumps([b.decode(b.context, [value]), b.decode_key(b.context, [key])], default=str))
"""


def test_consumer_without_schema_decodes_from_a_registry_that_answers_text(
        make: Any, protos: Path, server: RegistryServer) -> None:
    """A fresh process (nothing of google.type imported), no local schema: the writer schema
    and its references are fetched in serialized form; the registry's text form would not
    parse."""
    b = make(schema="Order", namespace="shop", path=protos, topic="orders", url=_url(server),
             key_config={"field": "id"}, protobuf=FAST)
    [value] = b.encode(b.context, [b.coerce(b.context, PAYLOAD)])
    [key] = b.encode_key(b.context, ["o-1"])
    assert value is not None and key is not None
    server.requests.clear()
    out = subprocess.run([sys.executable, "-c", _CONSUME, _url(server), value.hex(), key.hex()],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    values, keys = json.loads(out.stdout)
    assert values == [PAYLOAD] and keys == ["o-1"]
    gets = [(path, q) for method, path, q in server.requests if method == "GET"]
    assert gets and all(q.get("format") == "serialized" for _, q in gets)
    assert any(path.endswith("/versions/1") and "money.proto" in path for path, _ in gets)
    # and without format=serialized the registry answers the .proto text, as Confluent's does
    sid = int.from_bytes(value[1:5], "big")
    status, answer = server.answer("GET", f"/schemas/ids/{sid}", {}, None,
                                   server.auth_headers[-1])
    assert status == 200 and answer["schema"] == ORDER


def test_registry_errors_on_decode_say_what_happened(make: Any, server: RegistryServer
                                                    ) -> None:
    b = make(schema=None, topic="orders", url=_url(server), protobuf=FAST)
    frame = b"\x00\x00\x00\x00\x07\x00"
    with pytest.raises(RegistryError) as info:  # id 7 is unknown: 404, permanent
        b.decode(b.context, [frame])
    assert not isinstance(info.value, TransientError)
    assert "refused to fetch schema id 7 (HTTP 404)" in str(info.value)
    assert "Cannot reach" not in str(info.value) and "s3cret" not in str(info.value)
    server.fail_with(503)
    with pytest.raises(RegistryUnavailableError, match="retriable"):
        b.decode(b.context, [frame])
    server.fail_with(None)
    server.stop()
    with pytest.raises(RegistryUnavailableError, match="Cannot reach"):
        b.decode(b.context, [frame])
