"""The ``otel`` tracing provider: deimos spans as OpenTelemetry spans.

Spans follow the messaging semantic conventions: named ``{operation} {destination}``
(``send orders``, ``process orders``), kind ``PRODUCER`` for sends and ``CONSUMER`` for
processing, ``messaging.*`` attributes as deimos passes them, ``error.type`` and an ERROR
status on failure. Trace context travels in the message headers through the globally
configured propagator (W3C ``traceparent``/``tracestate`` unless the application chose
another), read and written through a carrier adapter over Kafka's bytes headers. A consumer
span continues the producer's trace; a batch span links to each distinct producer span.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from deimos.config import Settings
from deimos.hookspecs import hookimpl
from deimos_otel import _scope

#: a span keeps at most this many links (the SDK's default span limit)
MAX_LINKS = 128

#: deimos operation type -> (semantic-convention operation type, Kafka operation name)
_OPERATIONS = {"publish": ("send", "send"), "send": ("send", "send"),
               "create": ("create", "create"), "receive": ("receive", "poll"),
               "process": ("process", "process")}


class BytesGetter:
    """Reads ``str`` values out of Kafka headers (``Mapping[str, bytes]``) for propagators."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        return [value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class StrSetter:
    """Collects what a propagator injects (then encoded once for every message)."""

    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key] = value


GETTER = BytesGetter()
SETTER = StrSetter()


class OtelSpan:
    """A deimos span handle: the span, the context token to detach on finish, and the
    headers injected for it (computed once per span)."""

    __slots__ = ("carrier", "span", "token")

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self.token = token
        self.carrier: dict[str, bytes] | None = None


class OtelTracer:
    """Spans from the ``deimos_otel`` tracer of the global ``TracerProvider``."""

    def __init__(self) -> None:
        self._tracer: Any = None
        self._api: Any = None

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        self._load()

    def _load(self) -> Any:
        # imported on first use: loading deimos's plugins must stay cheap
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        self._api = (context, propagate, trace, Link, SpanKind, Status, StatusCode)
        self._tracer = trace.get_tracer(_scope.NAME, _scope.VERSION)
        return self._tracer

    @hookimpl
    def deimos_tracing_start(self, name: str, attributes: Mapping[str, Any],
                             parent_headers: Mapping[str, bytes] | None,
                             links: Sequence[Mapping[str, bytes]] | None) -> OtelSpan:
        tracer = self._tracer or self._load()
        context, propagate, trace, Link, SpanKind, _, _ = self._api
        attrs = dict(attributes)
        op_type, op_name = _OPERATIONS.get(str(attrs.get("messaging.operation.type")),
                                           (None, None))
        if op_type is not None:
            attrs["messaging.operation.type"] = op_type
            attrs.setdefault("messaging.operation.name", op_name)
        dest = attrs.get("messaging.destination.name")
        if op_name is not None and dest is not None:
            name = f"{op_name} {dest}"
        if attrs.get("messaging.batch.message_count") == 1:
            del attrs["messaging.batch.message_count"]  # set for batches only
        parent = propagate.extract(parent_headers, getter=GETTER) if parent_headers else None
        span_links = None
        if links:
            span_links = []
            seen: set[Any] = set()
            for headers in links:
                raw = headers.get("traceparent") if headers else None
                if raw is None or raw in seen:
                    continue  # messages of one publish call share their producer span
                seen.add(raw)
                sc = trace.get_current_span(propagate.extract(headers, getter=GETTER)
                                            ).get_span_context()
                if sc.is_valid:
                    span_links.append(Link(sc))
                if len(span_links) >= MAX_LINKS:
                    break
        kind = SpanKind.CONSUMER if op_type in ("process", "receive") else SpanKind.PRODUCER
        span = tracer.start_span(name, context=parent, kind=kind, attributes=attrs,
                                 links=span_links)
        # current while the handler or backend runs: its own spans become children
        token = context.attach(trace.set_span_in_context(span))
        return OtelSpan(span, token)

    @hookimpl
    def deimos_tracing_finish(self, span: OtelSpan) -> None:
        self._api[0].detach(span.token)
        span.span.end()

    @hookimpl
    def deimos_tracing_set_error(self, span: OtelSpan, exception: BaseException) -> None:
        Status, StatusCode = self._api[5], self._api[6]
        s = span.span
        s.record_exception(exception)
        s.set_attribute("error.type", f"{type(exception).__module__}."
                                      f"{type(exception).__qualname__}")
        s.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))

    @hookimpl
    def deimos_tracing_inject(self, span: OtelSpan, headers: MutableMapping[str, bytes]) -> None:
        carrier = span.carrier
        if carrier is None:
            _, propagate, trace, *_ = self._api
            text: dict[str, str] = {}
            propagate.inject(text, context=trace.set_span_in_context(span.span),
                             setter=SETTER)
            carrier = span.carrier = {k: v.encode("latin-1") for k, v in text.items()}
        headers.update(carrier)
