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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import is_
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from deimos import events as _events
from deimos import runtime as _runtime_mod
from deimos.config import (
    DEFAULT_CLUSTER,
    KeyConfig,
    OwnSchemaSettings,
    TopicSettings,
    format_errors,
    get_settings,
)
from deimos.errors import (
    ConfigError,
    DeimosError,
    MissingKeyError,
    PublishError,
    SchemaValidationError,
)
from deimos.kafka.config import cluster_settings
from deimos.message import Headers, Message, ProduceContext
from deimos.runtime import Runtime, SchemaBackend, get_runtime
from deimos.schema.base import encode_plain_key

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
        _publishers.clear()  # publish() checks nothing else while a class is in this table
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
    """Would ``cls`` (any producer, when None) send nothing now: ``producers.disabled``,
    a :func:`disable_producers` block, or the class's ``disabled`` attribute."""
    if _disabled_all or get_settings().producers.disabled:
        return True
    return getattr(cls, "disabled", False) is True or _class_disabled(cls)


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
        cluster: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        own: OwnSchemaSettings | None = None,
        where: str | None = None,
        disabled: bool = False,
        payload_log: str | None = None,
        producer: type | None = None,
    ) -> None:
        settings = runtime.settings
        where = where or f"producer {name}"
        #: what this producer's backend sees: its cluster as ``kafka``, its own librdkafka
        #: properties over ``producers.config``
        try:
            self.kafka_settings = cluster_settings(settings, cluster, kafka_config,
                                                   where=f"{where}.cluster")
        except ConfigError:
            if runtime.backend_override is None:
                raise
            # test mode (a runtime of its own, rebuilt when it ends): nothing reaches a
            # cluster, so test settings need not configure the clusters producers name
            self.kafka_settings = settings
        self.cluster = cluster or DEFAULT_CLUSTER
        self.runtime = runtime
        self.name = name
        self.topic = settings.producers.topic_prefix + topic
        self.key_config = key_config
        self.backend_name = backend
        self.max_batch_size = max_batch_size or settings.producers.max_batch_size
        self.partition_key_fn = partition_key_fn
        self.schema: SchemaBackend = runtime.schema_backend(
            topic=self.topic, schema=schema, namespace=namespace, key_config=key_config,
            own=own, where=where)
        self.schema_context = self.schema.context
        self.coerce = self.schema.coerce
        self.key_kind = key_config.kind
        self.needs_key = key_config.kind != "none"
        fields = self.schema.field_names()
        self.fill_message_id = "message_id" in fields
        self.fill_timestamp = "timestamp" in fields
        self.telemetry = runtime.telemetry
        self.tags = {"topic": self.topic}
        self.context = ProduceContext(self.topic, name, self.kafka_settings, runtime.telemetry,
                                      on_error=on_error, extra={"schema": self.schema},
                                      cluster=None if self.cluster == DEFAULT_CLUSTER
                                      else self.cluster)
        #: ``producers.disabled`` of these settings (the settings never change under us), or
        #: the producer class's own ``disabled``
        self.disabled = settings.producers.disabled or disabled
        #: the ``payload_log`` mode, None when nothing is logged
        self.payload_log = payload_log or settings.producers.payload_log
        self.producer = producer
        #: ``deimos.encode_message`` to its subscribers, None without any
        self.on_encode = runtime.events.emitter(_events.ENCODE_MESSAGE)
        #: anything beyond build-and-send: one check on the per-message path for all of them
        self.special = (self.disabled or self.payload_log is not None
                        or self.on_encode is not None)
        self.tracing = runtime.telemetry.tracing_enabled
        self.encode = self.schema.encode
        self.encode_key = self.schema.encode_key or self._cannot_encode_keys
        self._backends: dict[tuple[str | None, bool, bool | None], tuple[Any, bool]] = {}
        #: the configured backend and its default mode, resolved on first publish (a
        #: pipeline may be made for its schema alone, with no backend configured)
        self._default: tuple[Any, bool] | None = None
        #: publish()'s value and key encoders (see _resolve_one) and the backend's
        #: one-message sender (``False``: none; see _resolve_sender)
        self._encoders: tuple[Callable[[Any], bytes | None],
                              Callable[[Any], bytes | None]] | None = None
        self._sender: Callable[[Message], None] | Literal[False] | None = None
        #: the schema plugin's "needs no coercion" checker (``False``: none; see _checker)
        self._check: Callable[[Any], bool] | Literal[False] | None = None
        #: the schema plugin's payload classes taken as they are (see _native_types)
        self._native: frozenset[type] | None = None

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

    def _coerce_dicts(self, payloads: Sequence[Any]) -> Sequence[Any] | None:
        """:meth:`_prepare` for a list of plain dicts with their keys given and nothing to
        fill (only the coercion is left), without a call per message where the schema
        plugin has a checker and every payload passes it (measured: the coercion hook's call
        per message cost ``publish_list`` of 6-field Avro records 1,000 of its 59,000
        instructions a message). None when a payload needs more, or is invalid: the general
        loop then prepares them all (and says which was invalid)."""
        coerce = self.coerce
        check = self._check if self._check is not None else self._checker()
        # a Python loop, not map() over the checker: a Python function called from C gets
        # an interpreter frame of its own, one called here does not (CPython 3.11)
        if check is not False or coerce is None:
            for p in payloads:
                if type(p) is not dict or "payload_key" in p:
                    return None
                if check is not False and not check(p):
                    break
            else:
                return payloads  # all already right: nothing to copy
        ctx = self.schema_context
        out: list[Any] = []
        append = out.append
        try:
            for p in payloads:
                if type(p) is not dict or "payload_key" in p:
                    return None
                append(coerce(ctx, p))  # type: ignore[misc]
        except SchemaValidationError:
            return None
        return out

    def _native_types(self) -> frozenset[type]:
        """The schema plugin's ``deimos_schema_native_types``, asked once, at the first
        publish (the plugin may load the schema then); empty without any."""
        if self._native is None:
            schema = self.schema
            found = (schema.native_types(self.schema_context)
                     if schema.native_types is not None else None)
            self._native = frozenset(found or ())
        return self._native

    def _checker(self) -> Callable[[Any], bool] | Literal[False]:
        """The schema plugin's checker (``deimos_schema_checker``), asked once, at the first
        publish (the plugin may load the schema then); ``False`` without one."""
        schema = self.schema
        check = (schema.checker(self.schema_context)
                 if schema.checker is not None and self.coerce is not None else None)
        self._check = False if check is None else check
        return self._check

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
        """One message built without the list machinery (``apublish``'s path), with
        ``publish()``'s encoders."""
        payload, key = self._prepare(payload, key, 0)
        enc_value, enc_key = self._encoders or self._resolve_one()
        value = enc_value(payload)
        encoded_key = enc_key(key) if self.needs_key else None
        pkey = (self._partition_key(payload, partition_key)
                if partition_key is not None or self.partition_key_fn is not None else None)
        return [Message(self.topic, payload, key, _norm_headers(headers) if headers else None,
                        pkey, encoded_key, value)]

    def publish_one(self, payload: Any, key: Any, headers: Headers | Mapping[str, Any] | None,
                    partition_key: Any, sync: bool | None, force_send: bool) -> list[Message]:
        """``publish``: :meth:`build` and :meth:`send` for a single message, without the list
        machinery. The first call compiles the per-message path (:meth:`_compile_one`) and
        installs it on this pipeline in place of this method."""
        if self.special:  # disabled, payload_log, events: the list path has them
            return self.publish_many([payload], None if key is None else [key], headers,
                                     None if partition_key is None else [partition_key],
                                     None, sync, force_send)
        self.publish_one = self._compile_one()  # type: ignore[method-assign]
        return self.publish_one(payload, key, headers, partition_key, sync, force_send)

    def _compile_one(self) -> Callable[..., list[Message]]:
        """``publish()``'s hot path as a closure over everything that depends only on the
        settings (measured: each attribute lookup and call level costs 2-5% of a
        per-message publish). One-value encoders and the backend's one-message sender come
        from the plugins where they offer them; text for core's plain encoders is encoded
        inline (a call level is ~10% of a plain publish). Any call the fast path does not
        cover (a ``sync``/``force_send``/partition key, tracing, the test-mode override)
        takes :meth:`send`."""
        enc_value, enc_key = self._resolve_one()
        prepare, needs_key, coerce = self._prepare, self.needs_key, self.coerce
        topic, runtime, telemetry, tags = self.topic, self.runtime, self.telemetry, self.tags
        metrics = telemetry.metrics_enabled
        general = (self.tracing or self.partition_key_fn is not None)
        partition_key_of, send, resolve_sender = (self._partition_key, self.send,
                                                  self._resolve_sender)
        #: str values/keys become their UTF-8 bytes (core's plain encoders): encoded here
        text_value = getattr(enc_value, "utf8_text", False) is True
        text_key = needs_key and enc_key is encode_plain_key
        new_message = Message.__new__
        ctx = self.schema_context
        check = self._check if self._check is not None else self._checker()
        dicts_direct = not (self.fill_message_id or self.fill_timestamp)
        native = self._native_types()
        sender: Callable[[Message], None] | Literal[False] | None = None

        def publish_one(payload: Any, key: Any, headers: Headers | Mapping[str, Any] | None,
                        partition_key: Any, sync: bool | None, force_send: bool
                        ) -> list[Message]:
            nonlocal sender
            tp = type(payload)
            if (tp is dict and dicts_direct and (key is not None or not needs_key)
                    and "payload_key" not in payload):
                try:  # a plain dict with its key: only the coercion is left (_coerce_dicts)
                    if coerce is not None and (check is False or not check(payload)):
                        payload = coerce(ctx, payload)
                except SchemaValidationError:
                    payload, key = prepare(payload, key, 0)  # raises, naming the message
                tp = type(payload)
            elif tp in native and (key is not None or not needs_key):
                pass  # what the schema takes as it is (deimos_schema_native_types)
            elif coerce is not None or (tp is not str and tp is not bytes) or (
                    key is None and needs_key):
                payload, key = prepare(payload, key, 0)  # text needs none of it
                tp = type(payload)
            if tp is str and text_value:
                try:
                    value = payload.encode()
                except UnicodeEncodeError:
                    value = enc_value(payload)  # raises the schema's error
            else:
                value = enc_value(payload)
            if not needs_key:
                encoded_key = None
            elif text_key and type(key) is str:
                encoded_key = key.encode()  # as encode_plain_key does
            else:
                encoded_key = enc_key(key)
            if (general or partition_key is not None or sync is not None or force_send
                    or runtime.backend_override is not None):
                pkey = partition_key_of(payload, partition_key)
                messages = [Message(topic, payload, key,
                                    _norm_headers(headers) if headers else None, pkey,
                                    encoded_key, value)]
                send(messages, sync, force_send)
                return messages
            # Message.__init__'s frame costs ~5% of a plain publish: the slots set here
            m = new_message(Message)
            m.topic, m.payload, m.key, m.partition_key = topic, payload, key, None
            m.headers = _norm_headers(headers) if headers else None
            m.encoded_key, m.encoded_payload = encoded_key, value
            s = sender
            if s is None:
                s = sender = resolve_sender()
            if s is False:
                send([m], None, False)
                return [m]
            try:
                s(m)
            except Exception as exc:
                _count_failure(telemetry, tags, exc, 1)
                raise
            if metrics:
                telemetry.increment("publish", 1, tags)
            return [m]

        return publish_one

    def apublish_now(self, payload: Any, key: Any,
                     headers: Headers | Mapping[str, Any] | None, partition_key: Any,
                     sync: bool | None, force_send: bool
                     ) -> list[Message] | Awaitable[list[Message]]:
        """``apublish``: the messages when the backend accepted them at once, else an
        awaitable of them (the general path, :meth:`apublish_one`): a queued message then
        costs ``apublish`` no coroutine of the pipeline's or the backend's. The first call
        compiles the per-message path (:meth:`_compile_aone`) and installs it in place of
        this method."""
        if self.special:  # disabled, payload_log, events: the list path has them
            return self.apublish_many([payload], None if key is None else [key], headers,
                                      None if partition_key is None else [partition_key],
                                      None, sync, force_send)
        self.apublish_now = self._compile_aone()  # type: ignore[method-assign]
        return self.apublish_now(payload, key, headers, partition_key, sync, force_send)

    def _compile_aone(self) -> Callable[..., list[Message] | Awaitable[list[Message]]]:
        """:meth:`_compile_one`'s counterpart for ``apublish``: the same per-message steps
        as a closure, handing the message to the backend's ``async_sender`` (which never
        blocks and never awaits); whatever that declines (a full queue, a refusal, an open
        transaction), and every call the fast path does not cover, returns the coroutine of
        the general path instead, for ``apublish`` to await."""
        enc_value, enc_key = self._encoders or self._resolve_one()
        prepare, needs_key, coerce = self._prepare, self.needs_key, self.coerce
        topic, runtime, telemetry, tags = self.topic, self.runtime, self.telemetry, self.tags
        metrics = telemetry.metrics_enabled
        general = (self.tracing or self.partition_key_fn is not None)
        apublish_one, asend, resolve_sender = (self.apublish_one, self.asend,
                                               self._resolve_async_sender)
        ctx = self.schema_context
        check = self._check if self._check is not None else self._checker()
        dicts_direct = not (self.fill_message_id or self.fill_timestamp)
        native = self._native_types()
        sender: Callable[[Message], bool] | Literal[False] | None = None

        async def send_built(messages: list[Message]) -> list[Message]:
            await asend(messages, None, False)
            return messages

        def apublish_now(payload: Any, key: Any, headers: Headers | Mapping[str, Any] | None,
                         partition_key: Any, sync: bool | None, force_send: bool
                         ) -> list[Message] | Awaitable[list[Message]]:
            nonlocal sender
            if (general or partition_key is not None or sync is not None or force_send
                    or runtime.backend_override is not None):
                return apublish_one(payload, key, headers, partition_key, sync, force_send)
            tp = type(payload)
            if (tp is dict and dicts_direct and (key is not None or not needs_key)
                    and "payload_key" not in payload):
                try:  # a plain dict with its key: only the coercion is left (_coerce_dicts)
                    if coerce is not None and (check is False or not check(payload)):
                        payload = coerce(ctx, payload)
                except SchemaValidationError:
                    payload, key = prepare(payload, key, 0)  # raises, naming the message
            elif tp in native and (key is not None or not needs_key):
                pass  # what the schema takes as it is (deimos_schema_native_types)
            elif (tp is not str and tp is not bytes) or coerce is not None or (
                    key is None and needs_key):
                payload, key = prepare(payload, key, 0)  # text needs none of it
            value = enc_value(payload)
            m = Message(topic, payload, key, _norm_headers(headers) if headers else None,
                        None, enc_key(key) if needs_key else None, value)
            if sender is None:
                sender = resolve_sender()
            if sender is False:
                return send_built([m])
            try:
                if not sender(m):
                    return send_built([m])
            except Exception as exc:
                _count_failure(telemetry, tags, exc, 1)
                raise
            if metrics:
                telemetry.increment("publish", 1, tags)
            return [m]

        return apublish_now

    def _resolve_async_sender(self) -> Callable[[Message], bool] | Literal[False]:
        """The configured backend's ``apublish`` sender when its default is asynchronous
        (``False`` when there is none). Called only without the test-mode override."""
        default = self._default
        if default is None:
            default = self._default = self._backend(None, False)
        backend, do_sync = default
        sender = (backend.async_sender(self.context)
                  if backend.async_sender is not None and not do_sync else None)
        return False if sender is None else sender

    def _resolve_one(self) -> tuple[Callable[[Any], bytes | None],
                                    Callable[[Any], bytes | None]]:
        """The value and key encoders of ``publish()``: the schema plugin's one-value hook
        where it has one, the list hooks otherwise. Resolved at the first publish (a registry
        may be asked for the schema id then), once."""
        schema, ctx = self.schema, self.schema_context
        value = schema.encoder(ctx, "value") if schema.encoder is not None else None
        if value is None:
            encode = self.encode

            def value(p: Any) -> bytes | None:
                return encode(ctx, (p,))[0]
        key = schema.encoder(ctx, "key") if schema.encoder is not None and self.needs_key \
            else None
        if key is None:
            encode_key = self.encode_key

            def key(k: Any) -> bytes | None:
                return encode_key(ctx, (k,))[0]
        self._encoders = (value, key)
        return self._encoders

    def _resolve_sender(self) -> Callable[[Message], None] | Literal[False]:
        """The configured backend's one-message sender when its default is asynchronous
        (``False`` when there is none). Called only without the test-mode override."""
        default = self._default
        if default is None:
            default = self._default = self._backend(None, False)
        backend, do_sync = default
        sender = (backend.sender(self.context) if backend.sender is not None and not do_sync
                  else None)
        self._sender = False if sender is None else sender
        return self._sender

    def publish_many(self, payloads: Sequence[Any], keys: Sequence[Any] | None,
                     headers: Headers | Mapping[str, Any] | None,
                     partition_keys: Sequence[Any] | None,
                     message_headers: Sequence[Headers | Mapping[str, Any] | None] | None,
                     sync: bool | None, force_send: bool) -> list[Message]:
        """``publish_list``: :meth:`build`, log the messages (``payload_log``),
        :meth:`send`."""
        if self.disabled:
            return []
        messages = self.build(payloads, keys, headers, partition_keys, message_headers)
        if self.special:
            self._report(messages)
        self.send(messages, sync, force_send)
        return messages

    def _report(self, messages: list[Message]) -> None:
        """What a call's encoded messages are reported to: ``payload_log``, the
        ``deimos.encode_message`` subscribers."""
        if self.payload_log is not None:
            self._log_payloads(messages)
        if self.on_encode is not None:
            self.on_encode({"producer": self.producer, "topic": self.topic,
                            "payloads": [m.payload for m in messages], "messages": messages})

    def _log_payloads(self, messages: list[Message]) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        mode = self.payload_log
        if mode == "count":
            log.debug("%s: publishing %d message(s) to %s", self.name, len(messages),
                      self.topic)
        elif mode == "keys":
            log.debug("%s: publishing to %s: keys %r", self.name, self.topic,
                      [m.key for m in messages])
        elif mode == "headers":
            log.debug("%s: publishing to %s: keys %r headers %r", self.name, self.topic,
                      [m.key for m in messages], [m.headers for m in messages])
        else:
            log.debug("%s: publishing to %s: %r", self.name, self.topic,
                      [(m.key, m.payload) for m in messages])

    def build(
        self,
        payloads: Sequence[Any],
        keys: Sequence[Any] | None,
        headers: Headers | Mapping[str, Any] | None,
        partition_keys: Sequence[Any] | None,
        message_headers: Sequence[Headers | Mapping[str, Any] | None] | None = None,
    ) -> list[Message]:
        if message_headers is not None and len(message_headers) != len(payloads):
            raise DeimosError(
                f"Producer {self.name}: message_headers has {len(message_headers)} entries "
                f"for {len(payloads)} payloads (one per message, None for none); nothing "
                "was sent.")
        out_keys: Sequence[Any]
        out_payloads: Sequence[Any] | None = None
        keyed = ((keys is None or len(keys) == len(payloads))
                 and not (self.needs_key and (keys is None or any(map(is_, keys, repeat(None))))))
        if keyed and self.coerce is None and _TEXT.issuperset(map(type, payloads)):
            # text payloads with their keys: nothing per message to prepare (measured: the
            # per-message call was a third of publish_list's own CPU)
            out_payloads = payloads
        elif keyed and not (self.fill_message_id or self.fill_timestamp):
            out_payloads = self._coerce_dicts(payloads)
        if out_payloads is None and keyed and payloads and type(payloads[0]) is not dict:
            native = self._native if self._native is not None else self._native_types()
            if native and native.issuperset(map(type, payloads)):
                out_payloads = payloads  # what the schema takes as it is, keys given
        if out_payloads is not None:
            out_keys = keys if keys is not None else [None] * len(payloads)
        else:
            prepare = self._prepare
            prepared_payloads: list[Any] = []
            prepared_keys: list[Any] = []
            for i, payload in enumerate(payloads):
                payload, key = prepare(payload, keys[i] if keys is not None else None, i)
                prepared_payloads.append(payload)
                prepared_keys.append(key)
            out_payloads, out_keys = prepared_payloads, prepared_keys
        encoded = self.schema.encode(self.schema_context, out_payloads)
        encoded_keys = self._encode_keys(out_keys)
        base_headers = _norm_headers(headers)
        topic = self.topic
        if partition_keys is None and self.partition_key_fn is None and message_headers is None:
            header_lists = (map(list, repeat(base_headers, len(out_payloads))) if base_headers
                            else repeat(None))
            return list(map(Message, repeat(topic), out_payloads, out_keys, header_lists,
                            repeat(None), encoded_keys, encoded))
        messages = []
        for i, payload in enumerate(out_payloads):
            pkey = self._partition_key(
                payload, partition_keys[i] if partition_keys is not None else None)
            own = list(base_headers) if base_headers else None
            if message_headers is not None and message_headers[i]:
                own = (own or []) + (_norm_headers(message_headers[i]) or [])
            messages.append(Message(topic, payload, out_keys[i], own,
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
        except Exception as exc:
            _count_failure(self.telemetry, self.tags, exc, len(chunk))
            raise
        if self.telemetry.metrics_enabled:
            self.telemetry.increment("publish", len(chunk), self.tags)

    async def _aexecute(self, backend: Any, chunk: list[Message], sync: bool) -> None:
        try:
            if backend.execute_async is not None:
                await backend.execute_async(self.context, chunk, sync)
            else:
                await asyncio.to_thread(backend.execute, self.context, chunk, sync)
        except Exception as exc:
            _count_failure(self.telemetry, self.tags, exc, len(chunk))
            raise
        if self.telemetry.metrics_enabled:
            self.telemetry.increment("publish", len(chunk), self.tags)

    async def apublish_one(self, payload: Any, key: Any,
                           headers: Headers | Mapping[str, Any] | None, partition_key: Any,
                           sync: bool | None, force_send: bool) -> list[Message]:
        """``apublish``: :meth:`publish_one` awaiting the backend."""
        if self.special:  # disabled, payload_log, events: the list path has them
            return await self.apublish_many(
                [payload], None if key is None else [key], headers,
                None if partition_key is None else [partition_key], None, sync, force_send)
        messages = self._one(payload, key, headers, partition_key)
        await self.asend(messages, sync, force_send)
        return messages

    async def apublish_many(self, payloads: Sequence[Any], keys: Sequence[Any] | None,
                            headers: Headers | Mapping[str, Any] | None,
                            partition_keys: Sequence[Any] | None,
                            message_headers: Sequence[Headers | Mapping[str, Any] | None] | None,
                            sync: bool | None, force_send: bool) -> list[Message]:
        """``apublish_list``: :meth:`publish_many` awaiting the backend."""
        if self.disabled:
            return []
        messages = self.build(payloads, keys, headers, partition_keys, message_headers)
        if self.special:
            self._report(messages)
        await self.asend(messages, sync, force_send)
        return messages


#: payload types publish_list hands to the encoder without preparing them one by one
_TEXT = frozenset({str, bytes})


def _count_failure(telemetry: Any, tags: Any, exc: BaseException, n: int) -> None:
    """The metrics of a send of ``n`` messages that raised: ``publish_error`` for the ones
    that failed, unless the backend counted them itself (the asynchronous one reports a
    refused message as it reports a failed delivery), and ``publish`` for the ones the
    backend took nonetheless (one refusal in a list of 500 does not fail the other 499)."""
    failed, counted = n, False
    if isinstance(exc, PublishError):
        failed = n if exc.failed is None else min(n, exc.failed)
        counted = exc.reported
    if not counted:
        telemetry.increment("publish_error", failed, tags)
    if failed < n and telemetry.metrics_enabled:
        telemetry.increment("publish", n - failed, tags)


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
                             "max_batch_size", "partition_key", "delivery_failed", "cluster",
                             "kafka_config", "disabled", "payload_log",
                             *OwnSchemaSettings.model_fields})


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
#: producer class -> (the runtime, its pipeline's ``publish_one``): ``publish()``'s one
#: lookup, filled after a publish while no :func:`disable_producers` block is open, emptied
#: when one opens and whenever the class's pipeline is dropped
_publishers: dict[type, tuple[Runtime, Callable[..., list[Message]]]] = {}
#: (producer class, topic) -> the same, for a per-call ``topic=``
_topic_override_pipelines: dict[tuple[type, str], tuple[Runtime, Pipeline]] = {}


