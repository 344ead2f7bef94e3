"""Fan-out of metrics and tracing to every enabled provider.

Providers are resolved once per settings; each call goes straight to the providers' bound
hook implementations. With no provider enabled every method is a cheap no-op, so the hot
path pays nothing for telemetry it does not use. A provider that raises is logged and never
breaks producing or consuming.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.plugins import PluginRegistry

log = logging.getLogger("deimos.telemetry")

_METRIC_HOOKS = ("increment", "gauge", "histogram", "time")


class Spans:
    """The spans one ``Telemetry.span`` opened, one per tracing provider."""

    __slots__ = ("_carrier", "_items")

    def __init__(self, items: list[tuple[Any, Any]]):
        self._items = items  # (provider, span handle)
        self._carrier: dict[str, bytes] | None = None

    def set_error(self, exc: BaseException) -> None:
        for provider, span in self._items:
            if provider.set_error is not None:
                _safe(provider.set_error, span, exc)

    def inject(self, headers: MutableMapping[str, bytes]) -> None:
        """Add the trace context of these spans to ``headers``.

        A span's context does not change while it is open, so the providers' ``inject``
        hooks run once per span and every later message (a publish chunk injects into each
        of its messages) gets a copy of the same headers.
        """
        carrier = self._carrier
        if carrier is None:
            carrier = {}
            for provider, span in self._items:
                if provider.inject is not None:
                    _safe(provider.inject, span, carrier)
            self._carrier = carrier
        if carrier:
            headers.update(carrier)

    def finish(self) -> None:
        for provider, span in self._items:
            _safe(provider.finish, span)


_NO_SPANS = Spans([])


class _Tracer:
    __slots__ = ("finish", "inject", "name", "set_error", "start")

    def __init__(self, name: str, registry: PluginRegistry) -> None:
        self.name = name
        start = registry.caller("tracing", name, "deimos_tracing_start")
        finish = registry.caller("tracing", name, "deimos_tracing_finish")
        # the registry refuses tracing providers without these two hooks
        assert start is not None and finish is not None
        self.start: Callable[..., Any] = start
        self.finish: Callable[..., Any] = finish
        self.set_error = registry.caller("tracing", name, "deimos_tracing_set_error")
        self.inject = registry.caller("tracing", name, "deimos_tracing_inject")


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # telemetry must never break message flow
        log.exception("telemetry provider failed in %s", getattr(fn, "__qualname__", fn))
        return None


class Telemetry:
    """Metrics and tracing for one settings object."""

    def __init__(
        self,
        registry: PluginRegistry,
        metrics: Sequence[str] = (),
        tracing: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        configure: Callable[[str, str], None] | None = None,
    ) -> None:
        self.global_tags = dict(tags or {})
        self._merged: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}
        self._metrics: dict[str, list[Callable[..., Any]]] = {h: [] for h in _METRIC_HOOKS}
        for name in metrics:
            if configure:
                configure("metrics", name)
            for hook in _METRIC_HOOKS:
                fn = registry.caller("metrics", name, f"deimos_metrics_{hook}")
                if fn is not None:
                    self._metrics[hook].append(fn)
        self._tracers = []
        for name in tracing:
            if configure:
                configure("tracing", name)
            self._tracers.append(_Tracer(name, registry))
        self.metrics_enabled = any(self._metrics.values())
        self.tracing_enabled = bool(self._tracers)

    def _tags(self, tags: Mapping[str, str] | None) -> Mapping[str, str]:
        if not self.global_tags:
            return tags or {}
        if tags is None:
            return self.global_tags
        # producers and consumers pass long-lived tag dicts: merge each once, not per call
        hit = self._merged.get(id(tags))
        if hit is not None and hit[0] is tags:
            return hit[1]
        merged = {**self.global_tags, **tags}
        if len(self._merged) > 4096:
            self._merged.clear()
        self._merged[id(tags)] = (tags, merged)
        return merged

    def _emit(self, hook: str, name: str, value: Any, tags: Mapping[str, str] | None) -> None:
        fns = self._metrics[hook]
        if not fns:
            return
        merged = self._tags(tags)
        for fn in fns:
            _safe(fn, name, value, merged)

    def increment(self, name: str, value: int = 1, tags: Mapping[str, str] | None = None) -> None:
        self._emit("increment", name, value, tags)

    def gauge(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._emit("gauge", name, value, tags)

    def histogram(self, name: str, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._emit("histogram", name, value, tags)

    def timing(self, name: str, seconds: float, tags: Mapping[str, str] | None = None) -> None:
        self._emit("time", name, seconds, tags)

    @contextmanager
    def time(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[None]:
        """Time the block and report it to every provider's ``time`` hook."""
        if not self._metrics["time"]:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, time.perf_counter() - start, tags)

    def start_span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        parent_headers: Mapping[str, bytes] | None = None,
        links: Sequence[Mapping[str, bytes]] | None = None,
    ) -> Spans:
        if not self._tracers:
            return _NO_SPANS
        items = []
        for tracer in self._tracers:
            span = _safe(tracer.start, name, attributes, parent_headers, links)
            items.append((tracer, span))
        return Spans(items)

    @contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, Any],
        parent_headers: Mapping[str, bytes] | None = None,
        links: Sequence[Mapping[str, bytes]] | None = None,
    ) -> Iterator[Spans]:
        """A span in every tracing provider; an exception marks it as an error."""
        if not self._tracers:
            yield _NO_SPANS
            return
        spans = self.start_span(name, attributes, parent_headers, links)
        try:
            yield spans
        except BaseException as exc:
            spans.set_error(exc)
            raise
        finally:
            spans.finish()
