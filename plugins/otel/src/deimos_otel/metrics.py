"""The ``otel`` metrics provider: deimos's catalogue as OpenTelemetry instruments.

Every row of :data:`deimos.metrics.catalogue.CATALOGUE` maps to one instrument of the
``deimos_otel`` meter (counters to ``Counter``, timings and histograms to ``Histogram`` in
seconds, gauges to ``ObservableGauge`` reporting the last value set per attribute set), and
deimos tags map to attributes (``topic`` to ``messaging.destination.name`` ...). Instruments
and attribute sets are built once and cached, so a measurement is a dictionary lookup and
one ``add``/``record`` call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from deimos.config import Settings
from deimos.hookspecs import hookimpl
from deimos.metrics.catalogue import COMMON_ATTRIBUTES, TAG_ATTRIBUTES, Kind, lookup
from deimos_otel import _scope

_CACHE_MAX = 4096

Attributes = dict[str, str]


def attributes_for(tags: Mapping[str, str], extra: Mapping[str, str]) -> Attributes:
    """OpenTelemetry attributes of a measurement with deimos ``tags``."""
    out = dict(COMMON_ATTRIBUTES)
    for k, v in tags.items():
        out[TAG_ATTRIBUTES.get(k, k)] = v
    out.update(extra)
    return out


class _Gauge:
    """Last values of one observable gauge, reported at each collection."""

    __slots__ = ("lock", "values")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[tuple[tuple[str, str], ...], tuple[float, Attributes]] = {}

    def set(self, value: float, attrs: Attributes) -> None:
        with self.lock:
            self.values[tuple(attrs.items())] = (value, attrs)

    def observe(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self.lock:
            items = list(self.values.values())
        return [Observation(v, a) for v, a in items]


class OtelMetrics:
    """Counters, histograms and observable gauges from the ``deimos_otel`` meter.

    The meter comes from the global ``MeterProvider`` (a no-op until the application
    installs the SDK); it is looked up when deimos configures the provider.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meter: Any = None
        self._instruments: dict[tuple[str, str], Any] = {}
        self._gauges: dict[str, _Gauge] = {}
        # (kind, name, tags) -> (record function, attributes)
        self._resolved: dict[tuple[Any, ...], tuple[Any, Attributes]] = {}

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(_scope.NAME, _scope.VERSION)
        with self._lock:
            if meter is not self._meter:
                self._meter = meter
                self._instruments.clear()
                self._gauges.clear()
                self._resolved.clear()

    def _meter_or_default(self) -> Any:
        if self._meter is None:
            from opentelemetry import metrics

            self._meter = metrics.get_meter(_scope.NAME, _scope.VERSION)
        return self._meter

    def _resolve(self, kind: Kind, name: str, tags: Mapping[str, str]) -> tuple[Any, Attributes]:
        key = (kind, name, tuple(tags.items()))
        got = self._resolved.get(key)
        if got is not None:
            return got
        spec = lookup(kind, name, tags)
        attrs = attributes_for(tags, spec.otel_attributes)
        with self._lock:
            meter = self._meter_or_default()
            inst = self._instruments.get((kind, spec.otel_name))
            if inst is None:
                desc = f"{spec.description} (deimos: {spec.name})"
                if kind == "counter":
                    inst = meter.create_counter(spec.otel_name, spec.unit, desc).add
                elif kind == "gauge":
                    gauge = self._gauges[spec.otel_name] = _Gauge()
                    meter.create_observable_gauge(spec.otel_name, [gauge.observe], spec.unit,
                                                  desc)
                    inst = gauge.set
                else:
                    inst = meter.create_histogram(spec.otel_name, spec.unit, desc).record
                self._instruments[(kind, spec.otel_name)] = inst
            if len(self._resolved) >= _CACHE_MAX:
                self._resolved.clear()
            got = self._resolved[key] = (inst, attrs)
        return got

    @hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        fn, attrs = self._resolve("counter", name, tags)
        fn(value, attrs)

    @hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        fn, attrs = self._resolve("gauge", name, tags)
        fn(value, attrs)

    @hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        fn, attrs = self._resolve("histogram", name, tags)
        fn(value, attrs)

    @hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        fn, attrs = self._resolve("timing", name, tags)
        fn(seconds, attrs)