def _forget_pipelines(cls: type) -> None:
    todo = [cls]
    while todo:
        c = todo.pop()
        _pipelines.pop(c, None)
        _publishers.pop(c, None)
        for key in [k for k in _topic_override_pipelines if k[0] is c]:
            del _topic_override_pipelines[key]
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
    #: the cluster to publish to: a name under ``kafka.clusters`` (None: the ``kafka``
    #: section)
    cluster: ClassVar[str | None] = None
    #: librdkafka producer properties of this producer over ``producers.config`` (Ruby's
    #: per-topic ``kafka(...)``); producers with the same properties share a producer
    kafka_config: ClassVar[Mapping[str, Any] | None] = None
    #: this producer's own schema backend and registry (None: the ``schema`` section's)
    schema_backend: ClassVar[str | None] = None
    registry_url: ClassVar[str | None] = None
    registry_user: ClassVar[str | None] = None
    registry_password: ClassVar[str | None] = None
    #: this producer sends nothing (Ruby's per-topic ``disabled``); resolved with the
    #: pipeline, so assigning it takes effect on the next publish
    disabled: ClassVar[bool] = False
    #: log its messages at DEBUG: ``full``, ``keys``, ``count`` or ``headers`` (default:
    #: ``producers.payload_log``, unset: nothing)
    payload_log: ClassVar[str | None] = None

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
        pipeline = cls._build_pipeline(runtime, cls.topic)
        _pipelines[cls] = (runtime, pipeline)
        return pipeline

    @classmethod
    def _pipeline_for(cls, topic: str) -> Pipeline:
        """The pipeline of a per-call ``topic=``: this class's settings on another topic
        (with ``producers.topic_prefix`` as for the class's own), built once per topic."""
        if topic == cls.topic:
            return cls._pipeline()
        entry = _topic_override_pipelines.get((cls, topic))
        runtime = get_runtime()
        if entry is not None and entry[0] is runtime:
            return entry[1]
        pipeline = cls._build_pipeline(runtime, topic)
        _topic_override_pipelines[(cls, topic)] = (runtime, pipeline)
        return pipeline

    @classmethod
    def _build_pipeline(cls, runtime: Runtime, topic: str) -> Pipeline:
        overridden = cls.partition_key.__func__ is not Producer.partition_key.__func__  # type: ignore[attr-defined]
        on_error = cls.delivery_failed.__func__ is not Producer.delivery_failed.__func__  # type: ignore[attr-defined]
        return Pipeline(
            runtime,
            name=cls.__name__,
            topic=topic,
            schema=cls.schema,
            namespace=cls.namespace,
            key_config=KeyConfig.model_validate(cls.key_config),
            backend=cls.backend,
            max_batch_size=cls.max_batch_size,
            partition_key_fn=cls.partition_key if overridden else None,
            on_error=cls.delivery_failed if on_error else None,
            cluster=cls.cluster,
            kafka_config=cls.kafka_config,
            own=cls._own_schema_settings(),
            disabled=cls.disabled,
            payload_log=cls.payload_log,
            producer=cls,
        )

    @classmethod
    def _own_schema_settings(cls) -> OwnSchemaSettings | None:
        data = {name: getattr(cls, name) for name in OwnSchemaSettings.model_fields
                if getattr(cls, name, None) is not None}
        if not data:
            return None
        try:
            return OwnSchemaSettings.model_validate(data)
        except ValidationError as exc:
            raise format_errors(exc, {}, prefix=f"producer {cls.__name__}") from None

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
        topic: str | None = None,
    ) -> list[Message]:
        """Publish one message (``payload=None`` with a ``key`` is a tombstone);
        ``topic``: to this topic instead of the class's (same schema and settings)."""
        fast = _publishers.get(cls)
        if fast is not None and fast[0] is _runtime_mod._runtime and topic is None:
            return fast[1](payload, key, headers, partition_key, sync, force_send)
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        if topic is not None:
            return cls._pipeline_for(topic).publish_one(payload, key, headers, partition_key,
                                                        sync, force_send)
        pipeline = cls._pipeline()
        sent = pipeline.publish_one(payload, key, headers, partition_key, sync, force_send)
        with _disabled_lock:  # never while a disable_producers block is open
            entry = _pipelines.get(cls)
            if not (_disabled_all or _disabled_classes) and entry is not None \
                    and entry[1] is pipeline:  # not dropped meanwhile (P.topic = ...)
                _publishers[cls] = (pipeline.runtime, pipeline.publish_one)
        return sent

    @classmethod
    def publish_list(
        cls,
        payloads: Iterable[Any],
        *,
        keys: Sequence[Any] | None = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_keys: Sequence[Any] | None = None,
        message_headers: Sequence[Headers | Mapping[str, Any] | None] | None = None,
        sync: bool | None = None,
        force_send: bool = False,
        topic: str | None = None,
    ) -> list[Message]:
        """Publish many messages; returns the messages handed to the backend.

        ``headers`` go on every message; ``message_headers`` has one entry per payload
        (headers or None), added after them. ``topic``: to this topic instead of the
        class's. Everything is validated and encoded before the first message is sent.
        """
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not payloads:
            return []
        pipeline = cls._pipeline() if topic is None else cls._pipeline_for(topic)
        return pipeline.publish_many(payloads, keys, headers, partition_keys, message_headers,
                                     sync, force_send)

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
        topic: str | None = None,
    ) -> list[Message]:
        """:meth:`publish` from a coroutine, never blocking the event loop: returns once the
        backend accepted the message (an asynchronous backend: queued) or, with
        ``sync=True`` (or a synchronous backend), once it was delivered; a delivery error
        raises here, in the awaiting coroutine."""
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        if topic is None:
            entry = _pipelines.get(cls)
            pipeline = (entry[1] if entry is not None and entry[0] is _runtime_mod._runtime
                        else cls._pipeline())
        else:
            pipeline = cls._pipeline_for(topic)
        sent = pipeline.apublish_now(payload, key, headers, partition_key, sync, force_send)
        if type(sent) is list:  # accepted at once: nothing to await
            return sent
        return await sent  # type: ignore[misc]

    @classmethod
    async def apublish_list(
        cls,
        payloads: Iterable[Any],
        *,
        keys: Sequence[Any] | None = None,
        headers: Headers | Mapping[str, Any] | None = None,
        partition_keys: Sequence[Any] | None = None,
        message_headers: Sequence[Headers | Mapping[str, Any] | None] | None = None,
        sync: bool | None = None,
        force_send: bool = False,
        topic: str | None = None,
    ) -> list[Message]:
        """:meth:`publish_list` from a coroutine, as :meth:`apublish` (one wait for the
        whole list when delivery is awaited)."""
        if _disabled_all or (_disabled_classes and _class_disabled(cls)):
            return []
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not payloads:
            return []
        pipeline = cls._pipeline() if topic is None else cls._pipeline_for(topic)
        return await pipeline.apublish_many(payloads, keys, headers, partition_keys,
                                            message_headers, sync, force_send)


