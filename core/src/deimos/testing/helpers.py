"""Test helpers: test mode, consuming without a broker and assertions on sent messages.

Test mode swaps the *parts that talk to the outside* and nothing else: every producer uses
the ``test`` backend (messages kept in memory) and every schema backend is replaced by the
stand-in its plugin names (``deimos_schema_mock``: ``avro_schema_registry`` ->
``avro_validation``), which still validates against the real schemas. Producers, consumers,
coercion, keys and the error policy run their real code, so a test catches what production
would reject.

Test mode is tied to the settings rather than to one runtime object: when a test calls
``deimos.configure(...)`` the new runtime is put in test mode too, and leaving test mode puts
back the settings that were current before, so nothing leaks into the next test (a recurring
Ruby Deimos complaint).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import pprint
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Message as KafkaMessage

from deimos import config as _config
from deimos.backends import test as _test_backend
from deimos.config import ConsumerSettings
from deimos.consumer import MessageProcessor, _Base, resolve_settings
from deimos.consumer.offline import configured_entry, drive
from deimos.errors import SchemaValidationError
from deimos.message import Message
from deimos.runtime import Runtime, get_runtime
from deimos.schema.base import SchemaContext

__all__ = [
    "TestModeError",
    "aconsume_batch",
    "aconsume_message",
    "assert_not_sent",
    "assert_sent",
    "assert_sent_including",
    "clear_sent_messages",
    "consume_batch",
    "consume_message",
    "sent_messages",
    "test_mode",
]

#: the group id consumers get in tests when they configure none
TEST_GROUP = "deimos-test"

_lock = threading.Lock()
_depth = 0


class TestModeError(AssertionError):
    """A test helper found something wrong; an ``AssertionError`` so pytest reports it as a
    test failure (with the message) rather than as an error in the test's setup."""

    __test__ = False


# ---------------------------------------------------------------------------------------------
# test mode
# ---------------------------------------------------------------------------------------------


def _apply(runtime: Runtime) -> None:
    runtime.backend_override = "test"

    def stand_in(name: str, context: SchemaContext) -> str:
        return runtime.mock_name(name, context)

    runtime.schema_override = stand_in


def _on_settings_change() -> None:
    """Put the runtime of newly configured settings in test mode while test mode is on.

    Runs after the runtime module dropped its runtime; building the new one here (rather than
    lazily) is what lets us set its overrides before any producer sees it."""
    if _depth and _config._current is not None:
        _apply(get_runtime())


_config.on_change(_on_settings_change)


def _fresh_runtime(loaded: _config.LoadedSettings | None) -> None:
    """Install ``loaded`` again: producers rebuild their pipelines for the new runtime, so
    none keeps a schema backend resolved outside test mode."""
    _config._install(loaded)


@contextmanager
def test_mode() -> Iterator[None]:
    """Within the block: producer backend ``test``, each schema backend replaced by its
    stand-in, sent messages cleared. The settings current before are restored at the end,
    even when the block called ``deimos.configure``."""
    global _depth
    before = _config._current
    with _lock:
        _depth += 1
    try:
        _fresh_runtime(_config.current())
        _test_backend.clear()
        yield
    finally:
        with _lock:
            _depth -= 1
        _test_backend.clear()
        _fresh_runtime(before)


test_mode.__test__ = False  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# consuming without a broker
# ---------------------------------------------------------------------------------------------


def _consumer_for(consumer: type[_Base] | _Base | str, runtime: Runtime,
                  overrides: Mapping[str, Any]) -> tuple[_Base, ConsumerSettings]:
    """The handler instance and its resolved settings: a class, an instance, or the topic of
    a consumer configured under ``[[consumers]]``."""
    if isinstance(consumer, str):
        from deimos.consumer import import_class

        configured: set[str] = set()
        for entry in runtime.settings.consumers:
            if not entry.class_path:
                continue
            cls = import_class(entry.class_path)
            cs = _settings(cls, entry, overrides)
            if consumer in cs.topics:
                return cls(), cs
            configured.update(cs.topics)
        raise TestModeError(
            f"no consumer is configured for topic {consumer!r} (configured topics: "
            f"{', '.join(sorted(configured)) or 'none'}); pass the consumer class instead")
    handler = consumer() if isinstance(consumer, type) else consumer
    cls = type(handler)
    return handler, _settings(cls, configured_entry(runtime, cls), overrides)


def _settings(cls: type, entry: ConsumerSettings | None, overrides: Mapping[str, Any]
              ) -> ConsumerSettings:
    extra = dict(overrides)
    has_group = getattr(cls, "group_id", None) or (entry is not None and entry.group_id)
    if not has_group and "group_id" not in extra:
        extra["group_id"] = TEST_GROUP
    return resolve_settings(cls, entry, **extra)


