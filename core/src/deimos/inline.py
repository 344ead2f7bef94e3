"""The inline consumer: read the last messages of a topic, decoded, without a consumer group.

Partitions are *assigned* (``assign()``), never subscribed, so no group is joined and no
rebalance disturbs the service's consumers; auto-commit is off and nothing is committed. The
start offset of each partition comes from its watermarks (``high - n``, not below ``low``), so
every partition is read (Ruby Deimos read only partition 0) and only the tail is fetched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from deimos.config import KeyConfig, Settings
from deimos.errors import DeimosError
from deimos.kafka.config import DEFAULT_BOOTSTRAP, cluster_settings, reader_config
from deimos.runtime import Runtime, SchemaBackend, get_runtime


@dataclass
class InlineMessage:
    """One message read by :func:`get_messages_for`."""

    topic: str
    partition: int
    offset: int
    key: Any
    payload: Any
    headers: dict[str, bytes] = field(default_factory=dict)
    #: milliseconds since the epoch, or None when the message has none
    timestamp: int | None = None


class LastError:
    """An ``error_cb`` keeping librdkafka's last error, for one clear message instead of its
    log lines (``deimos tail``, ``dlq replay`` and ``topics`` are short-lived commands: a
    connection failure is reported once, naming the setting to fix)."""

    def __init__(self) -> None:
        self.error: Any = None

    def __call__(self, error: Any) -> None:
        self.error = error


def quiet(conf: dict[str, Any], last: LastError) -> dict[str, Any]:
    """``conf`` with librdkafka's own logs limited to critical ones and errors kept in
    ``last``."""
    conf.update({"log_level": 2, "error_cb": last})
    return conf


def read_to_ends(consumer: Any, topic: str, pending: dict[int, int], timeout: float
                 ) -> list[Any]:
    """The messages of an assigned ``consumer`` below ``pending[partition]`` (an end
    offset), until every partition reached its end or ``timeout`` passed; the partitions not
    read to their end stay in ``pending``."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.2):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise DeimosError(f"reading {topic!r} failed: {err}")
            p, off = m.partition(), m.offset() or 0
            if p in pending and off < pending[p]:
                out.append(m)
                if off >= pending[p] - 1:
                    del pending[p]
    return out


def unreachable(settings: Settings, what: str, error: Any) -> DeimosError:
    """The error of a command that could not reach the cluster."""
    servers = settings.kafka.bootstrap_servers
    where = servers if servers else f"{DEFAULT_BOOTSTRAP} (the default: it is not set)"
    if isinstance(error, BaseException) and error.args:
        error = error.args[0]  # KafkaException(KafkaError)
    text = error.str() if callable(getattr(error, "str", None)) else str(error)
    return DeimosError(f"{what}: cannot reach Kafka at {settings.kafka.where}."
                       f"bootstrap_servers = {where}: {text}")


def client_config(settings: Settings) -> dict[str, Any]:
    """A librdkafka consumer configuration that can never commit: a throwaway group id (it
    is needed by the client even for ``assign()``), no auto-commit, no offset store."""
    return reader_config(settings, "inline")


def dead_letter_sources(settings: Settings, topic: str) -> dict[str, Any]:
    """``original topic -> consumer settings`` of the consumers writing dead letters to
    ``topic`` (class attributes included, prefix applied to the original topics)."""
    from deimos.consumer import import_class, resolve_settings

    prefix = settings.producers.topic_prefix
    out: dict[str, Any] = {}
    for entry in settings.consumers:
        try:
            cs = resolve_settings(import_class(entry.class_path), entry) if entry.class_path \
                else entry
        except Exception:
            continue
        if cs.dead_letter_topic == topic:
            for t in cs.topics:
                out.setdefault(prefix + t, cs)
    return out


def _producer_schema(settings: Settings, topic: str) -> tuple[str | None, str | None, Any] | None:
    """``(schema, namespace, key_config)`` of the producer of ``topic``: a
    ``producers.topics`` entry, else a ``deimos.Producer`` subclass defined in this process
    whose ``topic`` it is (the first with a schema)."""
    from deimos.producer import Producer

    prefix = settings.producers.topic_prefix
    names = {topic, topic[len(prefix):] if prefix and topic.startswith(prefix) else topic}
    for ts in settings.producers.topics:
        if ts.topic in names:
            return ts.schema_name, ts.namespace, ts.key_config
    todo, seen = list(Producer.__subclasses__()), set()
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if getattr(cls, "topic", None) in names and getattr(cls, "schema", None):
            return cls.schema, cls.namespace, cls.key_config
    return None


