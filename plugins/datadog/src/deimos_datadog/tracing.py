"""The ``datadog`` tracing provider: deimos spans as ddtrace spans (extra ``datadog-tracing``).

Only ddtrace's public API is used: ``tracer.start_span``, ``Span.link_span`` and
``HTTPPropagator``, so the headers written are whatever propagation styles ddtrace is
configured for (by default ``x-datadog-*`` plus W3C ``traceparent``/``tracestate``).
ddtrace is imported when the provider is first configured, never when deimos loads its
plugins, so installing it costs nothing to services that do not trace with it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from deimos.config import Settings
from deimos.errors import DeimosError
from deimos.hookspecs import hookimpl
from deimos_datadog.settings import DatadogSettings

#: spans keep at most this many links (one per distinct producer span of a batch)
MAX_LINKS = 128


def _header_filter(styles: Sequence[str]) -> Any:
    """Which of the headers ddtrace injected to keep, by propagation style."""
    exact: set[str] = set()
    prefixes: list[str] = []
    if "tracecontext" in styles:
        exact |= {"traceparent", "tracestate"}
    if "datadog" in styles:
        prefixes.append("x-datadog-")
    if "b3" in styles:
        exact.add("b3")
        prefixes.append("x-b3-")
    pref = tuple(prefixes)
    return lambda name: name in exact or (bool(pref) and name.startswith(pref))


def _text_headers(headers: Mapping[str, bytes]) -> dict[str, str]:
    """Kafka's bytes headers as the ``str`` carrier HTTPPropagator reads."""
    return {k: v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)
            for k, v in headers.items() if v is not None}


class DDSpan:
    """A deimos span handle: the ddtrace span and the headers injected for it (computed
    once: every message of a publish chunk carries the same context)."""

    __slots__ = ("carrier", "previous", "span")

    def __init__(self, span: Any, previous: Any) -> None:
        self.span = span
        self.previous = previous  # what was active before: restored on finish
        self.carrier: dict[str, bytes] | None = None


class DatadogTracer:
    """Spans through ddtrace; the consumer's span continues the producer's trace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracer: Any = None
        self._propagator: Any = None
        self.service: str | None = None
        self._keep = _header_filter(["tracecontext"])

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[DatadogSettings]]:
        return {"datadog": DatadogSettings}

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        section = settings.section("datadog")
        self.service = section.service
        self._keep = _header_filter(section.propagation)
        self._load()

    def _load(self) -> Any:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    try:
                        from ddtrace.propagation.http import HTTPPropagator
                        from ddtrace.trace import tracer
                    except ImportError as exc:
                        raise DeimosError(
                            "the datadog tracing provider needs ddtrace: "
                            'pip install "deimos-kafka[datadog-tracing]"') from exc
                    self._propagator = HTTPPropagator
                    self._tracer = tracer
        return self._tracer

    def _extract(self, headers: Mapping[str, bytes]) -> Any:
        ctx = self._propagator.extract(_text_headers(headers))
        return ctx if ctx.trace_id is not None else None

    @hookimpl
    def deimos_tracing_start(self, name: str, attributes: Mapping[str, Any],
                             parent_headers: Mapping[str, bytes] | None,
                             links: Sequence[Mapping[str, bytes]] | None) -> DDSpan:
        tracer = self._tracer or self._load()
        op = attributes.get("messaging.operation.type")
        consumer = op in ("process", "receive", "deliver")
        active = tracer.context_provider.active()
        parent = self._extract(parent_headers) if parent_headers else None
        span = tracer.start_span(
            f"kafka.{'process' if consumer else 'produce'}",
            child_of=parent or active,  # no remote parent: a child of the application's span
            service=self.service,
            resource=attributes.get("messaging.destination.name") or name,
            span_type="worker" if consumer else None,
            activate=True,  # handler code (DB calls ...) becomes part of this span
        )
        span.set_tag("span.kind", "consumer" if consumer else "producer")
        span.set_tag("component", "deimos")
        for key, value in attributes.items():
            span.set_tag(key, value)
        if links:
            seen: set[bytes] = set()
            for headers in links:
                if not headers:
                    continue
                ids = headers.get("x-datadog-parent-id") or headers.get("traceparent")
                if ids is None or ids in seen:
                    continue  # messages of one publish call share their producer span
                seen.add(ids)
                ctx = self._extract(headers)
                if ctx is not None:
                    span.link_span(ctx, {"messaging.operation.type": "send"})
                if len(seen) >= MAX_LINKS:
                    break
        return DDSpan(span, active)

    @hookimpl
    def deimos_tracing_finish(self, span: DDSpan) -> None:
        span.span.finish()
        provider = self._tracer.context_provider
        if provider.active() is not span.previous:
            provider.activate(span.previous)

    @hookimpl
    def deimos_tracing_set_error(self, span: DDSpan, exception: BaseException) -> None:
        span.span.set_exc_info(type(exception), exception, exception.__traceback__)

    @hookimpl
    def deimos_tracing_inject(self, span: DDSpan, headers: MutableMapping[str, bytes]) -> None:
        carrier = span.carrier
        if carrier is None:
            text: dict[str, str] = {}
            self._propagator.inject(span.span.context, text)
            keep = self._keep
            carrier = span.carrier = {k: v.encode("latin-1") for k, v in text.items()
                                      if keep(k.lower())}
        headers.update(carrier)
