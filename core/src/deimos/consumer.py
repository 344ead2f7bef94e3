"""Consumers: per-message and batch handlers, the error policy and the commit rules.

At-least-once, always: librdkafka commits only offsets deimos *stored*, and deimos stores an
offset only after the handler succeeded for every message up to it
(``enable.auto.offset.store=false``). On shutdown or partition revocation the stored offsets
are committed synchronously.

Error policy, per consumer: a failed message is retried ``retry.attempts`` times with
exponential backoff while its partition is paused (other partitions keep flowing); then
``on_error`` decides: ``raise`` (default: the runnable stops and restarts from the last
committed offset, nothing is lost), ``dead_letter`` (the original bytes, key and headers plus
error headers go to ``dead_letter_topic``) or ``skip`` (logged and counted). A message that
cannot be decoded skips the retries and goes straight to ``on_error``. A *transient* decode
failure (:class:`~deimos.errors.TransientError`: the schema registry is unreachable, times out
or answers 5xx/429) is not the message's fault: the partition is paused and the same messages
are retried with backoff until it passes, never counted against ``retry.attempts`` and never
dead-lettered or skipped.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from deimos.config import ConsumerSettings, KeyConfig, Settings
from deimos.errors import DecodeError, DeimosError, PublishError, TransientError
from deimos.message import Message
from deimos.runtime import Runtime, SchemaBackend, get_runtime

log = logging.getLogger("deimos.consumer")

ERROR_HEADERS = (
    "deimos-error-class",
    "deimos-error-message",
    "deimos-original-topic",
    "deimos-original-partition",
    "deimos-original-offset",
    "deimos-attempts",
)


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


class StopConsumer(Exception):
    """Raised by :meth:`MessageProcessor.process` when the consumer must stop (``on_error``
    ``raise`` or a fatal error): the first ``handled`` messages of the group succeeded and
    their offsets may be committed; ``error`` is what stopped it."""

    def __init__(self, handled: int, error: BaseException) -> None:
        self.handled = handled
        self.error = error
        super().__init__(str(error))


class _Base:
    #: consumer settings may be given as class attributes of the same names
    topic: ClassVar[str | None] = None
    topics: ClassVar[Sequence[str] | None] = None
    group_id: ClassVar[str | None] = None
    schema: ClassVar[str | None] = None
    namespace: ClassVar[str | None] = None
    key_config: ClassVar[Any] = None

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


def import_class(path: str) -> type:
    """``"package.module:Class"`` (or ``package.module.Class``) to the class."""
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DeimosError(f"cannot import consumer class {path!r}: {exc}") from exc


def resolve_settings(cls: type, entry: ConsumerSettings | None = None, **overrides: Any
                     ) -> ConsumerSettings:
    """Class attributes, overridden by the matching ``[[consumers]]`` entry, then by
    ``overrides``."""
    data: dict[str, Any] = {}
    fields = ConsumerSettings.model_fields
    for name, f in fields.items():
        attr = f.alias or name
        for candidate in (name, attr):
            if candidate in ("schema_name", "class_path"):
                continue
            value = getattr(cls, candidate, None)
            if value is not None and not callable(value):
                data[attr] = value
                break
    if getattr(cls, "schema", None):
        data["schema"] = cls.schema  # type: ignore[attr-defined]
    topic = getattr(cls, "topic", None)
    if topic and not data.get("topics"):
        data["topics"] = [topic]
    data["name"] = data.get("name") or cls.__name__
    if entry is not None:
        data.update(entry.model_dump(by_alias=True, exclude_unset=True))
    data.update(overrides)
    data.pop("class", None)
    data["topics"] = list(data.get("topics") or [])
    settings = ConsumerSettings.model_validate(data)
    if not settings.topics and not settings.topic_pattern:
        raise DeimosError(f"consumer {settings.name} has no topics")
    if not settings.group_id:
        raise DeimosError(f"consumer {settings.name} has no group_id")
    return settings


class _Retry:
    __slots__ = ("attempt", "offset", "resume_at")

    def __init__(self, offset: int, attempt: int, resume_at: float) -> None:
        self.offset, self.attempt, self.resume_at = offset, attempt, resume_at


class MessageProcessor:
    """Decoding, handler calls and the error policy for one consumer class; no I/O of its own
    except the dead-letter producer. Shared by the broker loop and the test helpers."""

    def __init__(self, handler: _Base, settings: ConsumerSettings, runtime: Runtime) -> None:
        self.handler = handler
        self.settings = settings
        self.runtime = runtime
        self.batch = isinstance(handler, BatchConsumer)
        self.telemetry = runtime.telemetry
        self._schemas: dict[str, SchemaBackend] = {}
        self._tagsets: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
        #: messages given up on by this processor (also counted in telemetry)
        self.dead_lettered = 0
        self.skipped = 0
        kc = settings.key_config
        self.key_config = kc if kc is not None else KeyConfig(kind="none")
        self.group = settings.group_id or ""
        #: sends one batch's dead letters and waits for them (the test helpers swap it)
        self.dead_letter_sender: Callable[[list[Message]], None] = self._send_dead_letters
        #: dead letters of the group being processed: (message, error, attempts)
        self._dead: list[tuple[Any, BaseException, int]] = []
        #: the schema class's ``from_dict`` when ``use_schema_classes`` is on, else None
        self.from_dict: Callable[[Any], Any] | None = None
        use = settings.use_schema_classes
        if use or (use is None and runtime.settings.schema.use_schema_classes):
            from deimos.schema_classes import from_dict_for

            self.from_dict = from_dict_for(handler, settings.schema_name, settings.namespace,
                                           runtime.settings.schema.generated_class_path)

    _STATUSES = ("received", "success", "error", "batch_received", "batch_success",
                 "batch_error")
    _TIMES = ("consume", "consume_batch", "time_delayed")

    def tagset(self, topic: str, partition: int) -> dict[str, dict[str, str]]:
        """Metric tags per topic-partition, built once: ``base`` plus one dict per
        ``status:`` and ``time:`` value (no dict building per batch)."""
        key = (topic, partition)
        ts = self._tagsets.get(key)
        if ts is None:
            base = {"topic": topic, "consumer_group": self.group, "partition": str(partition)}
            ts = {"base": base}
            ts.update({st: {**base, "status": st} for st in self._STATUSES})
            ts.update({t: {**base, "time": t} for t in self._TIMES})
            self._tagsets[key] = ts
        return ts

    def schema_for(self, topic: str) -> SchemaBackend:
        sb = self._schemas.get(topic)
        if sb is None:
            sb = self._schemas[topic] = self.runtime.schema_backend(
                topic=topic, schema=self.settings.schema_name,
                namespace=self.settings.namespace, key_config=self.key_config)
        return sb

    # -- decoding ----------------------------------------------------------------------------

    def decode(self, topic: str, msgs: list[Any]
               ) -> tuple[list[Any], list[Any] | None, dict[int, BaseException]]:
        """Payloads, decoded keys (``None``: raw keys, read lazily) and the index -> error of
        every message that failed to decode. One backend call per batch; per message only
        when the batch call failed, to find the culprits. A :class:`TransientError` is
        raised, not recorded: the whole batch waits for the service it needs."""
        sb = self.schema_for(topic)
        ctx = sb.context
        values = list(map(_value, msgs))
        errors: dict[int, BaseException] = {}
        try:
            payloads = sb.decode(ctx, values)
        except TransientError:
            raise
        except Exception:
            payloads = []
            for i, v in enumerate(values):
                try:
                    payloads.append(sb.decode(ctx, [v])[0])
                except TransientError:
                    raise
                except Exception as exc:
                    errors[i] = exc if isinstance(exc, DecodeError) else DecodeError(
                        f"cannot decode the value at offset {msgs[i].offset()} on "
                        f"{topic!r}: {type(exc).__name__}: {exc}")
                    payloads.append(None)
        if self.from_dict is not None:
            self._to_classes(topic, msgs, payloads, errors)
        if self.key_config.kind == "none" or sb.decode_key is None:
            return payloads, None, errors
        raw_keys = list(map(_key, msgs))
        try:
            dkeys = sb.decode_key(ctx, raw_keys)
        except TransientError:
            raise
        except Exception:
            dkeys = []
            for i, k in enumerate(raw_keys):
                try:
                    dkeys.append(sb.decode_key(ctx, [k])[0])
                except TransientError:
                    raise
                except Exception as exc:
                    errors.setdefault(i, DecodeError(
                        f"cannot decode the key at offset {msgs[i].offset()} on {topic!r}: "
                        f"{exc}"))
                    dkeys.append(None)
        return payloads, dkeys, errors

    def _to_classes(self, topic: str, msgs: list[Any], payloads: list[Any],
                    errors: dict[int, BaseException]) -> None:
        """Decoded dicts to schema class instances; one that does not fit its class is a
        decode error (stale generated classes), handled like any undecodable message."""
        fd = self.from_dict
        assert fd is not None
        for i, p in enumerate(payloads):
            if p is not None and i not in errors:
                try:
                    payloads[i] = fd(p)
                except Exception as exc:
                    errors[i] = DecodeError(
                        f"the value at offset {msgs[i].offset()} on {topic!r} does not fit "
                        f"its schema class: {type(exc).__name__}: {exc}")

    # -- the policy --------------------------------------------------------------------------

    def give_up(self, msg: Any, exc: BaseException, attempts: int, payload: Any = None,
                metadata: Any = None) -> None:
        """Apply ``on_error`` to a message whose retries are used up (or undecodable).

        A dead letter is queued: :meth:`process` sends the group's dead letters together,
        waiting once, before any of their offsets may be stored."""
        policy = self.settings.on_error
        if policy == "dead_letter":
            self._dead.append((msg, exc, attempts))
            return
        if policy == "skip":
            self.skipped += 1
            self.telemetry.increment("skipped", 1, self.tagset(msg.topic(),
                                                               msg.partition())["base"])
            log.error("message %s[%s]@%s skipped after %d attempt(s): %r", msg.topic(),
                      msg.partition(), msg.offset(), attempts, exc)
            return
        raise exc

    def dead_letter_message(self, msg: Any, exc: BaseException, attempts: int) -> Message:
        """The dead letter of ``msg``: its original bytes, key and headers plus deimos's
        error headers (:data:`ERROR_HEADERS`)."""
        topic = self.settings.dead_letter_topic
        assert topic is not None
        headers = list(msg.headers() or [])
        headers += [
            ("deimos-error-class", f"{type(exc).__module__}.{type(exc).__qualname__}".encode()),
            ("deimos-error-message", str(exc).encode(errors="replace")[:4000]),
            ("deimos-original-topic", msg.topic().encode()),
            ("deimos-original-partition", str(msg.partition()).encode()),
            ("deimos-original-offset", str(msg.offset()).encode()),
            ("deimos-attempts", str(attempts).encode()),
        ]
        key, value = msg.key(), msg.value()
        return Message(topic, value, key, headers, None, key, value)

    def _send_dead_letters(self, messages: list[Message]) -> None:
        from deimos.backends.kafka import deliver

        deliver(self.runtime.settings, messages[0].topic, messages)

    def _flush_dead(self, msgs: list[Any]) -> None:
        """Send the queued dead letters of group ``msgs``, all in one delivery wait. If
        they cannot be written, the consumer stops at the first of them: nothing from it
        on is committed, so it is redelivered after the restart."""
        dead, self._dead = self._dead, []
        if not dead:
            return
        try:
            self.dead_letter_sender([self.dead_letter_message(m, e, a) for m, e, a in dead])
        except Exception as send_error:
            first = [m.offset() for m in msgs].index(dead[0][0].offset())
            raise StopConsumer(first, PublishError(
                f"could not write {len(dead)} message(s) to dead-letter topic "
                f"{self.settings.dead_letter_topic!r}: {send_error}")) from send_error
        for m, error, attempts in dead:
            self.dead_lettered += 1
            self.telemetry.increment("dead_lettered", 1,
                                     self.tagset(m.topic(), m.partition())["base"])
            log.error("message %s[%s]@%s sent to dead-letter topic %s after %d attempt(s): %r",
                      m.topic(), m.partition(), m.offset(), self.settings.dead_letter_topic,
                      attempts, error)

    # -- handling ----------------------------------------------------------------------------

    def process(self, msgs: list[Any], attempt_of: Callable[[int], int]
                ) -> tuple[int, BaseException | None, int | None]:
        """Handle messages of one topic-partition, in order.

        :returns: ``(handled, error, failed_offset)``: the number of leading messages whose
            offsets may be stored; when ``error`` is set, the message at ``failed_offset``
            must be retried (its attempt count is ``attempt_of(offset)``; a
            :class:`TransientError` is retried without counting an attempt).
        """
        self._dead = []
        try:
            result = self._process(msgs, attempt_of)
        except StopConsumer as stop:
            # what was dead-lettered before the stop is written before its offsets count
            if stop.handled < len(msgs):
                limit = msgs[stop.handled].offset()
                self._dead = [d for d in self._dead if d[0].offset() < limit]
            self._flush_dead(msgs)
            raise
        except BaseException:
            self._dead = []
            raise
        self._flush_dead(msgs)
        return result

    def _process(self, msgs: list[Any], attempt_of: Callable[[int], int]
                 ) -> tuple[int, BaseException | None, int | None]:
        first = msgs[0]
        topic = first.topic()
        partition = first.partition()
        try:
            payloads, keys, decode_errors = self.decode(topic, msgs)
        except TransientError as waiting:
            return 0, waiting, first.offset()
        tags = self.tagset(topic, partition)
        tel = self.telemetry
        self._log_payloads(topic, partition, msgs, payloads, keys)
        if tel.metrics_enabled:
            ts = msgs[-1].timestamp()
            if ts and ts[1] > 0:
                tel.timing("handler", max(0.0, time.time() - ts[1] / 1000.0),
                           tags["time_delayed"])
        if self.batch:
            return self._process_batch(msgs, payloads, keys, decode_errors, attempt_of,
                                       topic, partition, tags)
        n = len(msgs)
        tel.increment("handler", n, tags["received"])
        ok = 0  # messages before this index are done (handled or given up)
        succeeded = 0
        try:
            while ok < n:
                end = n
                if decode_errors:
                    bad = [i for i in decode_errors if i >= ok]
                    if bad and min(bad) == ok:
                        try:
                            self.give_up(msgs[ok], decode_errors[ok], 1)
                        except Exception as raised:
                            raise StopConsumer(ok, raised) from raised
                        ok += 1
                        continue
                    end = min(bad) if bad else n
                i, exc = self._run_messages(msgs, payloads, keys, ok, end, topic, partition,
                                            tags)
                succeeded += i - ok
                if exc is None:
                    ok = end
                    continue
                tel.increment("handler", 1, tags["error"])
                m = msgs[i]
                md = Metadata(m, _RAW if keys is None else keys[i], topic, partition)
                if self.handler.fatal_error(exc, payloads[i], md):
                    raise StopConsumer(i, exc)
                attempt = attempt_of(m.offset())
                if attempt < self.settings.retry.attempts:
                    return i, exc, m.offset()
                try:
                    self.give_up(m, exc, attempt, payloads[i], md)
                except Exception as raised:
                    raise StopConsumer(i, raised) from raised
                ok = i + 1
            return n, None, None
        finally:
            if succeeded:
                tel.increment("handler", succeeded, tags["success"])

    def _run_messages(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                      start: int, stop: int, topic: str, partition: int,
                      tags: dict[str, dict[str, str]]) -> tuple[int, BaseException | None]:
        """Call the handler for ``msgs[start:stop]``; the index and error of the first
        failure, or ``(stop, None)``."""
        consume = self.handler.consume  # type: ignore[attr-defined]
        tel = self.telemetry
        i = start
        try:
            if tel.tracing_enabled or tel.metrics_enabled:
                for i in range(start, stop):
                    m = msgs[i]
                    md = Metadata(m, _RAW if keys is None else keys[i], topic, partition)
                    t0 = time.perf_counter()
                    if tel.tracing_enabled:
                        with tel.span(f"process {topic}", _span_attrs(
                                topic, self.group, partition, m.offset(), 1), md.headers):
                            consume(payloads[i], md)
                    else:
                        consume(payloads[i], md)
                    tel.timing("handler", time.perf_counter() - t0, tags["consume"])
            elif keys is None:
                for i in range(start, stop):
                    consume(payloads[i], Metadata(msgs[i], _RAW, topic, partition))
            else:
                for i in range(start, stop):
                    consume(payloads[i], Metadata(msgs[i], keys[i], topic, partition))
        except Exception as exc:
            return i, exc
        return stop, None

    def _process_batch(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                       decode_errors: dict[int, BaseException],
                       attempt_of: Callable[[int], int], topic: str, partition: int,
                       tags: dict[str, dict[str, str]]
                       ) -> tuple[int, BaseException | None, int | None]:
        tel = self.telemetry
        if decode_errors:
            # hand the decodable runs to the handler and give up on the bad ones, in order
            done = 0
            try:
                for bad in sorted(decode_errors):
                    if bad > done:
                        handled, err, off = self._process_batch(
                            msgs[done:bad], payloads[done:bad],
                            None if keys is None else keys[done:bad], {}, attempt_of, topic,
                            partition, tags)
                        if err is not None:
                            return done + handled, err, off
                    try:
                        self.give_up(msgs[bad], decode_errors[bad], 1)
                    except Exception as stop:
                        raise StopConsumer(bad - done, stop) from stop
                    done = bad + 1
                if done < len(msgs):
                    handled, err, off = self._process_batch(
                        msgs[done:], payloads[done:], None if keys is None else keys[done:],
                        {}, attempt_of, topic, partition, tags)
                    return done + handled, err, off
            except StopConsumer as stop:
                raise StopConsumer(done + stop.handled, stop.error) from stop.error
            return len(msgs), None, None
        n = len(msgs)
        md = BatchMetadata(msgs, keys, topic, partition)
        if tel.metrics_enabled:
            tel.increment("handler", 1, tags["batch_received"])
            tel.increment("handler", n, tags["received"])
        start = time.perf_counter()
        try:
            if tel.tracing_enabled:
                with tel.span(f"process {topic}", _span_attrs(topic, self.group, partition,
                                                              msgs[0].offset(), n),
                              None, _link_headers(msgs)):
                    self.handler.consume_batch(payloads, md)  # type: ignore[attr-defined]
            else:
                self.handler.consume_batch(payloads, md)  # type: ignore[attr-defined]
        except Exception as exc:
            tel.increment("handler", 1, tags["batch_error"])
            index = exc.index if isinstance(exc, BatchError) else 0
            cause = exc.cause if isinstance(exc, BatchError) and isinstance(
                exc.cause, BaseException) else exc
            index = min(max(index, 0), n - 1)
            failed = msgs[index]
            if self.handler.fatal_error(cause, payloads[index], md.slice(index)):
                raise StopConsumer(index, cause) from cause
            attempt = attempt_of(failed.offset())
            if attempt < self.settings.retry.attempts:
                return index, cause, failed.offset()
            # retries used up: find the bad message(s) one at a time so the rest get through
            for j in range(index, n):
                one = md.slice(j, j + 1)
                try:
                    self.handler.consume_batch([payloads[j]], one)  # type: ignore[attr-defined]
                except Exception as one_exc:
                    c = one_exc.cause if isinstance(one_exc, BatchError) and isinstance(
                        one_exc.cause, BaseException) else one_exc
                    if self.handler.fatal_error(c, payloads[j], one):
                        raise StopConsumer(j, c) from c
                    try:
                        self.give_up(msgs[j], c, attempt, payloads[j], one)
                    except Exception as stop:
                        raise StopConsumer(j, stop) from stop
            return n, None, None
        if tel.metrics_enabled:
            tel.timing("handler", time.perf_counter() - start,
                       tags["consume_batch"])
            tel.increment("handler", 1, tags["batch_success"])
            tel.increment("handler", n, tags["success"])
        return n, None, None

    def _log_payloads(self, topic: str, partition: int, msgs: list[Any], payloads: list[Any],
                      keys: list[Any] | None) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        mode = self.settings.payload_log
        if mode == "count":
            log.debug("received %d message(s) from %s[%d]", len(msgs), topic, partition)
        elif mode == "keys":
            log.debug("received from %s[%d]: keys %r", topic, partition, keys)
        elif mode == "headers":
            log.debug("received from %s[%d]: keys %r headers %r", topic, partition, keys,
                      [m.headers() for m in msgs])
        else:
            log.debug("received from %s[%d]: %r", topic, partition,
                      list(zip(keys if keys is not None else map(_key, msgs), payloads)))


def _link_headers(msgs: list[Any]) -> list[dict[str, bytes]]:
    """The distinct header sets of a batch, for span links: messages published in one chunk
    share a trace context, so a batch usually links to a handful of traces, not N."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for h in map(_raw_headers, msgs):
        if h:
            t = tuple(h)
            if t not in seen:
                seen.add(t)
                out.append(dict(h))
    return out


