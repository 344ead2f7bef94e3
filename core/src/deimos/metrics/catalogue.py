"""The one catalogue of metrics deimos emits, shared by every metrics provider.

Producers, consumers, the DB producer and the poller emit the Ruby Deimos names below through
:class:`deimos.telemetry.Telemetry`. Providers that pass names through (``datadog``, ``log``)
need nothing from here; providers with their own naming (``otel``) map each row to an
instrument with :func:`lookup`. ``docs/metrics.md`` is generated from the same rows and a test
keeps them in step, so the table a user reads is the table the code uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: the kind of measurement, named after the hook that carries it
Kind = Literal["counter", "gauge", "histogram", "timing"]

#: hook suffix (``deimos_metrics_<hook>``) -> kind
HOOK_KINDS: dict[str, Kind] = {
    "increment": "counter", "gauge": "gauge", "histogram": "histogram", "time": "timing",
}


@dataclass(frozen=True)
class MetricSpec:
    """One row of the catalogue: a deimos metric (optionally one value of one tag) and its
    OpenTelemetry instrument."""

    name: str
    kind: Kind
    unit: str
    tags: tuple[str, ...]
    description: str
    otel_name: str
    #: ``(tag, value)`` when this row covers only that value (``handler`` status:received)
    variant: tuple[str, str] | None = None
    #: attributes the OTel instrument adds to every measurement of this row
    otel_attributes: Mapping[str, str] = field(default_factory=dict)


_CONSUMER = ("topic", "consumer_group")
#: tags of the gauges from librdkafka's statistics: the client (``producer``, ``consumer``)
#: and its cluster's bootstrap servers; a consumer's also name its group
_CLIENT = ("client", "bootstrap")
_BROKER = (*_CLIENT, "broker")
_CLIENT_LAG = ("client", "consumer_group", "bootstrap", "topic", "partition")


def _handler_status(status: str, otel_name: str, unit: str, what: str) -> MetricSpec:
    return MetricSpec("handler", "counter", unit, (*_CONSUMER, "status"), what, otel_name,
                      ("status", status))


def _handler_time(time: str, otel_name: str, what: str) -> MetricSpec:
    return MetricSpec("handler", "timing", "s", (*_CONSUMER, "time"), what, otel_name,
                      ("time", time))


CATALOGUE: tuple[MetricSpec, ...] = (
    _handler_status("received", "messaging.client.consumed.messages", "{message}",
                    "messages handed to a consumer"),
    _handler_status("success", "deimos.consumer.handled.messages", "{message}",
                    "messages whose handler succeeded"),
    _handler_status("error", "deimos.consumer.handled.messages", "{message}",
                    "handler failures (each attempt counts)"),
    _handler_status("batch_received", "deimos.consumer.batches", "{batch}",
                    "batches handed to a batch consumer"),
    _handler_status("batch_success", "deimos.consumer.batches", "{batch}",
                    "batches whose handler succeeded"),
    _handler_status("batch_error", "deimos.consumer.batches", "{batch}",
                    "batch handler failures (each attempt counts)"),
    _handler_time("consume", "messaging.process.duration",
                  "time in one per-message handler call"),
    _handler_time("consume_batch", "messaging.process.duration",
                  "time in one batch handler call"),
    _handler_time("time_delayed", "deimos.consumer.delay",
                  "age of the newest message of a batch when it is handled"),
    MetricSpec("publish", "counter", "{message}", ("topic",),
               "messages a producer backend accepted", "messaging.client.sent.messages"),
    MetricSpec("publish_error", "counter", "{message}", ("topic",),
               "messages a producer backend failed to send", "messaging.client.sent.messages",
               otel_attributes={"error.type": "_OTHER"}),
    MetricSpec("consumer_lag", "gauge", "{message}", ("consumer_group", "topic", "partition"),
               "messages between a group's committed offset and the partition's end",
               "deimos.consumer.lag"),
    # librdkafka's statistics (deimos.kafka.statistics), every statistics.interval.ms
    *(MetricSpec(f"kafka.broker.rtt_{q}", "gauge", "s", _BROKER,
                 f"{what} round-trip time of requests to one broker (librdkafka statistics)",
                 f"deimos.kafka.broker.rtt.{q}")
      for q, what in (("avg", "average"), ("p95", "95th percentile"),
                      ("p99", "99th percentile"))),
    MetricSpec("kafka.broker.outbuf_requests", "gauge", "{request}", _BROKER,
               "requests waiting to be sent to one broker (librdkafka statistics)",
               "deimos.kafka.broker.outbuf.requests"),
    MetricSpec("kafka.broker.waitresp_requests", "gauge", "{request}", _BROKER,
               "requests sent to one broker and waiting for its answer (librdkafka "
               "statistics)", "deimos.kafka.broker.waitresp.requests"),
    MetricSpec("kafka.producer.queue_messages", "gauge", "{message}", _CLIENT,
               "messages in a shared producer's local queue, not yet acknowledged "
               "(librdkafka statistics)", "deimos.kafka.producer.queue.messages"),
    MetricSpec("kafka.producer.queue_bytes", "gauge", "By", _CLIENT,
               "bytes of the messages in a shared producer's local queue (librdkafka "
               "statistics)", "deimos.kafka.producer.queue.size"),
    MetricSpec("consumer.lags", "gauge", "{message}", _CLIENT_LAG,
               "a consumer's lag on one assigned partition as librdkafka sees it: the "
               "partition's end against the offset deimos stored (librdkafka statistics)",
               "deimos.kafka.consumer.lag"),
    MetricSpec("consumer.lags_delta", "gauge", "{message}", _CLIENT_LAG,
               "change of consumer.lags since the previous statistics report (0 in the "
               "first)", "deimos.kafka.consumer.lag.delta"),
    MetricSpec("retries", "counter", "{message}", _CONSUMER,
               "failed messages scheduled for another attempt", "deimos.consumer.retries"),
    MetricSpec("dead_lettered", "counter", "{message}", _CONSUMER,
               "messages sent to the dead-letter topic", "deimos.consumer.dead_lettered.messages"),
    MetricSpec("skipped", "counter", "{message}", _CONSUMER,
               "messages given up on and skipped (on_error=skip or fatal_error)",
               "deimos.consumer.skipped.messages"),
    MetricSpec("db_producer.insert", "counter", "{message}", ("topic",),
               "messages the db backend stored in the outbox",
               "deimos.db_producer.inserted.messages"),
    MetricSpec("db_producer.process", "counter", "{message}", ("topic",),
               "outbox rows the DB producer processed (compacted rows count, not only sent)",
               "deimos.db_producer.processed.messages"),
    MetricSpec("pending_db_messages_count", "gauge", "{message}", ("topic",),
               "outbox rows waiting to be sent", "deimos.db_producer.pending.messages"),
    MetricSpec("pending_db_messages_max_wait", "gauge", "s", ("topic",),
               "age of the oldest outbox row waiting (0 with no topic tag when none waits)",
               "deimos.db_producer.pending.max_wait"),
    MetricSpec("db_poller.messages_processed", "counter", "{message}", ("poller",),
               "rows a DB poller published", "deimos.db_poller.processed.messages"),
    MetricSpec("db_poller.batches_processed", "counter", "{batch}", ("poller",),
               "poller batches published", "deimos.db_poller.batches",
               otel_attributes={"deimos.status": "success"}),
    MetricSpec("db_poller.batches_errored", "counter", "{batch}", ("poller",),
               "poller batches given up on after their retries", "deimos.db_poller.batches",
               otel_attributes={"deimos.status": "error"}),
)

#: deimos tag -> OpenTelemetry attribute; any other tag (global tags too) keeps its name
TAG_ATTRIBUTES: dict[str, str] = {
    "topic": "messaging.destination.name",
    "consumer_group": "messaging.consumer.group.name",
    "partition": "messaging.destination.partition.id",
    "status": "deimos.status",
    "time": "deimos.time",
    "poller": "deimos.poller",
    "broker": "deimos.kafka.broker",
    "bootstrap": "deimos.kafka.bootstrap",
    "client": "deimos.kafka.client",
}

#: attributes every OpenTelemetry measurement carries
COMMON_ATTRIBUTES: dict[str, str] = {"messaging.system": "kafka"}

_BY_NAME: dict[tuple[Kind, str], MetricSpec] = {}
_BY_VARIANT: dict[tuple[Kind, str, str], MetricSpec] = {}
_VARIANT_TAG: dict[tuple[Kind, str], str] = {}
for _spec in CATALOGUE:
    if _spec.variant is None:
        _BY_NAME[(_spec.kind, _spec.name)] = _spec
    else:
        _VARIANT_TAG[(_spec.kind, _spec.name)] = _spec.variant[0]
        _BY_VARIANT[(_spec.kind, _spec.name, _spec.variant[1])] = _spec


def lookup(kind: Kind, name: str, tags: Mapping[str, str]) -> MetricSpec:
    """The row for a measurement; names outside the catalogue get a generic row
    (``deimos.<name>``, unit ``1`` or ``s`` for timings) so nothing is dropped."""
    tag = _VARIANT_TAG.get((kind, name))
    if tag is not None:
        spec = _BY_VARIANT.get((kind, name, tags.get(tag, "")))
        if spec is not None:
            return spec
    else:
        spec = _BY_NAME.get((kind, name))
        if spec is not None:
            return spec
    return MetricSpec(name, kind, "s" if kind == "timing" else "1", tuple(tags),
                      "not in the catalogue", f"deimos.{name}")


def markdown_table() -> str:
    """The catalogue as the Markdown table of ``docs/metrics.md``."""
    rows = ["| deimos name | kind | tags | unit | description | OpenTelemetry instrument |",
            "| --- | --- | --- | --- | --- | --- |"]
    for s in CATALOGUE:
        name = f"`{s.name}`" + (f" `{s.variant[0]}:{s.variant[1]}`" if s.variant else "")
        extra = "".join(f" `{k}={v}`" for k, v in s.otel_attributes.items())
        rows.append(f"| {name} | {s.kind} | {', '.join(s.tags)} | `{s.unit}` | "
                    f"{s.description} | `{s.otel_name}`{extra} |")
    return "\n".join(rows)