def _fail_invalid(exc: SchemaValidationError, what: str) -> TestModeError:
    lines = "\n".join(f"  {path or '<root>'}: {msg}" for path, msg in exc.errors)
    where = f" for topic {exc.topic!r}" if exc.topic else ""
    return TestModeError(f"the {what} given to the test helper is not valid{where}:\n{lines}")


def _to_plain(payload: Any) -> Any:
    to_dict = getattr(payload, "to_dict", None)
    return to_dict() if to_dict is not None and not isinstance(payload, Mapping) else payload


def _norm_headers(headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None
                  ) -> list[tuple[str, bytes]] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def _kafka_messages(processor: MessageProcessor, topic: str, payloads: Sequence[Any],
                    keys: Sequence[Any], headers: Any, partition: int, offset: int,
                    timestamp: int | None) -> list[Any]:
    """Encode through the consumer's schema backend into real confluent-kafka messages, as
    a producer would have written them: the consumer then decodes them on its real path."""
    sb = processor.schema_for(topic)
    ctx = sb.context
    plain = [_to_plain(p) for p in payloads]
    if sb.validate is not None:
        for p in plain:
            if p is not None:
                try:
                    sb.validate(ctx, p)
                except SchemaValidationError as exc:
                    raise _fail_invalid(exc, "payload") from None
    try:
        values = sb.encode(ctx, plain)
    except SchemaValidationError as exc:
        raise _fail_invalid(exc, "payload") from None
    raw_keys: list[bytes | None]
    if processor.key_config.kind != "none" and sb.encode_key is not None:
        try:
            raw_keys = sb.encode_key(ctx, list(keys))
        except SchemaValidationError as exc:
            raise _fail_invalid(exc, "key") from None
    else:
        raw_keys = [None if k is None else k if isinstance(k, bytes) else str(k).encode()
                    for k in keys]
    hdrs = _norm_headers(headers)
    ts = (1, timestamp) if timestamp is not None else (0, -1)
    kafka_headers: Any = hdrs
    return [KafkaMessage(topic=topic, partition=partition, offset=offset + i, key=raw_keys[i],
                         value=values[i], headers=kafka_headers, timestamp=ts)
            for i in range(len(plain))]


def _dead_letter_to_test_backend(processor: MessageProcessor) -> None:
    """Dead-lettered messages go to the ``test`` backend (with deimos's error headers), where
    ``sent_messages``/``assert_sent`` see them, instead of to the broker."""

    def send(messages: list[Message]) -> None:
        with _test_backend._lock:
            _test_backend.sent_messages.extend(messages)

    processor.dead_letters.sender = send


def _prepare(consumer: type[_Base] | _Base | str, topic: str | None,
             settings: Mapping[str, Any], event_loop: Any = None
             ) -> tuple[MessageProcessor, str]:
    runtime = get_runtime()
    if runtime.backend_override is None:
        raise TestModeError("consume_message/consume_batch need test mode: use the "
                            "deimos_test_mode fixture or `with deimos.testing.test_mode():`")
    handler, cs = _consumer_for(consumer, runtime, settings)
    if topic is None:
        if isinstance(consumer, str):
            topic = consumer
        elif cs.topics:
            topic = cs.topics[0]
        else:
            raise TestModeError(f"consumer {cs.name} subscribes by pattern: pass topic=...")
    if handler._is_async and event_loop is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop running here: the processor runs the coroutines on one of its own
        else:
            raise TestModeError(
                f"{type(handler).__name__} is an asyncio consumer and this test runs in an "
                "event loop: use `await deimos.testing.aconsume_message(...)` (or "
                "aconsume_batch), which awaits its coroutines on this loop")
    processor = MessageProcessor(handler, cs, runtime, event_loop)
    _dead_letter_to_test_backend(processor)
    return processor, runtime.settings.producers.topic_prefix + topic


def consume_message(
    consumer: type[_Base] | _Base | str,
    payload: Any,
    *,
    key: Any = None,
    headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    timestamp: int | None = None,
    **settings: Any,
) -> _Base:
    """Hand one message to a consumer as the broker loop would, without a broker.

    The payload (a dict or a schema class instance) is validated and encoded with the
    consumer's schema backend (its test stand-in) and the key with its key config, then
    decoded and handled by :class:`~deimos.consumer.MessageProcessor`, the code the broker
    loop runs: retries, ``on_error`` (``dead_letter`` goes to the ``test`` backend) and
    ``fatal_error`` apply. An invalid payload fails the test with every bad field's path.

    :param consumer: a ``Consumer``/``BatchConsumer`` class or instance, or a topic of a
        consumer configured under ``[[consumers]]``.
    :param settings: consumer settings for this call (``on_error="skip"`` ...).
    :returns: the handler instance, for assertions on what it kept.
    """
    processor, t = _prepare(consumer, topic, settings)
    try:
        drive(processor, _kafka_messages(processor, t, [payload], [key], headers, partition,
                                         offset, timestamp), wait=False)
    finally:
        processor.close()
    return processor.handler