def _span_attrs(topic: str, group: str, partition: int, offset: int, n: int) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.batch.message_count": n,
    }


def consumer_config(settings: Settings, cs: ConsumerSettings) -> dict[str, Any]:
    conf = settings.kafka.client_config()
    conf.setdefault("bootstrap.servers", "localhost:9092")
    conf.update({
        "group.id": cs.group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if cs.start_from_beginning else "latest",
        "session.timeout.ms": cs.session_timeout_ms,
        "heartbeat.interval.ms": max(100, min(3000, cs.session_timeout_ms // 6)),
        # librdkafka waits 1000 ms before fetching again once its prefetch queue was full; a
        # consumer that drains the queue faster than that would sit idle for the rest
        "fetch.queue.backoff.ms": 50,
        "logger": logging.getLogger("deimos.librdkafka"),
    })
    conf.update(cs.config)
    return conf


class ConsumerLoop:
    """One librdkafka consumer in one thread, polling batches until stopped."""

    def __init__(self, cls: type[_Base], settings: ConsumerSettings,
                 runtime: Runtime | None = None, stop: threading.Event | None = None) -> None:
        self.cls = cls
        self.settings = settings
        self.runtime = runtime or get_runtime()
        self.stop_event = stop or threading.Event()
        self.processor = MessageProcessor(cls(), settings, self.runtime)
        self._retries: dict[tuple[str, int], _Retry] = {}
        self._attempts: dict[tuple[str, int, int], int] = {}
        #: consecutive transient failures per partition (the backoff of an outage)
        self._outages: dict[tuple[str, int], int] = {}
        self.consumer: KafkaConsumer | None = None
        self._multi_topic = bool(settings.topic_pattern) or len(settings.topics) != 1
        self._fatal: KafkaError | None = None
        #: set once the group gave this consumer its first partitions
        self.assigned = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err  # the loop raises: the runner restarts this consumer
        else:
            log.warning("consumer %s: %s", self.settings.name, err)

    def _on_assign(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.assigned.set()

    def _on_revoke(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._commit(consumer)
        for tp in partitions:
            self._retries.pop((tp.topic, tp.partition), None)
            self._outages.pop((tp.topic, tp.partition), None)

    @staticmethod
    def _commit(consumer: KafkaConsumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed: %s", exc)

    def run(self) -> None:
        """Poll until :meth:`stop`; the batch in flight finishes and offsets are committed."""
        cs = self.settings
        consumer = KafkaConsumer({**consumer_config(self.runtime.settings, cs),
                                  "error_cb": self._on_error})
        self.consumer = consumer
        topics = list(cs.topics)
        if cs.topic_pattern:
            topics.append(cs.topic_pattern if cs.topic_pattern.startswith("^")
                          else "^" + cs.topic_pattern)
        prefix = self.runtime.settings.producers.topic_prefix
        topics = [t if t.startswith("^") else prefix + t for t in topics]
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consumer %s started on %s (group %s)", cs.name, topics, cs.group_id)
        try:
            while not self.stop_event.is_set():
                if self._fatal is not None:
                    raise DeimosError(f"consumer {cs.name}: fatal Kafka error: {self._fatal}")
                self._resume_due(consumer)
                msgs = consumer.consume(cs.max_batch_size, cs.max_wait_time)
                if msgs:
                    self.handle(consumer, msgs)
        finally:
            self._commit(consumer)
            consumer.close()
            self.consumer = None
            log.info("consumer %s stopped", cs.name)

    def handle(self, consumer: KafkaConsumer, msgs: list[Any]) -> None:
        """Process one polled batch: group by topic-partition, handle, store offsets."""
        errs = list(map(_error, msgs))
        if errs.count(None) != len(errs):
            for err in errs:
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.error("consumer %s: %s", self.settings.name, err)
            msgs = [m for m, err in zip(msgs, errs) if err is None]
            if not msgs:
                return
        parts: list[int] = list(map(_partition, msgs))
        topics: list[str] | None = list(map(_topic, msgs)) if self._multi_topic else None
        groups: dict[tuple[str, int], list[Any]]
        if parts.count(parts[0]) == len(parts) and (
                topics is None or topics.count(topics[0]) == len(topics)):
            groups = {(str(msgs[0].topic()), parts[0]): msgs}
        else:
            groups = {}
            for i, m in enumerate(msgs):
                tp = (topics[i] if topics is not None else str(m.topic()), parts[i])
                g = groups.get(tp)
                if g is None:
                    groups[tp] = [m]
                else:
                    g.append(m)
        for (topic, partition), group in groups.items():
            if self._retries and (topic, partition) in self._retries:
                continue  # paused for a retry; re-read after the seek

            def attempt_of(offset: int, _t: str = topic, _p: int = partition) -> int:
                return self._attempts.get((_t, _p, offset), 0) + 1

            try:
                handled, error, failed_offset = self.processor.process(group, attempt_of)
            except StopConsumer as stop:
                # on_error=raise or a fatal error: keep what succeeded before it, then stop
                if stop.handled:
                    last = group[stop.handled - 1].offset()
                    consumer.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
                self._commit(consumer)
                raise stop.error from None
            except BaseException:
                self._commit(consumer)
                raise
            if handled:
                last = group[handled - 1].offset()
                consumer.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
                if self._attempts:
                    for m in group[:handled]:
                        self._attempts.pop((topic, partition, m.offset()), None)
            if self._outages and not isinstance(error, TransientError):
                self._outages.pop((topic, partition), None)
            if error is not None and failed_offset is not None:
                self._schedule_retry(consumer, topic, partition, failed_offset, error)

    def _schedule_retry(self, consumer: KafkaConsumer, topic: str, partition: int,
                        offset: int, error: BaseException) -> None:
        r = self.settings.retry
        if isinstance(error, TransientError):
            # not the message's fault: wait for the service, use up none of its attempts
            outage = self._outages.get((topic, partition), 0) + 1
            self._outages[(topic, partition)] = outage
            attempt = self._attempts.get((topic, partition, offset), 0)
            delay = min(r.max_backoff, r.backoff * (r.multiplier ** (outage - 1)))
            log.warning("consumer %s: %s[%d]@%d cannot be decoded yet (retry %d, not counted "
                        "against retry.attempts), retrying in %.2fs: %s", self.settings.name,
                        topic, partition, offset, outage, delay, error)
        else:
            key = (topic, partition, offset)
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
            delay = min(r.max_backoff, r.backoff * (r.multiplier ** (attempt - 1)))
            log.warning("consumer %s: %s[%d]@%d failed (attempt %d of %d), retrying in "
                        "%.2fs: %r", self.settings.name, topic, partition, offset, attempt,
                        r.attempts, delay, error)
        tp = TopicPartition(topic, partition)
        consumer.pause([tp])
        self._retries[(topic, partition)] = _Retry(offset, attempt, time.monotonic() + delay)
        self.processor.telemetry.increment(
            "retries", 1, {"topic": topic, "consumer_group": self.processor.group})

    def _resume_due(self, consumer: KafkaConsumer) -> None:
        if not self._retries:
            return
        now = time.monotonic()
        for (topic, partition), r in list(self._retries.items()):
            if r.resume_at <= now:
                tp = TopicPartition(topic, partition, r.offset)
                consumer.seek(tp)
                consumer.resume([TopicPartition(topic, partition)])
                del self._retries[(topic, partition)]


def consumer_settings_for(runtime: Runtime, names: Sequence[str] | None = None
                          ) -> list[tuple[type[_Base], ConsumerSettings]]:
    """The consumers configured under ``[[consumers]]`` (optionally only ``names``)."""
    out = []
    for entry in runtime.settings.consumers:
        if entry.disabled or not entry.class_path:
            continue
        cls = import_class(entry.class_path)
        cs = resolve_settings(cls, entry)
        if names and cs.name not in names:
            continue
        out.append((cls, cs))
    if names:
        missing = set(names) - {cs.name for _, cs in out}
        if missing:
            raise DeimosError(f"no consumer named {', '.join(sorted(missing))} is configured")
    return out
