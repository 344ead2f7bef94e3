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
cannot be decoded skips the retries and goes straight to ``on_error``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from deimos.config import ConsumerSettings, KeyConfig, Settings
from deimos.errors import DecodeError, DeimosError, PublishError
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


@dataclass(slots=True)
class Metadata:
    """What a handler knows about one message besides its payload."""

    key: Any
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    headers: dict[str, bytes]
    raw_key: bytes | None = None


@dataclass(slots=True)
class BatchMetadata:
    """Per-message details of a batch, as parallel lists (all one topic-partition)."""

    topic: str
    partition: int
    keys: list[Any]
    offsets: list[int]
    timestamps: list[int | None]
    headers: list[dict[str, bytes]]

    @property
    def batch_size(self) -> int:
        return len(self.offsets)

    def slice(self, start: int, stop: int | None = None) -> BatchMetadata:
        s = slice(start, stop)
        return BatchMetadata(self.topic, self.partition, self.keys[s], self.offsets[s],
                             self.timestamps[s], self.headers[s])


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

    def fatal_error(self, exc: BaseException, payload: Any, metadata: Any) -> bool:
        """Return True to treat ``exc`` as not worth retrying: the message is skipped
        (logged and counted), as Ruby Deimos's ``fatal_error`` does."""
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
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
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
        kc = settings.key_config
        self.key_config = kc if kc is not None else KeyConfig(kind="none")
        self.group = settings.group_id or ""
        self.dead_letter_sender: Callable[[Any, BaseException, int], None] = self._dead_letter

    def schema_for(self, topic: str) -> SchemaBackend:
        sb = self._schemas.get(topic)
        if sb is None:
            sb = self._schemas[topic] = self.runtime.schema_backend(
                topic=topic, schema=self.settings.schema_name,
                namespace=self.settings.namespace, key_config=self.key_config)
        return sb

    # -- decoding ----------------------------------------------------------------------------

    def decode(self, topic: str, values: list[bytes | None], keys: list[bytes | None]
               ) -> tuple[list[Any], list[Any], dict[int, BaseException]]:
        """Payloads, keys and the index -> error of every message that failed to decode."""
        sb = self.schema_for(topic)
        ctx = sb.context
        errors: dict[int, BaseException] = {}
        try:
            payloads = sb.decode(ctx, values)
        except Exception:
            payloads = []
            for i, v in enumerate(values):
                try:
                    payloads.append(sb.decode(ctx, [v])[0])
                except Exception as exc:
                    errors[i] = exc if isinstance(exc, DecodeError) else DecodeError(
                        f"cannot decode the value at index {i} on {topic!r}: "
                        f"{type(exc).__name__}: {exc}")
                    payloads.append(None)
        if self.key_config.kind == "none" or sb.decode_key is None:
            return payloads, keys, errors
        try:
            dkeys = sb.decode_key(ctx, keys)
        except Exception:
            dkeys = []
            for i, k in enumerate(keys):
                try:
                    dkeys.append(sb.decode_key(ctx, [k])[0])
                except Exception as exc:
                    errors.setdefault(i, DecodeError(
                        f"cannot decode the key at index {i} on {topic!r}: {exc}"))
                    dkeys.append(None)
        return payloads, dkeys, errors

    # -- the policy --------------------------------------------------------------------------

    def give_up(self, msg: Any, exc: BaseException, attempts: int, payload: Any = None,
                metadata: Any = None) -> None:
        """Apply ``on_error`` to a message whose retries are used up (or undecodable)."""
        tags = {"topic": msg.topic(), "consumer_group": self.group}
        if metadata is not None and self.handler.fatal_error(exc, payload, metadata):
            log.warning("fatal error on %s[%s]@%s treated as skip: %r", msg.topic(),
                        msg.partition(), msg.offset(), exc)
            self.telemetry.increment("skipped", 1, tags)
            return
        policy = self.settings.on_error
        if policy == "dead_letter":
            self.dead_letter_sender(msg, exc, attempts)
            self.telemetry.increment("dead_lettered", 1, tags)
            log.error("message %s[%s]@%s sent to dead-letter topic %s after %d attempt(s): %r",
                      msg.topic(), msg.partition(), msg.offset(), self.settings.dead_letter_topic,
                      attempts, exc)
            return
        if policy == "skip":
            self.telemetry.increment("skipped", 1, tags)
            log.error("message %s[%s]@%s skipped after %d attempt(s): %r", msg.topic(),
                      msg.partition(), msg.offset(), attempts, exc)
            return
        raise exc

    def _dead_letter(self, msg: Any, exc: BaseException, attempts: int) -> None:
        from deimos.backends.kafka import shared_producer

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
        failures: list[Any] = []
        sp = shared_producer(self.runtime.settings)
        sp.producer.produce(topic, msg.value(), msg.key(), headers=headers,
                            on_delivery=lambda err, m: failures.append(err) if err else None)
        remaining = sp.producer.flush(self.runtime.settings.producers.sync_timeout)
        if failures or remaining:
            raise PublishError(
                f"could not write to dead-letter topic {topic!r}: "
                f"{failures[0] if failures else 'timed out'}")

    # -- handling ----------------------------------------------------------------------------

    def process(self, msgs: list[Any], attempt_of: Callable[[int], int]
                ) -> tuple[int, BaseException | None, int | None]:
        """Handle messages of one topic-partition, in order.

        :returns: ``(handled, error, failed_offset)``: the number of leading messages whose
            offsets may be stored; when ``error`` is set, the message at ``failed_offset``
            must be retried (its attempt count is ``attempt_of(offset)``).
        """
        topic = msgs[0].topic()
        partition = msgs[0].partition()
        payloads, keys, decode_errors = self.decode(
            topic, [m.value() for m in msgs], [m.key() for m in msgs])
        tags = {"topic": topic, "consumer_group": self.group}
        tel = self.telemetry
        n = len(msgs)
        self._log_payloads(topic, partition, msgs, payloads, keys)
        if tel.metrics_enabled:
            ts = msgs[-1].timestamp()
            if ts and ts[1] > 0:
                tel.timing("handler", max(0.0, time.time() - ts[1] / 1000.0),
                           {**tags, "time": "time_delayed"})
        if self.batch:
            return self._process_batch(msgs, payloads, keys, decode_errors, attempt_of,
                                       topic, partition, tags)
        tel.increment("handler", n, {**tags, "status": "received"})
        handler = self.handler
        consume = handler.consume  # type: ignore[attr-defined]
        ok = 0
        for i, m in enumerate(msgs):
            if i in decode_errors:
                self.give_up(m, decode_errors[i], 1)
                ok += 1
                continue
            md = Metadata(keys[i], topic, partition, m.offset(), _ts(m), _headers(m), m.key())
            start = time.perf_counter()
            try:
                if tel.tracing_enabled:
                    with tel.span(f"{topic} process", _span_attrs(topic, self.group, partition,
                                                                  m.offset(), 1), md.headers):
                        consume(payloads[i], md)
                else:
                    consume(payloads[i], md)
            except Exception as exc:
                tel.increment("handler", 1, {**tags, "status": "error"})
                if ok:
                    tel.increment("handler", ok, {**tags, "status": "success"})
                attempt = attempt_of(m.offset())
                if attempt >= self.settings.retry.attempts or self.handler.fatal_error(
                        exc, payloads[i], md):
                    self.give_up(m, exc, attempt, payloads[i], md)
                    ok += 1
                    tel.increment("handler", 0, {**tags, "status": "success"})
                    continue
                return ok, exc, m.offset()
            tel.timing("handler", time.perf_counter() - start, {**tags, "time": "consume"})
            ok += 1
        tel.increment("handler", n, {**tags, "status": "success"})
        return ok, None, None

    def _process_batch(self, msgs: list[Any], payloads: list[Any], keys: list[Any],
                       decode_errors: dict[int, BaseException],
                       attempt_of: Callable[[int], int], topic: str, partition: int,
                       tags: dict[str, str]) -> tuple[int, BaseException | None, int | None]:
        tel = self.telemetry
        if decode_errors:
            good = [i for i in range(len(msgs)) if i not in decode_errors]
            # handle the decodable prefix, give up on the bad ones, in offset order
            done = 0
            for i in sorted(decode_errors):
                seg = [j for j in good if done <= j < i]
                if seg:
                    handled, err, off = self._process_batch(
                        [msgs[j] for j in seg], [payloads[j] for j in seg],
                        [keys[j] for j in seg], {}, attempt_of, topic, partition, tags)
                    if err is not None:
                        return seg[0] + handled, err, off
                self.give_up(msgs[i], decode_errors[i], 1)
                done = i + 1
            rest = [j for j in good if j >= done]
            if rest:
                handled, err, off = self._process_batch(
                    [msgs[j] for j in rest], [payloads[j] for j in rest],
                    [keys[j] for j in rest], {}, attempt_of, topic, partition, tags)
                return rest[0] + handled, err, off
            return len(msgs), None, None
        n = len(msgs)
        md = BatchMetadata(topic, partition, keys, [m.offset() for m in msgs],
                           [_ts(m) for m in msgs], [_headers(m) for m in msgs])
        tel.increment("handler", 1, {**tags, "status": "batch_received"})
        tel.increment("handler", n, {**tags, "status": "received"})
        start = time.perf_counter()
        try:
            if tel.tracing_enabled:
                with tel.span(f"{topic} process", _span_attrs(topic, self.group, partition,
                                                              md.offsets[0], n),
                              None, md.headers):
                    self.handler.consume_batch(payloads, md)  # type: ignore[attr-defined]
            else:
                self.handler.consume_batch(payloads, md)  # type: ignore[attr-defined]
        except Exception as exc:
            tel.increment("handler", 1, {**tags, "status": "batch_error"})
            index = exc.index if isinstance(exc, BatchError) else 0
            cause = exc.cause if isinstance(exc, BatchError) and isinstance(
                exc.cause, BaseException) else exc
            index = min(max(index, 0), n - 1)
            failed = msgs[index]
            attempt = attempt_of(failed.offset())
            if attempt < self.settings.retry.attempts and not self.handler.fatal_error(
                    cause, payloads[index], md.slice(index)):
                return index, cause, failed.offset()
            # retries used up: find the bad message(s) one at a time so the rest get through
            for j in range(index, n):
                one = md.slice(j, j + 1)
                try:
                    self.handler.consume_batch([payloads[j]], one)  # type: ignore[attr-defined]
                except Exception as one_exc:
                    c = one_exc.cause if isinstance(one_exc, BatchError) and isinstance(
                        one_exc.cause, BaseException) else one_exc
                    self.give_up(msgs[j], c, attempt, payloads[j], one)
            tel.increment("handler", n, {**tags, "status": "success"})
            return n, None, None
        tel.timing("handler", time.perf_counter() - start, {**tags, "time": "consume_batch"})
        tel.increment("handler", 1, {**tags, "status": "batch_success"})
        tel.increment("handler", n, {**tags, "status": "success"})
        return n, None, None

    def _log_payloads(self, topic: str, partition: int, msgs: list[Any], payloads: list[Any],
                      keys: list[Any]) -> None:
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
                      list(zip(keys, payloads)))


