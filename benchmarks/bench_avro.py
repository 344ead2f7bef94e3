"""Avro benchmarks: deimos with ``avro_schema_registry`` (mock:// registry) against a raw
fastavro + confluent-kafka loop, and against confluent-kafka's own AvroSerializer path."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from run import Bench, Counter, Run, bench

import deimos
from deimos.consumer import BatchConsumer

SCHEMA = {
    "type": "record", "name": "Widget", "namespace": "com.bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "price", "type": "double"},
        {"name": "active", "type": "boolean"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "updated_at", "type": "long"},
    ],
}

_schema_dir: str | None = None


def _schemas() -> str:
    global _schema_dir
    if _schema_dir is None:
        _schema_dir = tempfile.mkdtemp(prefix="deimos-bench-schemas-")
        path = Path(_schema_dir, "com", "bench")
        path.mkdir(parents=True)
        (path / "Widget.avsc").write_text(json.dumps(SCHEMA))
    return _schema_dir


def _records(n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"id": i, "name": f"widget-{i}", "price": i * 0.5, "active": i % 2 == 0,
             "tags": ["red", "large", f"t{i % 7}"], "updated_at": now + i} for i in range(n)]


def avro_sections() -> dict[str, Any]:
    """Settings of the Avro benchmarks (other benchmarks reuse them)."""
    return {"schema": {"backend": "avro_schema_registry", "path": _schemas(),
                       "registry_url": "mock://bench"},
            "producers": {"backend": "kafka_async"}}


def _configure(b: Bench) -> Any:
    b.configure(**avro_sections())
    from deimos_avro import registry_client

    return registry_client()


def filled_avro_topic(b: Bench, n: int) -> str:
    """A topic holding ``n`` Avro widgets in the Confluent wire format (made once per size)."""
    key = ("avro", n)
    if key in b._filled:
        return b._filled[key]
    client = _configure(b)
    parsed = fastavro.parse_schema(SCHEMA)
    topic = b.topic()
    schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(SCHEMA), "AVRO"))
    header = b"\x00" + struct.pack(">I", schema_id)
    values = []
    for rec in _records(n):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, rec)
        values.append(header + buf.getvalue())
    b.fill(topic, values)
    b._filled[key] = topic
    return topic


class _WidgetProducer(deimos.Producer):
    schema = "Widget"
    namespace = "com.bench"
    key_config = "plain"


def _keys(n: int) -> list[str]:
    return [f"widget-{i % 1000}" for i in range(n)]


def raw_avro_produce(b: Bench, client: Any, records: list[dict[str, Any]],
                     keys: list[str] | None = None,
                     headers: list[tuple[str, bytes]] | None = None) -> Run:
    """The raw loop: fastavro ``schemaless_writer`` + 5-byte header + ``produce`` per
    message (with ``headers`` on every message, if given)."""
    parsed = fastavro.parse_schema(SCHEMA)
    topic = b.topic()
    schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(SCHEMA), "AVRO"))
    header = b"\x00" + struct.pack(">I", schema_id)
    buf = io.BytesIO()
    writer = fastavro.schemaless_writer

    def encode(rec: dict[str, Any]) -> bytes:
        buf.seek(0)
        buf.truncate()
        writer(buf, parsed, rec)
        return header + buf.getvalue()

    return b.raw_produce(topic, records, keys=keys, encode=encode, headers=headers)


def deimos_avro_produce(b: Bench, records: list[dict[str, Any]], keys: list[str],
                        per_message: bool, headers: dict[str, bytes] | None = None) -> Run:
    """deimos publishing ``records`` keyed with ``keys``: ``publish`` per message, or
    ``publish_list`` in chunks of 500."""
    topic = _WidgetProducer.topic = b.topic()
    n = len(records)
    if per_message:
        def work() -> None:
            publish = _WidgetProducer.publish
            for i in range(n):
                publish(records[i], key=keys[i], headers=headers)
    else:
        def work() -> None:
            for i in range(0, n, 500):
                _WidgetProducer.publish_list(records[i:i + 500], keys=keys[i:i + 500],
                                             headers=headers)
    return b.deimos_produce(topic, n, lambda: _WidgetProducer.publish(records[0], key="w"),
                            work)


def _produce_avro(b: Bench, per_message: bool) -> dict[str, Any]:
    n = b.messages
    records = _records(n)
    keys = _keys(n)
    client = _configure(b)
    result = b.alternate(lambda: raw_avro_produce(b, client, records, keys),
                         lambda: deimos_avro_produce(b, records, keys, per_message),
                         producer_config=b.shown_config())

    def confluent() -> Run:
        topic = b.topic()
        ser = AvroSerializer(client, json.dumps(SCHEMA))
        ctx = SerializationContext(topic, MessageField.VALUE)
        return b.raw_produce(topic, records, keys=keys, encode=lambda rec: ser(rec, ctx))

    conf_rate = b.median_rate(confluent)
    result["confluent_serializer"] = round(conf_rate)
    result["ratio_vs_confluent_serializer"] = round(result["deimos"] / conf_rate, 3)
    return result


@bench("produce_avro")
def produce_avro(b: Bench) -> dict[str, Any]:
    """deimos ``publish_list`` (avro_schema_registry, 500 keyed 6-field records per call) vs
    fastavro schemaless_writer + header + produce per message; also reports confluent-kafka's
    AvroSerializer path."""
    return _produce_avro(b, per_message=False)


@bench("produce_avro_message")
def produce_avro_message(b: Bench) -> dict[str, Any]:
    """deimos ``publish`` once per keyed 6-field record vs the same raw per-message loop;
    also reports confluent-kafka's AvroSerializer path."""
    return _produce_avro(b, per_message=True)


def raw_avro_decoder() -> Any:
    """The raw side's decoder: the best a user does, no copy of the payload and no reader
    schema (the writer's is the reader's, so fastavro's schema resolution is not needed)."""
    parsed = fastavro.parse_schema(SCHEMA)
    reader = fastavro.schemaless_reader

    def raw_decode(v: bytes) -> Any:
        buf = io.BytesIO(v)
        buf.seek(5)
        return reader(buf, parsed, None)

    return raw_decode


class _WidgetConsumer(BatchConsumer):
    schema = "Widget"
    namespace = "com.bench"
    counter: Counter

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        self.counter.add(len(payloads))


@bench("consume_batch_avro")
def consume_batch_avro(b: Bench) -> dict[str, Any]:
    """deimos BatchConsumer (avro_schema_registry) vs raw consume + fastavro schemaless_reader;
    also reports confluent-kafka's AvroDeserializer path."""
    n = b.messages
    topic = filled_avro_topic(b, n)
    client = _configure(b)
    raw_decode = raw_avro_decoder()
    result = b.alternate(lambda: b.raw_consume(topic, n, raw_decode),
                         lambda: b.deimos_consume(_WidgetConsumer, topic, n))
    des = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    conf_rate = b.median_rate(lambda: b.raw_consume(topic, n, lambda v: des(v, ctx)))
    result["confluent_deserializer"] = round(conf_rate)
    result["ratio_vs_confluent_deserializer"] = round(result["deimos"] / conf_rate, 3)
    return result