#: ``deimos.produce`` pipelines per topic, for the runtime they were built for
_topic_pipelines: dict[str, Pipeline] = {}


def _forget_all_pipelines() -> None:
    """Event subscribers changed: pipelines resolve their emitters again when rebuilt."""
    _pipelines.clear()
    _publishers.clear()
    _topic_override_pipelines.clear()
    _topic_pipelines.clear()


_events.on_change(_forget_all_pipelines)


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
            max_batch_size=None, cluster=ts.cluster, kafka_config=ts.config, own=ts,
            where=f"producers.topics.{runtime.settings.producers.topics.index(ts)}",
        )
        if any(p.runtime is not runtime for p in _topic_pipelines.values()):
            _topic_pipelines.clear()  # built for earlier settings
        _topic_pipelines[topic] = pipeline
    payloads = messages if isinstance(messages, list) else list(messages)
    return pipeline.publish_many(payloads, keys, headers, None, None, sync, force_send)


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


#: ``producers.topics`` topic -> (the settings it was made for, its producer class)
_topic_classes: dict[str, tuple[Any, type[Producer]]] = {}


def producer_for(topic: str) -> type[Producer]:
    """The producer class that publishes to ``topic`` (Ruby Deimos's ``producer_for``), with
    its cluster, schema and librdkafka properties: for a topic configured under
    ``producers.topics``, a class made from that entry; else the one imported
    :class:`Producer` subclass whose ``topic`` it is. ``deimos.producer_for("orders")
    .publish(payload)`` then needs no import of the class."""
    settings = get_settings()
    prefix = settings.producers.topic_prefix
    bare = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
    for i, ts in enumerate(settings.producers.topics):
        if ts.topic in (topic, bare):
            hit = _topic_classes.get(ts.topic)
            if hit is not None and hit[0] is settings:
                return hit[1]
            attrs: dict[str, Any] = {
                "topic": ts.topic, "schema": ts.schema_name, "namespace": ts.namespace,
                "key_config": ts.key_config, "backend": ts.backend, "cluster": ts.cluster,
                "kafka_config": dict(ts.config) or None,
                **{name: getattr(ts, name) for name in OwnSchemaSettings.model_fields},
                "__doc__": f"The producer of producers.topics.{i} ({ts.topic!r})."}
            made = type(f"TopicProducer_{i}", (Producer,), attrs)
            _topic_classes[ts.topic] = (settings, made)
            return made
    found: list[type[Producer]] = []
    todo: list[type[Producer]] = list(Producer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if (getattr(cls, "topic", None) in (topic, bare) and cls not in found
                and not any(cls is c for _, c in _topic_classes.values())):
            found.append(cls)
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in found))
        raise DeimosError(f"several producer classes publish to {topic!r} ({names}): "
                          "use the class itself")
    configured = ", ".join(t.topic for t in settings.producers.topics) or "none"
    raise DeimosError(
        f"no producer for topic {topic!r}: no imported Producer subclass has it as its topic "
        f"and producers.topics does not configure it (configured: {configured})")
