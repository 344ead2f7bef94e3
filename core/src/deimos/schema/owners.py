"""The schemas a service uses, and who uses them: every configured or imported producer and
every configured consumer with a schema, each with the topic it reads or writes.

For the commands that look at a service's schemas as a whole rather than at one message:
``deimos schemas check --against-registry`` and plugins' schema tools (``deimos protobuf
key-protos``). The schema backend is bound lazily, so a caller reports one owner's missing
schema as that owner's error and goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deimos.config import KeyConfig
from deimos.runtime import Runtime, SchemaBackend


def _producer_schema(cls: Any) -> Callable[[], SchemaBackend]:
    def bind() -> SchemaBackend:
        schema: SchemaBackend = cls._pipeline().schema
        return schema

    return bind


def schema_owners(runtime: Runtime) -> list[tuple[str, str, Callable[[], SchemaBackend]]]:
    """``(owner, topic, the schema backend bound to it)`` for every configured or imported
    producer and every configured consumer with a schema; the binding is made when called,
    so one producer's missing schema is its own error line."""
    from deimos.consumer.settings import consumer_settings_for
    from deimos.producer import Producer, producer_for

    out: list[tuple[str, str, Callable[[], SchemaBackend]]] = []
    seen: set[type] = set()
    for i, ts in enumerate(runtime.settings.producers.topics):
        made = producer_for(ts.topic)
        seen.add(made)
        if ts.schema_name:
            out.append((f"producers.topics.{i}", ts.topic, _producer_schema(made)))
    todo = list(Producer.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if cls not in seen and getattr(cls, "topic", None) and getattr(cls, "schema", None):
            seen.add(cls)
            out.append((f"producer {cls.__module__}.{cls.__qualname__}", str(cls.topic),
                        _producer_schema(cls)))
    prefix = runtime.settings.producers.topic_prefix
    for _, cs in consumer_settings_for(runtime):
        if not cs.schema_name:
            continue
        for topic in cs.topics:
            def bind(topic: str = topic, cs: Any = cs) -> SchemaBackend:
                return runtime.schema_backend(
                    topic=prefix + topic, schema=cs.schema_name, namespace=cs.namespace,
                    key_config=cs.key_config or KeyConfig(kind="none"), own=cs,
                    where=f"consumer {cs.name}")
            out.append((f"consumer {cs.name}", topic, bind))
    return out
