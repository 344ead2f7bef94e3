"""Producers: the message pipeline from a payload to a producer backend.

The pipeline, per batch: fill ``message_id``/``timestamp`` when the schema has them; take each
key (explicit key, else ``payload_key`` removed from the payload, else the ``key_config``
field); coerce; encode keys and values in one call each; let tracing add headers; hand the
batch to the selected backend in chunks of ``max_batch_size``. Anything invalid raises before
the first message of the call is handed to the backend.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from deimos.config import KeyConfig, TopicSettings, get_settings
from deimos.errors import DeimosError, MissingKeyError
from deimos.message import Headers, Message, ProduceContext
from deimos.runtime import Runtime, SchemaBackend, get_runtime

log = logging.getLogger("deimos.producer")


class Tombstone:
    """A delete marker for ``publish_list``: a message with this key and no value."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Tombstone({self.key!r})"


def tombstone(key: Any) -> Tombstone:
    return Tombstone(key)


# ---------------------------------------------------------------------------------------------
# disabling producers
# ---------------------------------------------------------------------------------------------

_disabled_lock = threading.Lock()
_disabled_all = 0
_disabled_classes: dict[type, int] = {}


@contextmanager
def disable_producers(*classes: type[Producer]) -> Iterator[None]:
    """Within the block, the given producer classes (all, when none given) send nothing.

    Counted, so nested and concurrent blocks (from several threads) compose correctly.
    """
    global _disabled_all
    with _disabled_lock:
        if classes:
            for c in classes:
                _disabled_classes[c] = _disabled_classes.get(c, 0) + 1
        else:
            _disabled_all += 1
    try:
        yield
    finally:
        with _disabled_lock:
            if classes:
                for c in classes:
                    _disabled_classes[c] -= 1
                    if not _disabled_classes[c]:
                        del _disabled_classes[c]
            else:
                _disabled_all -= 1


def producers_disabled(cls: type | None = None) -> bool:
    if _disabled_all or get_settings().producers.disabled:
        return True
    if cls is None or not _disabled_classes:
        return False
    return any(issubclass(cls, c) for c in _disabled_classes)


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------


def _get_path(payload: Any, path: str) -> Any:
    cur = payload
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else getattr(cur, part, None)
        if cur is None:
            return None
    return cur


def _to_dict(payload: Any) -> Any:
    """Schema-class instances become dicts (their ``to_dict``); others pass through."""
    to_dict = getattr(payload, "to_dict", None)
    if to_dict is not None and not isinstance(payload, Mapping):
        return to_dict()
    return payload


