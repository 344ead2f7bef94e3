"""The whole plugin contract of deimos.

Every implementation (built-in or third-party) is a plugin object registered under one entry
point group per kind:

==========================  ============================  =======================================
kind                        entry-point group             hooks it may implement
==========================  ============================  =======================================
producer backend            ``deimos.producer_backends``  ``deimos_backend_*``
schema backend              ``deimos.schema_backends``    ``deimos_schema_*``
metrics provider            ``deimos.metrics``            ``deimos_metrics_*``
tracing provider            ``deimos.tracing``            ``deimos_tracing_*``
==========================  ============================  =======================================

Every kind may also implement the general hooks (``deimos_configure``,
``deimos_settings_sections``, ``deimos_cli_commands``, ``deimos_http_routes``,
``deimos_event``, ``deimos_registry_compatibility``, ``deimos_consumer_inbox``).

Producer and schema backends are *selected*: only the plugin that configuration names is
called. Metrics and tracing *fan out*: every enabled provider is called. deimos resolves the
implementation once and calls it directly, so the hot path never goes through pluggy's
dispatch; pluggy still validates every implementation against these specs when it loads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from deimos.config import ConsumerSettings, Settings
    from deimos.consumer.inbox import ConsumerInbox
    from deimos.message import Message, ProduceContext
    from deimos.schema.base import SchemaContext, SchemaField

PROJECT_NAME = "deimos"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------------
# General hooks (any kind)
# --------------------------------------------------------------------------------------------


@hookspec
def deimos_configure(settings: Settings) -> None:
    """Called once when deimos first uses this plugin under a settings object, and again
    whenever settings are replaced (``deimos.configure``).

    :param settings: the validated settings; a plugin reads its own section from it
        (``settings.section("avro")``).
    :returns: nothing.
    """


@hookspec
def deimos_settings_sections() -> Mapping[str, type[BaseModel]]:
    """Called when the settings model is built, before validation.

    :returns: a mapping of top-level section name to a pydantic model class; the section is
        validated with the rest of the settings (unknown keys and wrong types fail with their
        dotted path) and defaults to the model's defaults.
    """


@hookspec
def deimos_cli_commands() -> Sequence[click.Command]:
    """Called when the ``deimos`` command line starts.

    :returns: click commands added to ``deimos`` (for example ``db-producer``).
    """


@hookspec
def deimos_http_routes() -> Mapping[str, Callable[[], tuple[int, str, bytes]]]:
    """Called when the health server of ``deimos run``, ``db-producer`` or ``db-poller``
    starts, on each metrics provider ``metrics.providers`` enables.

    :returns: a mapping of path (``"/metrics"``) to a function that answers a ``GET`` of it
        with ``(HTTP status, content type, body)``; it runs on the server's thread.
    """


@hookspec
def deimos_event(name: str, payload: Mapping[str, Any]) -> None:
    """An instrumentation event (Ruby Deimos's Karafka monitor events), called on the
    enabled metrics and tracing providers and the selected producer and schema backends that
    implement it.

    :param name: ``deimos.encode_message``, ``deimos.outbox.produce``,
        ``deimos.batch_consumption.valid_records``, ``invalid_records``,
        ``initial_failure`` or ``deimos.inbox.committed`` (see :mod:`deimos.events`).
    :param payload: the event's values; read them, do not keep or change them.
    :returns: nothing. With no implementation deimos builds no payload; an exception is
        logged and does not reach the code that emitted the event.
    """


@hookspec
def deimos_registry_compatibility(schema_type: str, reader: str, writer: str
                                  ) -> list[str] | None:
    """Whether data written with schema ``writer`` can be read with schema ``reader``, for
    the development registry's ``POST /compatibility/...`` (a real registry checks by
    itself).

    Called on every installed plugin until one knows ``schema_type`` (``AVRO``,
    ``PROTOBUF``, ``JSON``); the registry applies the subject's compatibility level
    (``BACKWARD`` asks with the new schema as reader, ``FORWARD`` as writer, ``FULL`` both,
    ``*_TRANSITIVE`` against every version).

    :param reader: the reading schema's text as registered.
    :param writer: the writing schema's text as registered.
    :returns: ``None`` when this plugin does not check ``schema_type``, else the
        incompatibilities found (empty: compatible).
    """


@hookspec
def deimos_consumer_inbox(handler: Any, settings: ConsumerSettings) -> ConsumerInbox | None:
    """Called once per consumer built with ``inbox = true``, on every installed plugin.

    :param handler: the consumer instance (a ``Consumer`` or ``BatchConsumer``).
    :param settings: its resolved consumer settings.
    :returns: a :class:`deimos.consumer.inbox.ConsumerInbox` that wraps the handler's calls
        (each in one transaction that records the message and skips redelivered ones), or
        None when this plugin keeps no inbox. Exactly one installed plugin may answer; with
        none, the consumer fails to start with a :class:`deimos.errors.ConfigError`.
    """


# --------------------------------------------------------------------------------------------
# Producer backends (group ``deimos.producer_backends``)
# --------------------------------------------------------------------------------------------


@hookspec
def deimos_backend_execute(
    context: ProduceContext, messages: Sequence[Message], sync: bool
) -> None:
    """Deliver one batch of already encoded messages. Required for producer backends.

    Called by a producer once per batch (at most ``producers.max_batch_size`` messages, all
    for ``context.topic``) after every message was validated, coerced and encoded.

    :param context: the producing class, topic, settings and telemetry of this call.
    :param messages: the messages; ``encoded_key``/``encoded_payload`` hold the bytes to send
        (``encoded_payload`` is ``None`` for a tombstone), ``partition_key`` the bytes to
        partition on, ``headers`` a list of ``(name, bytes)``.
    :param sync: when true, return only after every message is durably accepted and raise on
        any failure; when false, the backend may return at once and report failures through
        ``context.on_error``.
    :returns: nothing; raises :class:`deimos.errors.PublishError` on a synchronous failure.
    """


@hookspec
def deimos_backend_sender(context: ProduceContext) -> Callable[[Message], None] | None:
    """Optional: a callable that sends *one* message asynchronously for ``context``.

    Why: a per-message ``publish()`` is the commonest way to publish, and a batch API pays
    for lists and loops it does not need. deimos asks once per producer and topic, then calls
    the result for each ``publish()`` that is asynchronous, has no partition key and is not
    traced; everything else still goes through :func:`deimos_backend_execute`.

    The callable must behave exactly as ``deimos_backend_execute(context, [message],
    sync=False)``: return once the message is accepted, report a later failure through
    ``context.on_error``, raise :class:`deimos.errors.PublishError` when the message is
    refused.

    :returns: the sender, or ``None`` to keep every message on ``deimos_backend_execute``.
    """


@hookspec
def deimos_backend_execute_async(
    context: ProduceContext, messages: Sequence[Message], sync: bool
) -> Awaitable[None]:
    """Optional: ``deimos_backend_execute`` for ``apublish``/``apublish_list``, called on the
    event loop's thread; it must never block it (wait by awaiting).

    A backend without it is run by ``apublish`` in a worker thread (``asyncio.to_thread``,
    context variables carried over), so it never blocks the event loop either.

    :returns: an awaitable that ends when the messages are accepted (``sync`` false) or
        durably delivered (``sync`` true); raises as ``deimos_backend_execute`` does.
    """


@hookspec
def deimos_backend_async_sender(context: ProduceContext) -> Callable[[Message], bool] | None:
    """Optional: a callable that queues *one* message for ``apublish`` without blocking and
    without awaiting anything, or says it cannot.

    Why: a per-message ``apublish`` whose message is simply queued needs no coroutine of
    the backend's (each costs the event loop thread a frame and an ``await``). deimos asks
    once per producer and topic, then calls the result, on the event loop's thread, for
    each ``apublish`` that is asynchronous, has no partition key and is not traced.

    The callable returns True once the message is accepted exactly as
    ``deimos_backend_execute_async(context, [message], sync=False)`` would accept it, and
    False when accepting it would mean waiting (a full local queue, say) or anything else
    the general path handles: the same message then goes through
    ``deimos_backend_execute_async``. It must never block.

    :returns: the sender, or ``None`` to keep every ``apublish`` on
        ``deimos_backend_execute_async``.
    """


@hookspec
def deimos_backend_flush(timeout: float) -> int:
    """Called on shutdown and by ``deimos.flush()``: wait up to ``timeout`` seconds for
    asynchronously sent messages.

    :returns: the number of messages still not delivered (0 when all were).
    """


@hookspec
def deimos_backend_close() -> None:
    """Called when deimos is reconfigured or shuts down: release connections.

    :returns: nothing.
    """


# --------------------------------------------------------------------------------------------
# Schema backends (group ``deimos.schema_backends``)
# --------------------------------------------------------------------------------------------


@hookspec
def deimos_schema_encode(context: SchemaContext, payloads: Sequence[Any]) -> list[bytes | None]:
    """Encode payloads (already coerced) for ``context.topic``. Required.

    Called once per batch by producers. A ``None`` payload is a tombstone and encodes to
    ``None``. This is the producers' validation: a payload that does not fit the schema
    raises :class:`deimos.errors.SchemaValidationError` naming every invalid field, before
    anything of the call is sent.

    :param context: schema, namespace, topic, key config and a ``cache`` dict the plugin may
        use to keep parsed schemas and registry ids for the life of the producer.
    :param payloads: the payloads (dicts, or instances the backend understands).
    :returns: one ``bytes`` (or ``None``) per payload, in order.
    """


@hookspec
def deimos_schema_decode(context: SchemaContext, data: Sequence[bytes | None]) -> list[Any]:
    """Decode message values read from ``context.topic``. Required.

    Called once per polled batch by consumers. ``None`` (a tombstone) decodes to ``None``.

    :returns: one decoded payload per input, in order; raises
        :class:`deimos.errors.DecodeError` naming the topic when a value cannot be decoded.
    """


@hookspec
def deimos_schema_encode_key(context: SchemaContext, keys: Sequence[Any]) -> list[bytes | None]:
    """Encode message keys according to ``context.key_config``.

    Called once per batch by producers for key configs other than ``none``. With
    ``field: name`` the backend may generate a key schema holding that one field; with
    ``schema: X`` it uses schema ``X``; with ``plain`` it encodes the key as UTF-8 text.

    :returns: one ``bytes`` (or ``None`` for a missing key) per key, in order.
    """


@hookspec
def deimos_schema_encoder(context: SchemaContext, role: str
                          ) -> Callable[[Any], bytes | None] | None:
    """Optional: an encoder of *one* value (``role="value"``) or key (``role="key"``).

    Why: ``publish()`` sends one message per call, and the list shape of
    :func:`deimos_schema_encode` (a tuple in, a list out, a loop) costs more than the encoding
    of a small message. deimos asks once per producer and topic, at its first publish (a
    registry may be consulted then), and calls the result for each ``publish()``.

    ``encoder(x)`` must return exactly what ``deimos_schema_encode(context, [x])[0]`` (or
    ``deimos_schema_encode_key``) returns and raise the same errors; the conformance suite
    checks it.

    :returns: the encoder, or ``None`` to use the list hooks.
    """


@hookspec
def deimos_schema_decode_key(context: SchemaContext, data: Sequence[bytes | None]) -> list[Any]:
    """Decode message keys read from ``context.topic``; ``field`` keys decode back to the
    scalar value of that field.

    :returns: one decoded key per input, in order.
    """


@hookspec
def deimos_schema_validate(context: SchemaContext, payload: Any) -> None:
    """Check ``payload`` against the schema without encoding it.

    Not on the publish path (coerce and encode already refuse an invalid payload there, and
    a second full check per message would double the cost): the test helpers call it
    (``consume_message``, ``assert_sent``), the conformance suite checks it, and applications
    reach it through ``Producer.validate(payload)``.

    :returns: nothing; raises :class:`deimos.errors.SchemaValidationError` listing *every*
        invalid field with its path (``widget.tags[2]``).
    """


@hookspec
def deimos_schema_coerce(context: SchemaContext, payload: Any) -> Any:
    """Convert a payload to the types the schema expects (``"12"`` to ``12`` for a long,
    ``datetime`` to ``timestamp-millis`` ...). Called by producers for each payload before
    encoding.

    :returns: the coerced payload; raises :class:`deimos.errors.CoercionError` naming the field
        path, expected type and the value's type when a value cannot be converted.
    """


@hookspec
def deimos_schema_checker(context: SchemaContext) -> Callable[[Any], bool] | None:
    """Optional: a function telling whether a payload needs no coercion at all.

    Why: a producer coerces every payload before encoding it, and the call of
    :func:`deimos_schema_coerce` per message (a frame, its context lookups) costs
    ``publish_list`` of a small record about 2 % of its time even when every
    payload is already right, as most are. With a checker, deimos checks all the dict
    payloads of a call in one pass and calls ``deimos_schema_coerce`` only when one fails
    it. Asked once per producer and topic, at its first publish.

    ``checker(payload)`` is called with dict payloads only. It may return ``True`` only
    when ``deimos_schema_coerce(context, payload)`` would return ``payload`` itself,
    unchanged; ``False`` costs nothing but the slower path. It must not raise. The
    conformance suite checks it.

    :returns: the checker, or ``None`` to coerce every payload.
    """


@hookspec
def deimos_schema_native_types(context: SchemaContext) -> Sequence[type] | None:
    """Optional: the classes whose instances are already what the schema expects, whatever
    they hold (the schema's generated Protobuf message class, say).

    Why: a producer prepares every payload that is not a dict or text one by one before
    encoding it (a schema-class instance becomes a dict, the coercion hook is called), and
    for a payload the plugin takes as it is that is all overhead: measured, half the CPU of
    a ``publish_list`` of Protobuf message objects. A payload whose type is exactly one of
    these (not a subclass) goes to the encoders without that step, when its key is given or
    not needed. Asked once per producer and topic, at its first publish.

    ``deimos_schema_coerce(context, payload)`` must return such a payload itself, and the
    encoders must take it; the conformance suite checks both.

    :returns: the classes, or ``None`` (or empty) when there are none.
    """


@hookspec
def deimos_schema_fields(context: SchemaContext) -> list[SchemaField]:
    """Describe the fields of ``context.schema`` (record consumers and producers map them to
    columns).

    :returns: one :class:`deimos.schema.base.SchemaField` per field, in schema order.
    """


@hookspec
def deimos_schema_mock(context: SchemaContext) -> str:
    """Called by the test helpers to choose this backend's stand-in.

    :returns: the name of the schema backend used in its place in tests (for example
        ``avro_validation`` for ``avro_schema_registry``); the stand-in still validates.
    """



@hookspec
def deimos_schema_registry_schemas(context: SchemaContext) -> list[tuple[str, Any]]:
    """Optional: the schemas this backend would register for ``context``, as ``(subject,
    confluent_kafka.schema_registry.Schema)`` pairs (the value's, and the key's for
    ``field``/``schema`` key configs), without registering them.

    ``deimos schemas check --against-registry`` asks the registry whether each is compatible
    with the subject's latest version under the subject's compatibility level, so a CI job
    catches an incompatible schema change before a producer is deployed with it.

    :returns: the pairs; an empty list when the backend uses no registry.
    """

# --------------------------------------------------------------------------------------------
# Metrics providers (group ``deimos.metrics``)
# --------------------------------------------------------------------------------------------


@hookspec
def deimos_metrics_increment(name: str, value: int, tags: Mapping[str, str]) -> None:
    """Add ``value`` to counter ``name`` (for example ``handler`` with ``status:success``).

    Called once per batch with the batch's count, never once per message.
    """


@hookspec
def deimos_metrics_gauge(name: str, value: float, tags: Mapping[str, str]) -> None:
    """Set gauge ``name`` to ``value`` (for example ``consumer_lag``)."""


@hookspec
def deimos_metrics_histogram(name: str, value: float, tags: Mapping[str, str]) -> None:
    """Record ``value`` in histogram ``name`` (for example a batch size)."""


@hookspec
def deimos_metrics_time(name: str, seconds: float, tags: Mapping[str, str]) -> None:
    """Record a duration deimos measured around a block of work (Ruby Deimos's ``time``):
    ``seconds`` is the elapsed wall time; providers convert to their unit.
    """


# --------------------------------------------------------------------------------------------
# Tracing providers (group ``deimos.tracing``)
# --------------------------------------------------------------------------------------------


@hookspec
def deimos_tracing_start(
    name: str,
    attributes: Mapping[str, Any],
    parent_headers: Mapping[str, bytes] | None,
    links: Sequence[Mapping[str, bytes]] | None,
) -> Any:
    """Start a span. Required for tracing providers.

    :param name: span name (``"<topic> publish"``, ``"<topic> process"`` ...).
    :param attributes: OpenTelemetry messaging attributes (``messaging.system`` ...).
    :param parent_headers: headers of the consumed message whose trace this span continues,
        or ``None``.
    :param links: for a batch, the headers of every message in it, to link their traces.
    :returns: an opaque span handle passed back to ``finish``/``set_error``/``inject``.
    """


@hookspec
def deimos_tracing_finish(span: Any) -> None:
    """End a span started by this provider. Required for tracing providers."""


@hookspec
def deimos_tracing_set_error(span: Any, exception: BaseException) -> None:
    """Mark ``span`` as failed with ``exception`` (called before ``finish``)."""


@hookspec
def deimos_tracing_inject(span: Any, headers: MutableMapping[str, bytes]) -> None:
    """Put the trace context of ``span`` into outgoing message ``headers`` (W3C
    ``traceparent`` for OpenTelemetry, ``x-datadog-*`` for Datadog)."""