def _ts(m: Any) -> int | None:
    t = m.timestamp()
    return t[1] if t and t[0] else None


def _headers(m: Any) -> dict[str, bytes]:
    h = m.headers()
    return dict(h) if h else {}


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
        self.consumer: KafkaConsumer | None = None

    def stop(self) -> None:
        self.stop_event.set()

    def _on_revoke(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._commit(consumer)
        for tp in partitions:
            self._retries.pop((tp.topic, tp.partition), None)

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
        consumer = KafkaConsumer(consumer_config(self.runtime.settings, cs))
        self.consumer = consumer
        topics = list(cs.topics)
        if cs.topic_pattern:
            topics.append(cs.topic_pattern if cs.topic_pattern.startswith("^")
                          else "^" + cs.topic_pattern)
        prefix = self.runtime.settings.producers.topic_prefix
        topics = [t if t.startswith("^") else prefix + t for t in topics]
        consumer.subscribe(topics, on_revoke=self._on_revoke)
        log.info("consumer %s started on %s (group %s)", cs.name, topics, cs.group_id)
        try:
            while not self.stop_event.is_set():
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
        groups: dict[tuple[str, int], list[Any]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.error("consumer %s: %s", self.settings.name, err)
                continue
            tp = (m.topic(), m.partition())
            if tp in self._retries:
                continue  # paused for a retry; re-read after the seek
            g = groups.get(tp)
            if g is None:
                groups[tp] = [m]
            else:
                g.append(m)
        for (topic, partition), group in groups.items():
            def attempt_of(offset: int, _t: str = topic, _p: int = partition) -> int:
                return self._attempts.get((_t, _p, offset), 0) + 1

            try:
                handled, error, failed_offset = self.processor.process(group, attempt_of)
            except BaseException:
                # on_error=raise: keep what succeeded before the failure, then stop
                self._commit(consumer)
                raise
            if handled:
                last = group[handled - 1].offset()
                consumer.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
                for m in group[:handled]:
                    self._attempts.pop((topic, partition, m.offset()), None)
            if error is not None and failed_offset is not None:
                self._schedule_retry(consumer, topic, partition, failed_offset, error)

    def _schedule_retry(self, consumer: KafkaConsumer, topic: str, partition: int,
                        offset: int, error: BaseException) -> None:
        key = (topic, partition, offset)
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        r = self.settings.retry
        delay = min(r.max_backoff, r.backoff * (r.multiplier ** (attempt - 1)))
        log.warning("consumer %s: %s[%d]@%d failed (attempt %d of %d), retrying in %.2fs: %r",
                    self.settings.name, topic, partition, offset, attempt, r.attempts, delay,
                    error)
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