def consume_batch(
    consumer: type[_Base] | _Base | str,
    payloads: Sequence[Any],
    *,
    keys: Sequence[Any] | None = None,
    headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    timestamp: int | None = None,
    **settings: Any,
) -> _Base:
    """Hand a batch of one topic-partition to a consumer (a ``BatchConsumer`` gets it in one
    ``consume_batch`` call, a ``Consumer`` message by message), as :func:`consume_message`."""
    if keys is not None and len(keys) != len(payloads):
        raise TestModeError(f"{len(payloads)} payloads but {len(keys)} keys")
    processor, t = _prepare(consumer, topic, settings)
    try:
        msgs = _kafka_messages(processor, t, list(payloads),
                               list(keys or [None] * len(payloads)), headers, partition,
                               offset, timestamp)
        if msgs:
            drive(processor, msgs, wait=False)
    finally:
        processor.close()
    return processor.handler


async def aconsume_message(
    consumer: type[_Base] | _Base | str,
    payload: Any,
    *,
    key: Any = None,
    headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    timestamp: int | None = None,
    **settings: Any,
) -> _Base:
    """:func:`consume_message` from a coroutine (a pytest-asyncio or anyio test on asyncio):
    an asyncio consumer's coroutines run on the calling event loop, as they do in an
    application that runs deimos in its loop, so they can use the test's clients and
    fixtures. The rest of the engine runs in a worker thread meanwhile, as the consumer
    thread would."""
    return await aconsume_batch(consumer, [payload], keys=[key], headers=headers, topic=topic,
                                partition=partition, offset=offset, timestamp=timestamp,
                                **settings)


async def aconsume_batch(
    consumer: type[_Base] | _Base | str,
    payloads: Sequence[Any],
    *,
    keys: Sequence[Any] | None = None,
    headers: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    topic: str | None = None,
    partition: int = 0,
    offset: int = 0,
    timestamp: int | None = None,
    **settings: Any,
) -> _Base:
    """:func:`consume_batch` from a coroutine, as :func:`aconsume_message`."""
    if keys is not None and len(keys) != len(payloads):
        raise TestModeError(f"{len(payloads)} payloads but {len(keys)} keys")
    processor, t = _prepare(consumer, topic, settings, asyncio.get_running_loop())
    try:
        msgs = _kafka_messages(processor, t, list(payloads),
                               list(keys or [None] * len(payloads)), headers, partition,
                               offset, timestamp)
        if msgs:
            await asyncio.to_thread(drive, processor, msgs, wait=False)
    finally:
        processor.close()
    return processor.handler


# ---------------------------------------------------------------------------------------------
# sent messages and assertions
# ---------------------------------------------------------------------------------------------


def sent_messages(topic: str | None = None) -> list[Message]:
    """Messages the ``test`` backend received in this test (of ``topic`` when given)."""
    msgs = _test_backend.messages()
    if topic is None:
        return msgs
    names = _topic_names(topic)
    return [m for m in msgs if m.topic in names]


def clear_sent_messages() -> None:
    _test_backend.clear()
    _wire.clear()


def _topic_names(topic: str) -> set[str]:
    prefix = get_runtime().settings.producers.topic_prefix
    return {topic, prefix + topic}


_ANY: Any = object()


def _matches(expected: Any, actual: Any, subset: bool) -> bool:
    if subset and isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return all(k in actual and _matches(v, actual[k], True) for k, v in expected.items())
    return bool(expected == actual)


def _header_dict(headers: Any) -> dict[str, bytes]:
    return dict(_norm_headers(headers) or [])


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def wire_payload(m: Message) -> Any:
    """The payload of ``m`` as a consumer decodes it: the bytes the producer encoded, decoded
    with its schema (Avro defaults filled in, enums and unions as they arrive), or
    ``m.payload`` when the message cannot be decoded (a producer without a schema backend)."""
    cached = _wire.get(id(m))
    if cached is not None and cached[0] is m:
        return cached[1]
    decoded = m.payload
    sb = _test_backend.schema_of(m)
    if sb is not None and m.encoded_payload is not None:
        try:
            decoded = sb.decode(sb.context, [m.encoded_payload])[0]
        except Exception:
            decoded = m.payload
    if len(_wire) > 10_000:
        _wire.clear()
    _wire[id(m)] = (m, decoded)
    return decoded