def _schema(runtime: Runtime, topic: str, schema: str | None, namespace: str | None,
            key_config: Any) -> SchemaBackend:
    """The schema to decode ``topic`` with: the arguments, else the consumer configured for
    the topic, else the default backend with no schema."""
    if schema is None and key_config is None:
        from deimos.consumer import import_class, resolve_settings

        prefix = runtime.settings.producers.topic_prefix
        for entry in runtime.settings.consumers:
            cs = entry
            if entry.class_path:
                try:
                    cs = resolve_settings(import_class(entry.class_path), entry)
                except Exception:
                    cs = entry
            if topic in cs.topics or topic in (prefix + t for t in cs.topics):
                schema, namespace = cs.schema_name, cs.namespace or namespace
                key_config = cs.key_config
                break
        else:
            found = _producer_schema(runtime.settings, topic)
            if found is not None:
                schema, namespace, key_config = found
    kc = KeyConfig.model_validate(key_config if key_config is not None else "plain")
    return runtime.schema_backend(topic=topic, schema=schema, namespace=namespace,
                                  key_config=kc)


def start_offsets(consumer: KafkaConsumer, topic: str, num_messages: int,
                  timeout: float) -> dict[int, tuple[int, int]]:
    """``partition -> (start, end)`` for the last ``num_messages`` of each partition: the high
    watermark is the offset after the last message; ``start`` is not below the low one."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        reason = md.error if md is not None else "not found"
        raise DeimosError(f"topic {topic!r} cannot be read: {reason}")
    ranges = {}
    for p in sorted(md.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                   cached=False)
        start = max(low, high - num_messages)
        if high > start:
            ranges[p] = (start, high)
    return ranges


def read_last(runtime: Runtime, topic: str, num_messages: int, timeout: float,
              cluster: str | None) -> tuple[str, list[Any]]:
    """The topic's name as producers and consumers write it (the topic prefix applied,
    except to dead-letter topics) and its last ``num_messages`` raw messages across all
    partitions, oldest first (by timestamp, then partition and offset)."""
    prefix = runtime.settings.producers.topic_prefix
    if prefix and not topic.startswith(prefix) and not any(
            c.dead_letter_topic == topic for c in runtime.settings.consumers):
        topic = prefix + topic  # as producers and consumers name it (not dead letters)
    last = LastError()
    on = cluster_settings(runtime.settings, cluster, where="cluster")
    consumer = KafkaConsumer(quiet(client_config(on), last))
    try:
        try:
            ranges = start_offsets(consumer, topic, num_messages, timeout)
        except KafkaException as exc:
            raise unreachable(on, f"reading {topic!r}", last.error or exc) from None
        if not ranges:
            return topic, []
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in ranges.items()])
        pending = {p: end for p, (_, end) in ranges.items()}
        raw = read_to_ends(consumer, topic, pending, timeout)
    finally:
        consumer.close()
    raw.sort(key=lambda m: (m.timestamp()[1] if m.timestamp()[0] else 0, m.partition(),
                            m.offset()))
    return topic, raw[-num_messages:]


def get_messages_for(
    topic: str,
    num_messages: int = 10,
    *,
    schema: str | None = None,
    namespace: str | None = None,
    key_config: Any = None,
    decode: bool = True,
    timeout: float = 10.0,
    settings: Settings | None = None,
    cluster: str | None = None,
) -> list[InlineMessage]:
    """The last ``num_messages`` messages of ``topic`` across all its partitions, oldest
    first (by timestamp, then partition and offset), decoded with the schema of the consumer
    configured for the topic unless ``schema``/``key_config`` are given.

    :param decode: False returns raw bytes for keys and payloads.
    :param timeout: seconds to wait for metadata, watermarks and the fetch.
    :param cluster: the cluster to read from (a name under ``kafka.clusters``; default: the
        ``kafka`` section).
    """
    if num_messages <= 0:
        return []
    runtime = get_runtime() if settings is None else Runtime(settings)
    topic, raw = read_last(runtime, topic, num_messages, timeout, cluster)
    keys: list[Any] = [m.key() for m in raw]
    payloads: list[Any] = [m.value() for m in raw]
    if decode and raw:
        groups: dict[str, list[int]] = {}
        sources = dead_letter_sources(runtime.settings, topic) \
            if schema is None and key_config is None else {}
        for i, m in enumerate(raw):
            # a dead letter is decoded as the consumer of its original topic decodes it
            original = dict(m.headers() or []).get("deimos-original-topic")
            name = original.decode(errors="replace") if original else ""
            groups.setdefault(name if name in sources else topic, []).append(i)
        for decode_as, indexes in groups.items():
            sb = _schema(runtime, decode_as, schema, namespace, key_config)
            decoded = sb.decode(sb.context, [payloads[i] for i in indexes])
            dkeys = [keys[i] for i in indexes]
            if sb.decode_key is not None and sb.context.key_config.kind != "none":
                dkeys = sb.decode_key(sb.context, dkeys)
            for j, i in enumerate(indexes):
                payloads[i], keys[i] = decoded[j], dkeys[j]
    return [InlineMessage(topic=m.topic(), partition=m.partition(), offset=m.offset(),
                          key=keys[i], payload=payloads[i], headers=dict(m.headers() or []),
                          timestamp=m.timestamp()[1] if m.timestamp()[0] else None)
            for i, m in enumerate(raw)]


@dataclass
class InlineResult:
    """What :func:`consume` did."""

    #: messages read from the topic
    read: int
    #: messages done: handled, dead-lettered or skipped
    done: int
    #: of those, written to the dead-letter topic
    dead_lettered: int
    #: of those, skipped by ``on_error = "skip"`` (or a batch's skip)
    skipped: int


def consume(
    topic: str,
    consumer: Any,
    num_messages: int = 10,
    *,
    timeout: float = 10.0,
    settings: Settings | None = None,
    cluster: str | None = None,
    **overrides: Any,
) -> InlineResult:
    """Run a consumer over the last ``num_messages`` messages of ``topic`` (Ruby Deimos's
    ``InlineConsumer.consume``): to re-apply recent messages after a fix, or to try a
    consumer against real data, without joining its group or moving its offsets.

    The messages are read as :func:`get_messages_for` reads them (assigned, nothing
    committed) and handed to the consumer's own processing, partition by partition in offset
    order: its schema, ``retry``, ``on_error`` and dead-letter topic apply as in ``deimos
    run``, backoffs included. ``on_error = "raise"`` (the default) raises the handler's error
    after the messages before it are done.

    :param consumer: a ``Consumer``/``BatchConsumer`` (or asyncio) class or instance; its
        ``[[consumers]]`` entry, if any, applies as in ``deimos run``.
    :param cluster: the cluster to read from (default: the consumer's ``cluster``).
    :param overrides: consumer settings for this call (``on_error="skip"`` ...).
    """
    from deimos.consumer import MessageProcessor, resolve_settings
    from deimos.consumer.offline import configured_entry, drive

    runtime = get_runtime() if settings is None else Runtime(settings)
    handler = consumer() if isinstance(consumer, type) else consumer
    cls = type(handler)
    entry = configured_entry(runtime, cls)
    if not (getattr(cls, "group_id", None) or (entry is not None and entry.group_id)):
        overrides.setdefault("group_id", "deimos-inline")  # tags metrics; no group is joined
    cs = resolve_settings(cls, entry, **overrides)
    if num_messages <= 0:
        return InlineResult(0, 0, 0, 0)
    topic, raw = read_last(runtime, topic, num_messages,
                           timeout, cluster if cluster is not None else cs.cluster)
    partitions: dict[int, list[Any]] = {}
    for m in raw:
        partitions.setdefault(m.partition(), []).append(m)
    processor = MessageProcessor(handler, cs, runtime)
    done = 0
    try:
        for p in sorted(partitions):
            done += drive(processor, sorted(partitions[p], key=lambda m: m.offset()), wait=True)
    finally:
        processor.close()
    return InlineResult(read=len(raw), done=done, dead_lettered=processor.dead_lettered,
                        skipped=processor.skipped)
