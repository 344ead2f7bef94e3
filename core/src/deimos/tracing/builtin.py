"""Built-in tracing providers: ``log`` and ``mock``.

Both carry a minimal trace context in the ``deimos-trace-id`` header, so a trace can be
followed across Kafka even without OpenTelemetry or Datadog installed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deimos.hookspecs import hookimpl

log = logging.getLogger("deimos.tracing")

TRACE_HEADER = "deimos-trace-id"


@dataclass
class SimpleSpan:
    name: str
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    parent_trace_id: str | None
    links: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)
    duration: float | None = None
    error: BaseException | None = None


def _trace_id(headers: Mapping[str, Any] | None) -> str | None:
    if not headers:
        return None
    raw = headers.get(TRACE_HEADER)
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)


class _SimpleTracer:
    @hookimpl
    def deimos_tracing_start(self, name: str, attributes: Mapping[str, Any],
                             parent_headers: Mapping[str, bytes] | None,
                             links: Sequence[Mapping[str, bytes]] | None) -> SimpleSpan:
        parent = _trace_id(parent_headers)
        linked = [t for t in (_trace_id(h) for h in links or ()) if t]
        return SimpleSpan(name, dict(attributes), parent or uuid.uuid4().hex,
                          uuid.uuid4().hex[:16], parent, linked)

    @hookimpl
    def deimos_tracing_set_error(self, span: SimpleSpan, exception: BaseException) -> None:
        span.error = exception

    @hookimpl
    def deimos_tracing_inject(self, span: SimpleSpan, headers: MutableMapping[str, bytes]) -> None:
        headers[TRACE_HEADER] = span.trace_id.encode()


class LogTracer(_SimpleTracer):
    """Logs each finished span with its duration, trace id and attributes at DEBUG."""

    @hookimpl
    def deimos_tracing_finish(self, span: SimpleSpan) -> None:
        span.duration = time.perf_counter() - span.start
        log.debug("span %s trace=%s %.6fs%s %s", span.name, span.trace_id, span.duration,
                  f" error={span.error!r}" if span.error else "", span.attributes)


class MockTracer(_SimpleTracer):
    """Keeps finished spans in ``spans`` for assertions in tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[SimpleSpan] = []

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()

    @hookimpl
    def deimos_tracing_finish(self, span: SimpleSpan) -> None:
        span.duration = time.perf_counter() - span.start
        with self._lock:
            self.spans.append(span)