class Pipeline:
    """Everything one producer (class or configured topic) needs, resolved once per runtime."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str,
        topic: str,
        schema: str | None,
        namespace: str | None,
        key_config: KeyConfig,
        backend: str | None,
        max_batch_size: int | None,
        partition_key_fn: Any = None,
        on_error: Any = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.name = name
        self.topic = settings.producers.topic_prefix + topic
        self.key_config = key_config
        self.backend_name = backend
        self.max_batch_size = max_batch_size or settings.producers.max_batch_size
        self.partition_key_fn = partition_key_fn
        self.schema: SchemaBackend = runtime.schema_backend(
            topic=self.topic, schema=schema, namespace=namespace, key_config=key_config)
        fields = self.schema.field_names()
        self.fill_message_id = "message_id" in fields
        self.fill_timestamp = "timestamp" in fields
        self.telemetry = runtime.telemetry
        self.tags = {"topic": self.topic}
        self.context = ProduceContext(self.topic, name, settings, runtime.telemetry,
                                      on_error=on_error)

    def build(
        self,
        payloads: Sequence[Any],
        keys: Sequence[Any] | None,
        headers: Headers | Mapping[str, Any] | None,
        partition_keys: Sequence[Any] | None,
    ) -> list[Message]:
        kc = self.key_config.kind
        key_field = self.key_config.field
        needs_key = kc != "none"
        fill_id, fill_ts = self.fill_message_id, self.fill_timestamp
        schema = self.schema
        coerce = schema.coerce
        ctx = schema.context
        base_headers = _norm_headers(headers)
        out_payloads: list[Any] = []
        out_keys: list[Any] = []
        for i, payload in enumerate(payloads):
            key = keys[i] if keys is not None else None
            if isinstance(payload, Tombstone):
                key = payload.key if key is None else key
                payload = None
            elif payload is not None:
                payload = _to_dict(payload)
                if isinstance(payload, dict):
                    if "payload_key" in payload:
                        payload = dict(payload)
                        pk = payload.pop("payload_key")
                        key = pk if key is None else key
                    if fill_id and not payload.get("message_id"):
                        payload = {**payload, "message_id": str(uuid.uuid4())}
                    if fill_ts and not payload.get("timestamp"):
                        payload = {**payload, "timestamp": _now()}
                if key is None and kc == "field":
                    key = _get_path(payload, key_field)  # type: ignore[arg-type]
                if coerce is not None:
                    payload = coerce(ctx, payload)
            if needs_key and key is None:
                raise MissingKeyError(
                    f"Producer {self.name} needs a key for topic {self.topic!r} "
                    f"(key_config {self.key_config.describe()}) but message {i} has none; "
                    "nothing was sent."
                )
            out_payloads.append(payload)
            out_keys.append(key)
        encoded = schema.encode(ctx, out_payloads)
        if needs_key:
            if schema.encode_key is None:
                raise DeimosError(f"schema backend {schema.name!r} cannot encode keys")
            encoded_keys = schema.encode_key(ctx, out_keys)
        else:
            encoded_keys = [None] * len(out_payloads)
        pk_fn = self.partition_key_fn
        messages = []
        topic = self.topic
        for i, payload in enumerate(out_payloads):
            if partition_keys is not None and partition_keys[i] is not None:
                pkey: Any = partition_keys[i]
            elif pk_fn is not None and payload is not None:
                pkey = pk_fn(payload)
            else:
                pkey = None
            if pkey is not None and not isinstance(pkey, bytes):
                pkey = str(pkey).encode()
            messages.append(Message(topic, payload, out_keys[i],
                                    list(base_headers) if base_headers else None,
                                    pkey, encoded_keys[i], encoded[i]))
        return messages

    def send(self, messages: list[Message], sync: bool | None, force_send: bool) -> None:
        runtime = self.runtime
        backend_name = self.backend_name
        if force_send and (runtime.backend_override is None):
            backend_name = "kafka" if sync else "kafka_async"
        backend = runtime.backend(backend_name)
        do_sync = backend.default_sync if sync is None else sync
        telemetry = self.telemetry
        step = self.max_batch_size
        for start in range(0, len(messages), step):
            chunk = messages[start:start + step]
            if telemetry.tracing_enabled:
                with telemetry.span(f"send {self.topic}", {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": self.topic,
                    "messaging.batch.message_count": len(chunk),
                }) as spans:
                    carrier: dict[str, bytes] = {}
                    spans.inject(carrier)  # one context per chunk: build its headers once
                    if carrier:
                        extra = list(carrier.items())
                        for m in chunk:
                            m.headers = m.headers + extra if m.headers else extra[:]
                    self._execute(backend, chunk, do_sync)
            else:
                self._execute(backend, chunk, do_sync)

    def _execute(self, backend: Any, chunk: list[Message], sync: bool) -> None:
        try:
            backend.execute(self.context, chunk, sync)
        except Exception:
            self.telemetry.increment("publish_error", len(chunk), self.tags)
            raise
        self.telemetry.increment("publish", len(chunk), self.tags)


def _now() -> int:
    return int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)


def _norm_headers(headers: Headers | Mapping[str, Any] | None) -> Headers | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


class Producer:
    """Base class of producers: declare the topic and schema, call ``publish``.

    ``key_config`` takes the Ruby Deimos shapes: ``"none"``, ``"plain"``,
    ``{"field": "id"}`` (dotted paths allowed) or ``{"schema": "MyKey"}``.
    """

    topic: ClassVar[str]
    schema: ClassVar[str | None] = None
    namespace: ClassVar[str | None] = None
    key_config: ClassVar[Any] = "none"
    backend: ClassVar[str | None] = None
    max_batch_size: ClassVar[int | None] = None

    _deimos_pipeline: ClassVar[tuple[Runtime, tuple[Any, ...], Pipeline]]

    @classmethod
    def partition_key(cls, payload: Any) -> Any:
        """Override to partition on something other than the message key."""
        return None

    @classmethod
    def delivery_failed(cls, message: Message, error: BaseException) -> None:
        """Called for each message an asynchronous backend could not deliver after
        ``publish`` returned (already logged and counted as ``publish_error``). Override to
        keep or re-route such messages."""

    @classmethod
    def _pipeline(cls) -> Pipeline:
        runtime = get_runtime()
        entry = cls.__dict__.get("_deimos_pipeline")
        # the class attributes are part of the key: assigning ``P.topic = ...`` takes effect
        declared = (cls.topic, cls.schema, cls.namespace, repr(cls.key_config), cls.backend,
                    cls.max_batch_size)
        if entry is None or entry[0] is not runtime or entry[1] != declared:
            overridden = cls.partition_key.__func__ is not Producer.partition_key.__func__  # type: ignore[attr-defined]
            on_error = cls.delivery_failed.__func__ is not Producer.delivery_failed.__func__  # type: ignore[attr-defined]
            pipeline = Pipeline(
                runtime,
                name=cls.__name__,
                topic=cls.topic,
                schema=cls.schema,
                namespace=cls.namespace,
                key_config=KeyConfig.model_validate(cls.key_config),
                backend=cls.backend,
                max_batch_size=cls.max_batch_size,
                partition_key_fn=cls.partition_key if overridden else None,
                on_error=cls.delivery_failed if on_error else None,
            )
            cls._deimos_pipeline = (runtime, declared, pipeline)
            return pipeline
        return entry[2]

    @classmethod
    def publish(
        cls,
        payload: Any,
        key: Any = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_key: Any = None,
        *,
        sync: bool | None = None,
        force_send: bool = False,
    ) -> list[Message]:
        """Publish one message (``payload=None`` with a ``key`` is a tombstone)."""
        return cls.publish_list(
            [payload], keys=None if key is None else [key], headers=headers,
            partition_keys=None if partition_key is None else [partition_key],
            sync=sync, force_send=force_send,
        )

    @classmethod
    def publish_list(
        cls,
        payloads: Iterable[Any],
        *,
        keys: Sequence[Any] | None = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_keys: Sequence[Any] | None = None,
        sync: bool | None = None,
        force_send: bool = False,
    ) -> list[Message]:
        """Publish many messages; returns the messages handed to the backend.

        Everything is validated and encoded before the first message is sent.
        """
        if producers_disabled(cls):
            return []
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not payloads:
            return []
        pipeline = cls._pipeline()
        messages = pipeline.build(payloads, keys, headers, partition_keys)
        pipeline.send(messages, sync, force_send)
        return messages


_topic_pipelines: dict[tuple[int, str], Pipeline] = {}


def produce(
    topic: str,
    messages: Iterable[Any],
    *,
    keys: Sequence[Any] | None = None,
    headers: Headers | Mapping[str, Any] | None = None,
    sync: bool | None = None,
    force_send: bool = False,
) -> list[Message]:
    """Publish to a topic configured under ``producers.topics`` without a producer class."""
    if producers_disabled():
        return []
    runtime = get_runtime()
    pipeline = _topic_pipelines.get((id(runtime), topic))
    if pipeline is None or pipeline.runtime is not runtime:
        ts = _topic_settings(runtime, topic)
        pipeline = Pipeline(
            runtime, name=f"produce({topic})", topic=ts.topic, schema=ts.schema_name,
            namespace=ts.namespace, key_config=ts.key_config, backend=ts.backend,
            max_batch_size=None,
        )
        _topic_pipelines.clear()
        _topic_pipelines[(id(runtime), topic)] = pipeline
    payloads = messages if isinstance(messages, list) else list(messages)
    built = pipeline.build(payloads, keys, headers, None)
    pipeline.send(built, sync, force_send)
    return built


def _topic_settings(runtime: Runtime, topic: str) -> TopicSettings:
    for ts in runtime.settings.producers.topics:
        if ts.topic == topic:
            return ts
    configured = ", ".join(t.topic for t in runtime.settings.producers.topics) or "none"
    raise DeimosError(
        f"Topic {topic!r} is not configured under producers.topics (configured: {configured}); "
        "add it there or use a Producer class."
    )


def flush(timeout: float | None = None) -> int:
    """Wait for asynchronously sent messages; returns how many are still undelivered."""
    return get_runtime().flush(timeout)
