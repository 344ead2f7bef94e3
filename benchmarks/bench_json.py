"""JSON Schema benchmark: deimos with ``json_schema_registry`` (mock:// registry, every payload
validated) against a raw loop of ``json.dumps`` + Confluent header + confluent-kafka
``produce`` (no validation), and against confluent-kafka's own JSONSerializer (validating)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from run import Bench, Run, bench

import deimos
from deimos.schema.registry import registry_client

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Gadget",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "price": {"type": "number"},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "updated_at": {"type": "integer"},
    },
    "required": ["id", "name"],
}

_schema_dir: str | None = None


def _schemas() -> str:
    global _schema_dir
    if _schema_dir is None:
        _schema_dir = tempfile.mkdtemp(prefix="deimos-bench-json-")
        path = Path(_schema_dir, "com", "bench")
        path.mkdir(parents=True)
        (path / "Gadget.json").write_text(json.dumps(SCHEMA))
    return _schema_dir


def _records(n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{"id": i, "name": f"gadget-{i}", "price": i * 0.5, "active": i % 2 == 0,
             "tags": ["red", "large", f"t{i % 7}"], "updated_at": now + i} for i in range(n)]


class _GadgetProducer(deimos.Producer):
    schema = "Gadget"
    namespace = "com.bench"


@bench("produce_json")
def produce_json(b: Bench) -> dict[str, Any]:
    """deimos Producer (json_schema_registry) vs json.dumps + header + produce; also reports
    confluent-kafka's JSONSerializer path."""
    n = b.messages
    records = _records(n)
    b.configure(schema={"backend": "json_schema_registry", "registry_url": "mock://bench",
                        "path": _schemas()},
                producers={"backend": "kafka_async"})
    client = registry_client()
    text = json.dumps(SCHEMA)

    def raw() -> Run:
        topic = b.topic()
        sid = client.register_schema(f"{topic}-value", Schema(text, "JSON"))
        header = b"\x00" + sid.to_bytes(4, "big")
        # the best a user does: orjson, as deimos and confluent-kafka use when it is
        # installed (the stdlib's json.dumps made the raw side slower than deimos)
        dumps = orjson.dumps
        return b.raw_produce(topic, records, encode=lambda r: header + dumps(r))

    def ours() -> Run:
        topic = _GadgetProducer.topic = b.topic()

        def work() -> None:
            for i in range(0, n, 500):
                _GadgetProducer.publish_list(records[i:i + 500])

        return b.deimos_produce(topic, n, lambda: _GadgetProducer.publish(records[0]), work)

    result = b.alternate(raw, ours, producer_config=b.shown_config())

    def confluent() -> Run:
        topic = b.topic()
        ser = JSONSerializer(text, client)
        ctx = SerializationContext(topic, MessageField.VALUE)
        return b.raw_produce(topic, records, encode=lambda r: ser(r, ctx))

    conf_rate = b.median_rate(confluent)
    result["confluent_serializer"] = round(conf_rate)
    result["ratio_vs_confluent_serializer"] = round(result["deimos"] / conf_rate, 3)
    return result
