"""Protobuf benchmark: deimos with ``proto_schema_registry`` (mock:// registry) publishing
generated message objects, against a raw loop of ``SerializeToString`` + Confluent header +
confluent-kafka ``produce``, and against confluent-kafka's own ProtobufSerializer."""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from run import Bench, Run, bench

import deimos
from deimos.schema.registry import registry_client

PROTO = """syntax = "proto3";
package com.bench;
message Gizmo {
  int64 id = 1;
  string name = 2;
  double price = 3;
  bool active = 4;
  repeated string tags = 5;
  int64 updated_at = 6;
}
"""

_module: Any = None


def _pb2() -> Any:
    """``gizmo_pb2``, generated with grpcio-tools into a temporary directory once."""
    global _module
    if _module is None:
        import grpc_tools
        from grpc_tools import protoc

        out = Path(tempfile.mkdtemp(prefix="deimos-bench-proto-"))
        (out / "com" / "bench").mkdir(parents=True)
        (out / "com" / "bench" / "gizmo.proto").write_text(PROTO)
        include = Path(grpc_tools.__file__).parent / "_proto"
        assert protoc.main(["protoc", f"-I{out}", f"-I{include}", f"--python_out={out}",
                            str(out / "com" / "bench" / "gizmo.proto")]) == 0
        sys.path.insert(0, str(out))
        _module = importlib.import_module("com.bench.gizmo_pb2")
    return _module


def _messages(n: int) -> list[Any]:
    cls = _pb2().Gizmo
    now = int(time.time() * 1000)
    return [cls(id=i, name=f"gizmo-{i}", price=i * 0.5, active=i % 2 == 0,
                tags=["red", "large", f"t{i % 7}"], updated_at=now + i) for i in range(n)]


class _GizmoProducer(deimos.Producer):
    schema = "Gizmo"
    namespace = "com.bench"


@bench("produce_protobuf")
def produce_protobuf(b: Bench) -> dict[str, Any]:
    """deimos Producer (proto_schema_registry, message objects) vs SerializeToString + header
    + produce; also reports confluent-kafka's ProtobufSerializer path."""
    n = b.messages
    messages = _messages(n)
    b.configure(schema={"backend": "proto_schema_registry", "registry_url": "mock://bench"},
                protobuf={"modules": ["com.bench.gizmo_pb2"]},
                producers={"backend": "kafka_async"})
    client = registry_client()
    cls = _pb2().Gizmo
    import base64

    schema_str = base64.standard_b64encode(cls.DESCRIPTOR.file.serialized_pb).decode()

    def raw() -> Run:
        topic = b.topic()
        sid = client.register_schema(f"{topic}-value", Schema(schema_str, "PROTOBUF"))
        header = b"\x00" + sid.to_bytes(4, "big") + b"\x00"  # message indexes [0]
        return b.raw_produce(topic, messages,
                             encode=lambda m: header + m.SerializeToString())

    def ours() -> Run:
        topic = _GizmoProducer.topic = b.topic()

        def work() -> None:
            for i in range(0, n, 500):
                _GizmoProducer.publish_list(messages[i:i + 500])

        return b.deimos_produce(topic, n, lambda: _GizmoProducer.publish(messages[0]), work)

    result = b.alternate(raw, ours, producer_config=b.shown_config())

    def confluent() -> Run:
        topic = b.topic()
        ser = ProtobufSerializer(cls, client, {"use.deprecated.format": False})
        ctx = SerializationContext(topic, MessageField.VALUE)
        return b.raw_produce(topic, messages, encode=lambda m: ser(m, ctx))

    conf_rate = b.median_rate(confluent)
    result["confluent_serializer"] = round(conf_rate)
    result["ratio_vs_confluent_serializer"] = round(result["deimos"] / conf_rate, 3)
    return result
