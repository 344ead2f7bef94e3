"""Producers: the message pipeline from a payload to a producer backend.

The pipeline, per batch: fill ``message_id``/``timestamp`` when the schema has them; take each
key (explicit key, else ``payload_key`` removed from the payload, else the ``key_config``
field); coerce; encode keys and values in one call each; let tracing add headers; hand the
batch to the selected backend in chunks of ``max_batch_size``. Anything invalid raises before
the first message of the call is handed to the backend.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as _dt
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from deimos import runtime as _runtime_mod
from deimos.config import KeyConfig, TopicSettings, get_settings
from deimos.errors import DeimosError, MissingKeyError, SchemaValidationError
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
    return _class_disabled(cls)


def _class_disabled(cls: type | None) -> bool:
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
        self.schema_context = self.schema.context
        self.coerce = self.schema.coerce
        self.key_kind = key_config.kind
        self.needs_key = key_config.kind != "none"
        fields = self.schema.field_names()
        self.fill_message_id = "message_id" in fields
        self.fill_timestamp = "timestamp" in fields
        self.telemetry = runtime.telemetry
        self.tags = {"topic": self.topic}
        self.context = ProduceContext(self.topic, name, settings, runtime.telemetry,
                                      on_error=on_error, extra={"schema": self.schema})
        #: ``producers.disabled`` of these settings (the settings never change under us)
        self.disabled = settings.producers.disabled
        self.tracing = runtime.telemetry.tracing_enabled
        self.encode = self.schema.encode
        self.encode_key = self.schema.encode_key or self._cannot_encode_keys
        self._backends: dict[tuple[str | None, bool, bool | None], tuple[Any, bool]] = {}
        #: the configured backend and its default mode, resolved on first publish (a
        #: pipeline may be made for its schema alone, with no backend configured)
        self._default: tuple[Any, bool] | None = None

    def _prepare(self, payload: Any, key: Any, index: int) -> tuple[Any, Any]:
        """One payload and its key as they will be encoded: a tombstone's key, schema-class
        instances as dicts, ``payload_key`` taken out, ``message_id``/``timestamp`` filled,
        the key read from its field, the payload coerced. Raises before anything is sent."""
        tp = type(payload)
        if tp is not dict and tp is not str and tp is not bytes and payload is not None:
            if isinstance(payload, Tombstone):
                key = payload.key if key is None else key
                payload = None
            else:
                payload = _to_dict(payload)
        if payload is not None:
            if tp is dict or isinstance(payload, dict):
                if "payload_key" in payload:
                    payload = dict(payload)
                    pk = payload.pop("payload_key")
                    key = pk if key is None else key
                if self.fill_message_id and not payload.get("message_id"):
                    payload = {**payload, "message_id": str(uuid.uuid4())}
                if self.fill_timestamp and not payload.get("timestamp"):
                    payload = {**payload, "timestamp": _now()}
            if key is None and self.key_kind == "field":
                key = _get_path(payload, self.key_config.field)  # type: ignore[arg-type]
            coerce = self.coerce
            if coerce is not None:
                try:
                    payload = coerce(self.schema_context, payload)
                except SchemaValidationError as exc:
                    raise _at_index(exc, index, self.topic) from None
        if key is None and self.needs_key:
            raise MissingKeyError(
                f"Producer {self.name} needs a key for topic {self.topic!r} "
                f"(key_config {self.key_config.describe()}) but message {index} has none; "
                "nothing was sent."
            )
        return payload, key

    def _encode_keys(self, keys: Sequence[Any]) -> list[bytes | None]:
        if not self.needs_key:
            return [None] * len(keys)
        return self.encode_key(self.schema_context, keys)

    def _cannot_encode_keys(self, context: Any, keys: Sequence[Any]) -> list[bytes | None]:
        raise DeimosError(f"schema backend {self.schema.name!r} cannot encode keys")

    def _partition_key(self, payload: Any, given: Any) -> bytes | None:
        if given is not None:
            pkey = given
        elif self.partition_key_fn is not None and payload is not None:
            pkey = self.partition_key_fn(payload)
        else:
            return None
        if pkey is not None and not isinstance(pkey, bytes):
            pkey = str(pkey).encode()
        return pkey

    def _one(self, payload: Any, key: Any, headers: Headers | Mapping[str, Any] | None,
             partition_key: Any) -> list[Message]:
        """One message built without the list machinery (the per-message hot path)."""
        payload, key = self._prepare(payload, key, 0)
        ctx = self.schema_context
        value = self.encode(ctx, (payload,))[0]
        encoded_key = self.encode_key(ctx, (key,))[0] if self.needs_key else None
        pkey = (self._partition_key(payload, partition_key)
                if partition_key is not None or self.partition_key_fn is not None else None)
        return [Message(self.topic, payload, key, _norm_headers(headers) if headers else None,
                        pkey, encoded_key, value)]

    def publish_one(self, payload: Any, key: Any, headers: Headers | Mapping[str, Any] | None,
                    partition_key: Any, sync: bool | None, force_send: bool) -> list[Message]:
        """``publish``: :meth:`build` and :meth:`send` for a single message, without the list
        machinery (this is the per-message hot path)."""
        if self.disabled:
            return []
        messages = self._one(payload, key, headers, partition_key)
        if (sync is None and not force_send and not self.tracing
                and self.runtime.backend_override is None):
            default = self._default
            if default is None:
                default = self._default = self._backend(None, False)
            self._execute(default[0], messages, default[1])
        else:
            self.send(messages, sync, force_send)
        return messages

    def build(
        self,
        payloads: Sequence[Any],
        keys: Sequence[Any] | None,
        headers: Headers | Mapping[str, Any] | None,
        partition_keys: Sequence[Any] | None,
    ) -> list[Message]:
        prepare = self._prepare
        out_payloads: list[Any] = []
        out_keys: list[Any] = []
        for i, payload in enumerate(payloads):
            payload, key = prepare(payload, keys[i] if keys is not None else None, i)
            out_payloads.append(payload)
            out_keys.append(key)
        encoded = self.schema.encode(self.schema_context, out_payloads)
        encoded_keys = self._encode_keys(out_keys)
        base_headers = _norm_headers(headers)
        pk_needed = partition_keys is not None or self.partition_key_fn is not None
        topic = self.topic
        messages = []
        for i, payload in enumerate(out_payloads):
            pkey = self._partition_key(
                payload, partition_keys[i] if partition_keys is not None else None
            ) if pk_needed else None
            messages.append(Message(topic, payload, out_keys[i],
                                    list(base_headers) if base_headers else None,
                                    pkey, encoded_keys[i], encoded[i]))
        return messages

    def _backend(self, sync: bool | None, force_send: bool) -> tuple[Any, bool]:
        """The backend and whether to wait, resolved once per (sync, force_send) shape;
        the runtime's test-mode override is read each time (tests switch it on and off)."""
        runtime = self.runtime
        override = runtime.backend_override
        cache_key = (override, force_send, sync)
        hit = self._backends.get(cache_key)
        if hit is None:
            backend_name = self.backend_name
            if force_send and override is None:
                backend_name = "kafka" if sync else "kafka_async"
            backend = runtime.backend(backend_name)
            hit = (backend, backend.default_sync if sync is None else sync)
            self._backends[cache_key] = hit
        return hit

    def send(self, messages: list[Message], sync: bool | None, force_send: bool) -> None:
        backend, do_sync = self._backend(sync, force_send)
        if self.telemetry.tracing_enabled:
            for chunk in self._chunks(backend, messages):
                with self._send_span(chunk):
                    self._execute(backend, chunk, do_sync)
        else:
            for chunk in self._chunks(backend, messages):
                self._execute(backend, chunk, do_sync)

    async def asend(self, messages: list[Message], sync: bool | None,
                    force_send: bool) -> None:
        """:meth:`send` from a coroutine: the backend's ``execute_async`` awaited on the
        event loop, or its ``execute`` in a worker thread when it has none."""
        backend, do_sync = self._backend(sync, force_send)
        for chunk in self._chunks(backend, messages):
            if self.telemetry.tracing_enabled:
                with self._send_span(chunk):
                    await self._aexecute(backend, chunk, do_sync)
            else:
                await self._aexecute(backend, chunk, do_sync)

    def _chunks(self, backend: Any, messages: list[Message]) -> list[list[Message]]:
        step = self.max_batch_size if backend.chunked else max(1, len(messages))
        if len(messages) <= step:
            return [messages]
        return [messages[start:start + step] for start in range(0, len(messages), step)]

    @contextmanager
    def _send_span(self, chunk: list[Message]) -> Iterator[None]:
        """The producer span of one chunk, its trace context added to the chunk's headers
        (one context per chunk: the headers are built once)."""
        with self.telemetry.span(f"send {self.topic}", {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": self.topic,
            "messaging.batch.message_count": len(chunk),
        }) as spans:
            carrier: dict[str, bytes] = {}
            spans.inject(carrier)
            if carrier:
                extra = list(carrier.items())
                for m in chunk:
                    m.headers = m.headers + extra if m.headers else extra[:]
            yield

    def _execute(self, backend: Any, chunk: list[Message], sync: bool) -> None:
        try:
            backend.execute(self.context, chunk, sync)
        except Exception:
            self.telemetry.increment("publish_error", len(chunk), self.tags)
            raise
        if self.telemetry.metrics_enabled:
            self.telemetry.increment("publish", len(chunk), self.tags)

    async def _aexecute(self, backend: Any, chunk: list[Message], sync: bool) -> None:
        try:
            if backend.execute_async is not None:
                await backend.execute_async(self.context, chunk, sync)
            else:
                await asyncio.to_thread(backend.execute, self.context, chunk, sync)
        except Exception:
            self.telemetry.increment("publish_error", len(chunk), self.tags)
            raise
        if self.telemetry.metrics_enabled:
            self.telemetry.increment("publish", len(chunk), self.tags)

    async def apublish_one(self, payload: Any, key: Any,
                           headers: Headers | Mapping[str, Any] | None, partition_key: Any,
                           sync: bool | None, force_send: bool) -> list[Message]:
        """``apublish``: :meth:`publish_one` awaiting the backend."""
        if self.disabled:
            return []
        messages = self._one(payload, key, headers, partition_key)
        await self.asend(messages, sync, force_send)
        return messages


