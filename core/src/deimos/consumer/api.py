"""The handler API: what a consumer class overrides and what its handler is given.

``Consumer.consume(payload, metadata)`` handles one message, ``BatchConsumer.consume_batch(
payloads, metadata)`` a batch of one topic-partition; ``BatchError(index, cause)`` says which
message of a batch failed. Metadata is read from the underlying Kafka message on first use, so
a handler pays only for what it reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

from confluent_kafka import Message as KafkaMessage

from deimos.errors import DeimosError

# unbound C methods: ``list(map(_value, msgs))`` costs far less than a Python loop
_value: Any = KafkaMessage.value
_key: Any = KafkaMessage.key
_offset: Any = KafkaMessage.offset
_partition: Any = KafkaMessage.partition
_error: Any = KafkaMessage.error
_topic: Any = KafkaMessage.topic
_raw_headers: Any = KafkaMessage.headers


def _ts(m: Any) -> int | None:
    t = m.timestamp()
    return t[1] if t and t[0] else None


def _headers(m: Any) -> dict[str, bytes]:
    h = m.headers()
    return dict(h) if h else {}


_RAW: Any = object()  # "no decoded key: read the raw key on access"


class Metadata:
    """What a handler knows about one message besides its payload.

    Fields other than ``topic``/``partition`` are read from the underlying Kafka message on
    first access, so a handler pays only for the metadata it uses.
    """

    __slots__ = ("_k", "_m", "partition", "topic")

    def __init__(self, message: Any, key: Any, topic: str, partition: int) -> None:
        self._m = message
        self._k = key
        self.topic = topic
        self.partition = partition

    @property
    def key(self) -> Any:
        """The decoded key (raw bytes when the consumer has no key config)."""
        return self._m.key() if self._k is _RAW else self._k

    @property
    def raw_key(self) -> bytes | None:
        return self._m.key()

    @property
    def offset(self) -> int:
        return self._m.offset()

    @property
    def timestamp(self) -> int | None:
        """Milliseconds since the epoch, or None when the message has none."""
        return _ts(self._m)

    @property
    def headers(self) -> dict[str, bytes]:
        return _headers(self._m)

    @property
    def message(self) -> Any:
        """The confluent-kafka message, for anything not exposed here."""
        return self._m

    def __repr__(self) -> str:
        return (f"Metadata(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, key={self.key!r})")


class BatchMetadata:
    """Per-message details of a batch of one topic-partition, as parallel lists.

    Lists are built from the Kafka messages on first access (a handler that only needs the
    payloads pays nothing for them).
    """

    __slots__ = ("_cache", "_keys", "_msgs", "partition", "topic")

    def __init__(self, messages: list[Any], keys: list[Any] | None, topic: str,
                 partition: int) -> None:
        self._msgs = messages
        self._keys = keys
        self._cache: dict[str, list[Any]] = {}
        self.topic = topic
        self.partition = partition

    def _list(self, name: str, fn: Any) -> list[Any]:
        got = self._cache.get(name)
        if got is None:
            got = self._cache[name] = list(map(fn, self._msgs))
        return got

    @property
    def keys(self) -> list[Any]:
        """Decoded keys (raw bytes when the consumer has no key config)."""
        return self._keys if self._keys is not None else self._list("keys", _key)

    @property
    def offsets(self) -> list[int]:
        return self._list("offsets", _offset)

    @property
    def timestamps(self) -> list[int | None]:
        return self._list("timestamps", _ts)

    @property
    def headers(self) -> list[dict[str, bytes]]:
        return self._list("headers", _headers)

    @property
    def messages(self) -> list[Any]:
        return self._msgs

    @property
    def batch_size(self) -> int:
        return len(self._msgs)

    def slice(self, start: int, stop: int | None = None) -> BatchMetadata:
        keys = None if self._keys is None else self._keys[start:stop]
        return BatchMetadata(self._msgs[start:stop], keys, self.topic, self.partition)


class BatchError(DeimosError):
    """Raise from ``consume_batch`` to say message ``index`` (of the batch) failed: the
    messages before it count as handled and their offsets are committed."""

    def __init__(self, index: int, cause: BaseException | str):
        self.index = index
        self.cause = cause
        super().__init__(f"message {index} of the batch failed: {cause}")


class _Base:
    #: consumer settings may be given as class attributes of the same names
    topic: ClassVar[str | None] = None
    topics: ClassVar[Sequence[str] | None] = None
    group_id: ClassVar[str | None] = None
    schema: ClassVar[str | None] = None
    namespace: ClassVar[str | None] = None
    key_config: ClassVar[Any] = None

    #: whether the handler methods are coroutine functions (the asyncio classes)
    _is_async: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("consume", "consume_batch"):
            fn = cls.__dict__.get(name)
            if fn is None:
                continue
            is_coro = inspect.iscoroutinefunction(fn)
            if cls._is_async and not is_coro:
                # called and awaited: a plain function's None cannot be awaited, and a
                # blocking one would stall every coroutine of the consumer's event loop
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__}.{name} is a plain 'def', but "
                    f"{_base_name(cls)} awaits it: write 'async def {name}', or subclass "
                    f"{_base_name(cls).replace('Async', '')} for a synchronous handler.")
            if not cls._is_async and (is_coro or inspect.isasyncgenfunction(fn)):
                # a coroutine function would be called and never awaited: every message
                # would count as handled while nothing ran (silent loss)
                raise TypeError(
                    f"{cls.__module__}.{cls.__qualname__}.{name} is 'async def', but "
                    f"{_base_name(cls)} calls it synchronously: the coroutine would "
                    "never be awaited and its messages would count as handled. Subclass "
                    f"deimos.Async{_base_name(cls)} for an 'async def' handler "
                    "(docs/asyncio.md), or use a plain 'def'.")
        fatal = cls.__dict__.get("fatal_error")
        if fatal is not None and inspect.iscoroutinefunction(fatal):
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__}.fatal_error is 'async def': it is a "
                "question asked synchronously about an error; make it a plain 'def'.")

    def fatal_error(self, exc: BaseException, payload: Any, metadata: Any) -> bool:
        """Return True when ``exc`` must stop the consumer whatever ``on_error`` says (no
        retries, no dead letter, no skip), as Ruby Deimos's ``fatal_error?`` re-raises: the
        runner restarts the consumer from the last committed offset."""
        return False


class Consumer(_Base):
    """Handle one message at a time: override :meth:`consume`."""

    def consume(self, payload: Any, metadata: Metadata) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement consume()")


class BatchConsumer(_Base):
    """Handle a batch of one topic-partition at a time: override :meth:`consume_batch`."""

    def consume_batch(self, payloads: list[Any], metadata: BatchMetadata) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement consume_batch()")


class AsyncConsumer(_Base):
    """Handle one message at a time in a coroutine: override ``async def consume``.

    Same settings, error policy and commit rules as :class:`Consumer`: an offset is stored
    only once its message's coroutine has finished successfully. With ``max_concurrency``
    above 1, up to that many messages of a partition's batch are awaited at once, messages
    with the same key one after another."""

    _is_async = True

    async def consume(self, payload: Any, metadata: Metadata) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement consume()")


class AsyncBatchConsumer(_Base):
    """Handle a batch of one topic-partition in a coroutine: override ``async def
    consume_batch`` (same rules as :class:`BatchConsumer`)."""

    _is_async = True

    async def consume_batch(self, payloads: list[Any], metadata: BatchMetadata) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement consume_batch()")


_BASES = ("Consumer", "BatchConsumer", "AsyncConsumer", "AsyncBatchConsumer")


def _base_name(cls: type) -> str:
    """The deimos handler class ``cls`` derives from (what an error message names)."""
    for c in cls.__mro__:
        if c.__name__ in _BASES and c.__module__ == __name__:
            return c.__name__
    return cls.__mro__[1].__name__
