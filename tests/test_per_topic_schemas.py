"""A schema backend and registry per producer and consumer (Ruby Deimos's per-topic
``schema_backend``, ``registry_url``, ``registry_user``, ``registry_password``): one service
reads Avro from one team's registry and writes Protobuf to another's, on the real broker,
while its own ``schema`` section says ``plain``."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import deimos
from deimos import config as _config
from deimos.config import OwnSchemaSettings
from deimos.consumer import Consumer, resolve_settings
from deimos.errors import ConfigError
from deimos.inline import get_messages_for
from deimos.runtime import get_runtime
from deimos.schema.registry import registry_client, registry_conf, reset_clients
from deimos.testing.broker import GROUP_TIMEOUTS
from deimos.testing.consumers import consumer_thread

pytestmark = pytest.mark.kafka


@pytest.fixture
def schemas(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "Order.avsc").write_text(
        '{"type": "record", "name": "Order", "namespace": "shop", "fields": '
        '[{"name": "id", "type": "long"}, {"name": "total", "type": "double"}]}')
    (tmp_path / "ship").mkdir()
    (tmp_path / "ship" / "shipment.proto").write_text(textwrap.dedent("""
        syntax = "proto3";
        package ship;
        message Shipment {
          int64 order_id = 1;
          string status = 2;
        }
    """))
    yield tmp_path
    reset_clients()


def _subjects(url: str) -> list[str]:
    settings = _config.build_settings({"schema": {"registry_url": url}}, environ={}).settings
    return sorted(registry_client(settings).get_subjects())


def test_avro_from_one_registry_protobuf_to_another(
        deimos_kafka: str, deimos_topic: Any, deimos_reset: None, schemas: Path) -> None:
    orders, shipments = deimos_topic(), deimos_topic()
    team_a, team_b = f"mock://team-a-{uuid.uuid4().hex[:6]}", f"mock://team-b-{uuid.uuid4().hex[:6]}"
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka},
                     producers={"backend": "kafka"},
                     schema={"backend": "plain", "path": str(schemas)})

    class Orders(deimos.Producer):  # stands for team A's service
        schema = "Order"
        namespace = "shop"
        schema_backend = "avro_schema_registry"
        registry_url = team_a

    class Shipments(deimos.Producer):
        schema = "ship.Shipment"
        schema_backend = "proto_schema_registry"
        registry_url = team_b

    class Ship(Consumer):
        schema = "Order"
        namespace = "shop"
        schema_backend = "avro_schema_registry"
        registry_url = team_a

        def consume(self, payload: Any, metadata: Any) -> None:
            Shipments.publish({"order_id": payload["id"], "status": "shipped"}, sync=True)

    Orders.topic, Shipments.topic, Ship.topic = orders, shipments, orders
    for i in (1, 2):  # one record per request: Tansu's watermarks
        Orders.publish({"id": i, "total": 9.5}, sync=True)
    settings = resolve_settings(Ship, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                config=dict(GROUP_TIMEOUTS), max_wait_time=0.2)
    with consumer_thread(Ship, settings) as running:
        running.wait(lambda: len(get_messages_for(shipments, 10, decode=False)) == 2,
                     what="two shipments")
    # each registry holds its own subject, the process's own registry neither
    assert _subjects(team_a) == [f"{orders}-value"]
    assert _subjects(team_b) == [f"{shipments}-value"]
    assert _subjects(_config.get_settings().schema.registry_url) == []
    raw = get_messages_for(shipments, 10, decode=False)
    schema_id = registry_client(get_runtime().schema_settings(
        OwnSchemaSettings(registry_url=team_b))).get_latest_version(
            f"{shipments}-value").schema_id
    assert {(m.payload[0], int.from_bytes(m.payload[1:5], "big")) for m in raw} == {
        (0, schema_id)}  # the Confluent wire format, with team B's id
    reader = get_runtime().schema_backend(
        topic=shipments, schema="ship.Shipment", namespace=None,
        key_config=deimos.config.KeyConfig(), own=OwnSchemaSettings(
            schema_backend="proto_schema_registry", registry_url=team_b))
    decoded = reader.decode(reader.context, [m.payload for m in raw])
    assert sorted((int(d["order_id"]), d["status"]) for d in decoded) == [
        (1, "shipped"), (2, "shipped")]


def test_a_registry_of_its_own_takes_no_credentials_from_the_schema_section(
        deimos_reset: None) -> None:
    deimos.configure(schema={"registry_url": "https://main.example", "user": "main",
                             "password": "main-secret"})
    runtime = get_runtime()
    other = runtime.schema_settings(OwnSchemaSettings(registry_url="https://b.example"))
    assert registry_conf(other) == {"url": "https://b.example"}
    own = runtime.schema_settings(OwnSchemaSettings(
        registry_url="https://b.example", registry_user="b", registry_password="b-secret"))
    assert registry_conf(own) == {"url": "https://b.example",
                                  "basic.auth.user.info": "b:b-secret"}
    # the same changes: the same settings object (registry clients and caches shared)
    assert runtime.schema_settings(OwnSchemaSettings(
        registry_url="https://b.example", registry_user="b",
        registry_password="b-secret")) is own
    assert registry_conf(runtime.settings)["basic.auth.user.info"] == "main:main-secret"
    with pytest.raises(ConfigError, match=r"consumer C: .*carries credentials"):
        runtime.schema_settings(OwnSchemaSettings(
            registry_url="https://u:p@b.example", registry_user="b"), "consumer C")

    class Missing(deimos.Producer):
        topic = "t"
        schema_backend = "no_such_backend"

    with pytest.raises(deimos.DeimosError, match="no_such_backend"):
        Missing.publish("x")
