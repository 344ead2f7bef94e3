"""The ``otel`` metrics provider: deimos's catalogue as OpenTelemetry instruments.

Every row of :data:`deimos.metrics.catalogue.CATALOGUE` maps to one instrument of the
``deimos_otel`` meter (counters to ``ObservableCounter``, timings and histograms to
``Histogram`` in seconds, gauges to ``ObservableGauge`` reporting the last value set per
attribute set), and deimos tags map to attributes (``topic`` to
``messaging.destination.name`` ...). Instruments and attribute sets are built once and cached.

Counters are observable because deimos counts on the hot path (four counts per consumed
batch, one per publish call) and the SDK's synchronous ``Counter.add`` costs about 10 µs
(a frozen dataclass, attribute cleaning and hashing per call): here a count is an addition
under a lock, and the SDK reads the cumulative totals when it collects, which exports the
same monotonic ``Sum`` a synchronous counter would (without exemplars).
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

#: bucket boundaries of histograms in seconds, from the messaging semantic conventions (the
#: SDK's default boundaries, 0 to 10,000, suit milliseconds and would put every
#: processing time in the first bucket)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0)

Attributes = dict[str, str]


def attributes_for(tags: Mapping[str, str], extra: Mapping[str, str]) -> Attributes:
    """OpenTelemetry attributes of a measurement with deimos ``tags``."""
    out = dict(COMMON_ATTRIBUTES)
    for k, v in tags.items():
        out[TAG_ATTRIBUTES.get(k, k)] = v
    out.update(extra)
    return out


class _Cell:
    """The value of one observable instrument for one attribute set."""

    __slots__ = ("attrs", "lock", "value")

    def __init__(self, attrs: Attributes, lock: threading.Lock) -> None:
        self.attrs = attrs
        self.lock = lock
        self.value: float = 0

    def set(self, value: float, _attrs: Attributes) -> None:
        self.value = value  # a gauge: the last value wins

    def add(self, value: float, _attrs: Attributes) -> None:
        if value < 0:
            return  # a monotonic sum: the SDK's Counter ignores negative adds too
        with self.lock:
            self.value += value


class _Observed:
    """One observable instrument (a gauge's last values, a counter's running totals): a
    cell per attribute set, all reported at each collection."""

    __slots__ = ("cells", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cells: dict[tuple[tuple[str, str], ...], _Cell] = {}

    def cell(self, attrs: Attributes) -> _Cell:
        key = tuple(attrs.items())
        with self.lock:
            got = self.cells.get(key)
            if got is None:
                got = self.cells[key] = _Cell(attrs, self.lock)
        return got

    def observe(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self.lock:
            items = [(c.value, c.attrs) for c in self.cells.values()]
        return [Observation(v, a) for v, a in items]


#: the observable instruments' cells, one per instrument name in the process, and the
#: instruments made on each meter: both shared by every provider instance. The SDK registers
#: an instrument name once per meter and answers a second ``create_observable_counter`` with
#: the first instrument (its callback kept, the new one never called), so a provider built
#: later in the process (a second plugin registry, deimos configured again, a meter obtained
#: before the SDK was installed) must count into the cells the first one's callback reads.
_OBSERVED: dict[tuple[str, str], _Observed] = {}
_METERS: dict[int, tuple[Any, dict[tuple[str, str], Any]]] = {}
_SHARED_LOCK = threading.RLock()


def _instruments_of(meter: Any) -> dict[tuple[str, str], Any]:
    with _SHARED_LOCK:
        got = _METERS.get(id(meter))
        if got is None or got[0] is not meter:
            got = _METERS[id(meter)] = (meter, {})  # holds the meter: its id stays its own
        return got[1]


def _instrument(meter: Any, kind: Kind, otel_name: str, unit: str, desc: str) -> Any:
    """The instrument ``otel_name`` of ``meter``: an :class:`_Observed` for counters and
    gauges, a histogram's ``record`` otherwise; made once per meter."""
    with _SHARED_LOCK:
        instruments = _instruments_of(meter)
        inst = instruments.get((kind, otel_name))
        if inst is not None:
            return inst
        if kind in ("counter", "gauge"):
            inst = _OBSERVED.get((kind, otel_name))
            if inst is None:
                inst = _OBSERVED[(kind, otel_name)] = _Observed()
            create = (meter.create_observable_counter if kind == "counter"
                      else meter.create_observable_gauge)
            create(otel_name, [inst.observe], unit, desc)
        else:
            inst = meter.create_histogram(
                otel_name, unit, desc,
                explicit_bucket_boundaries_advisory=(
                    SECONDS_BUCKETS if unit == "s" else None)).record
        instruments[(kind, otel_name)] = inst
        return inst


class OtelMetrics:
    """Counters, histograms and observable gauges from the ``deimos_otel`` meter.

    The meter comes from the global ``MeterProvider`` (a no-op until the application
    installs the SDK); it is looked up when deimos configures the provider.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meter: Any = None
        # (kind, name, tags) -> (record function, attributes)
        self._resolved: dict[tuple[Any, ...], tuple[Any, Attributes]] = {}

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter(_scope.NAME, _scope.VERSION)
        with self._lock:
            if meter is not self._meter:
                self._meter = meter
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
            inst = _instrument(self._meter_or_default(), kind, spec.otel_name, spec.unit,
                               f"{spec.description} (deimos: {spec.name})")
            fn = inst
            if isinstance(inst, _Observed):  # one cell per attribute set
                cell = inst.cell(attrs)
                fn = cell.add if kind == "counter" else cell.set
            if len(self._resolved) >= _CACHE_MAX:
                self._resolved.clear()
            got = self._resolved[key] = (fn, attrs)
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