#: ``id(message) -> (message, wire_payload)`` (the message kept: ids are reused)
_wire: dict[int, tuple[Message, Any]] = {}


def _view(m: Message) -> dict[str, Any]:
    """What an assertion compares and a failure shows of one message: the payload as a
    consumer would decode it."""
    return {"payload": wire_payload(m), "key": m.key,
            "partition_key": m.partition_key, "headers": _header_dict(m.headers)}


def _check(m: Message, payload: Any, key: Any, partition_key: Any, headers: Any,
           subset: bool) -> list[str]:
    """The names of the parts of ``m`` that differ from what is expected."""
    wrong = []
    if payload is not _ANY and not _matches(_to_plain(payload), m.payload, subset) and \
            not _matches(_to_plain(payload), wire_payload(m), subset):
        wrong.append("payload")
    if key is not _ANY and not _matches(key, m.key, subset):
        wrong.append("key")
    if partition_key is not _ANY and _as_bytes(partition_key) != m.partition_key:
        wrong.append("partition_key")
    if headers is not _ANY:
        have = _header_dict(m.headers)
        if any(have.get(k) != v for k, v in _header_dict(headers).items()):
            wrong.append("headers")
    return wrong


def _expected_view(payload: Any, key: Any, partition_key: Any, headers: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if payload is not _ANY:
        out["payload"] = _to_plain(payload)
    if key is not _ANY:
        out["key"] = key
    if partition_key is not _ANY:
        out["partition_key"] = _as_bytes(partition_key)
    if headers is not _ANY:
        out["headers"] = _header_dict(headers)
    return out


def _score(wrong: list[str], m: Message, payload: Any) -> tuple[int, int]:
    """Fewer differing parts first; then payloads sharing more top-level values."""
    shared = 0
    expected = _to_plain(payload)
    actual = wire_payload(m)
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        shared = sum(1 for k, v in expected.items() if actual.get(k) == v)
    return (len(wrong), -shared)


def _lines(value: Any) -> list[str]:
    """One line per leaf, always laid out the same, so a diff shows only what differs."""
    return json.dumps(value, indent=2, sort_keys=True, default=repr).splitlines()


def _diff(expected: dict[str, Any], actual: Message) -> str:
    shown = {k: v for k, v in _view(actual).items() if k in expected}
    a, b = _lines(expected), _lines(shown)
    return "\n".join(difflib.unified_diff(a, b, "expected", "closest sent", lineterm=""))


def _assert(topic: str, payload: Any, key: Any, partition_key: Any, headers: Any,
            subset: bool) -> Message:
    candidates = sent_messages(topic)
    scored = []
    for m in candidates:
        wrong = _check(m, payload, key, partition_key, headers, subset)
        if not wrong:
            return m
        scored.append((_score(wrong, m, payload), wrong, m))
    expected = _expected_view(payload, key, partition_key, headers)
    how = "including" if subset else "equal to"
    if not scored:
        others = sorted({m.topic for m in _test_backend.messages()})
        raise TestModeError(
            f"no message was sent to {topic!r} (messages were sent to: "
            f"{', '.join(others) or 'no topic'}); expected one {how}:\n"
            f"{pprint.pformat(expected, width=88)}")
    scored.sort(key=lambda s: s[0])
    _, wrong, closest = scored[0]
    raise TestModeError(
        f"none of the {len(scored)} message(s) sent to {topic!r} is {how} the expected one; "
        f"the closest differs in {', '.join(wrong)}:\n{_diff(expected, closest)}")


def assert_sent(topic: str, payload: Any = _ANY, *, key: Any = _ANY,
                partition_key: Any = _ANY, headers: Any = _ANY) -> Message:
    """Fail unless a message was sent to ``topic`` with exactly this payload (after the
    producer filled and coerced it) and, when given, this key, partition key and headers
    (every header given must be there; others may be too). Returns the message.

    On failure the message shows a diff against the closest message sent to the topic."""
    return _assert(topic, payload, key, partition_key, headers, subset=False)


def assert_sent_including(topic: str, payload: Any = _ANY, *, key: Any = _ANY,
                          partition_key: Any = _ANY, headers: Any = _ANY) -> Message:
    """As :func:`assert_sent`, but dict payloads (and keys) only need to *include* the given
    fields, at any depth: handy when the producer fills ``message_id``/``timestamp``."""
    return _assert(topic, payload, key, partition_key, headers, subset=True)


def assert_not_sent(topic: str) -> None:
    """Fail if anything was sent to ``topic``."""
    sent = sent_messages(topic)
    if sent:
        raise TestModeError(f"{len(sent)} message(s) were sent to {topic!r}; the first: "
                            f"{pprint.pformat(_view(sent[0]), width=88)}")