def _now() -> int:
    return int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)


def _at_index(exc: SchemaValidationError, index: int, topic: str) -> SchemaValidationError:
    """The same error, saying which message of the call it was about (as encode errors
    already do: the field paths stay as they were)."""
    errors = [(path, f"message {index}: {msg}") for path, msg in exc.errors]
    return type(exc)(errors, exc.topic or topic)


def _norm_headers(headers: Headers | Mapping[str, Any] | None) -> Headers | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


#: class attributes a producer's pipeline is built from: assigning one rebuilds it
_PIPELINE_ATTRS = frozenset({"topic", "schema", "namespace", "key_config", "backend",
                             "max_batch_size", "partition_key", "delivery_failed"})


class _ProducerMeta(abc.ABCMeta):
    """Drops the resolved pipeline of a producer class (and of its subclasses) when one of
    the attributes it was built from is assigned, so ``P.topic = ...`` takes effect on the
    next publish while ``publish`` itself checks nothing but the runtime. (ABCMeta as the
    base, so producers can still mix in abstract base classes.)"""

    def __setattr__(cls, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in _PIPELINE_ATTRS:
            _forget_pipelines(cls)

    def __delattr__(cls, name: str) -> None:
        super().__delattr__(name)
        if name in _PIPELINE_ATTRS:
            _forget_pipelines(cls)


#: producer class -> (the runtime it was resolved for, its pipeline)
_pipelines: dict[type, tuple[Runtime, Pipeline]] = {}


def _forget_pipelines(cls: type) -> None:
    todo = [cls]
    while todo:
        c = todo.pop()
        _pipelines.pop(c, None)
        todo.extend(c.__subclasses__())


class Producer(metaclass=_ProducerMeta):
    """Base class of producers: declare the topic and schema, call ``publish``.

    ``key_config`` takes the Ruby Deimos shapes: ``"none"``, ``"plain"``,
    ``{"field": "id"}`` (dotted paths allowed) or ``{"schema": "MyKey"}``. Class attributes
    may be reassigned at any time (``MyProducer.topic = "other"``): the next publish uses
    them; change a ``key_config`` dict by assigning a new one, not in place.
    """

    topic: ClassVar[str]
    schema: ClassVar[str | None] = None
    namespace: ClassVar[str | None] = None
    key_config: ClassVar[Any] = "none"
    backend: ClassVar[str | None] = None
    max_batch_size: ClassVar[int | None] = None

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
        entry = _pipelines.get(cls)
        if entry is not None and entry[0] is _runtime_mod._runtime:
            return entry[1]
        runtime = get_runtime()
        if entry is not None and entry[0] is runtime:
            return entry[1]
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
        _pipelines[cls] = (runtime, pipeline)
        return pipeline

    @classmethod
    def validate(cls, payload: Any) -> None:
        """Check ``payload`` against this producer's schema without sending anything; raises
        :class:`deimos.SchemaValidationError` naming every invalid field. (``publish``
        refuses an invalid payload by itself: this is for checking ahead, in a form or an
        API handler.)"""
        pipeline = cls._pipeline()
        validate = pipeline.schema.validate
        payload = _to_dict(payload)
        if validate is not None:
            validate(pipeline.schema_context, payload)
        elif pipeline.coerce is not None:
            pipeline.coerce(pipeline.schema_context, payload)

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
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        entry = _pipelines.get(cls)
        if entry is not None and entry[0] is _runtime_mod._runtime:
            return entry[1].publish_one(payload, key, headers, partition_key, sync, force_send)
        return cls._pipeline().publish_one(payload, key, headers, partition_key, sync,
                                           force_send)

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
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not payloads:
            return []
        pipeline = cls._pipeline()
        if pipeline.disabled:
            return []
        messages = pipeline.build(payloads, keys, headers, partition_keys)
        pipeline.send(messages, sync, force_send)
        return messages

    @classmethod
    async def apublish(
        cls,
        payload: Any,
        key: Any = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_key: Any = None,
        *,
        sync: bool | None = None,
        force_send: bool = False,
    ) -> list[Message]:
        """:meth:`publish` from a coroutine, never blocking the event loop: returns once the
        backend accepted the message (an asynchronous backend: queued) or, with
        ``sync=True`` (or a synchronous backend), once it was delivered; a delivery error
        raises here, in the awaiting coroutine."""
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        return await cls._pipeline().apublish_one(payload, key, headers, partition_key, sync,
                                                  force_send)

    @classmethod
    async def apublish_list(
        cls,
        payloads: Iterable[Any],
        *,
        keys: Sequence[Any] | None = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_keys: Sequence[Any] | None = None,
        sync: bool | None = None,
        force_send: bool = False,
    ) -> list[Message]:
        """:meth:`publish_list` from a coroutine, as :meth:`apublish` (one wait for the
        whole list when delivery is awaited)."""
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not payloads:
            return []
        pipeline = cls._pipeline()
        if pipeline.disabled:
            return []
        messages = pipeline.build(payloads, keys, headers, partition_keys)
        await pipeline.asend(messages, sync, force_send)
        return messages


#: ``deimos.produce`` pipelines per topic, for the runtime they were built for
_topic_pipelines: dict[str, Pipeline] = {}


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
    pipeline = _topic_pipelines.get(topic)
    if pipeline is None or pipeline.runtime is not runtime:
        ts = _topic_settings(runtime, topic)
        pipeline = Pipeline(
            runtime, name=f"produce({topic})", topic=ts.topic, schema=ts.schema_name,
            namespace=ts.namespace, key_config=ts.key_config, backend=ts.backend,
            max_batch_size=None,
        )
        if any(p.runtime is not runtime for p in _topic_pipelines.values()):
            _topic_pipelines.clear()  # built for earlier settings
        _topic_pipelines[topic] = pipeline
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
