"""The ``prometheus`` metrics provider: the catalogue as Prometheus metrics, on ``/metrics``.

Names follow Prometheus's conventions (:func:`prometheus_name`): the ``deimos_`` namespace,
``.`` as ``_``, counters end in ``_total``, durations are histograms in seconds ending in
``_seconds``, gauges in seconds end in ``_seconds`` too, and no gauge ends in ``_count``
(a histogram's suffix): ``pending_db_messages_count`` is ``deimos_pending_db_messages``.
A catalogue row's tags (plus ``metrics.tags``) are the metric's labels; a measurement that
lacks one gets ``""``, a tag outside them is dropped (Prometheus needs one label set per
metric). Names outside the catalogue get the labels of their first measurement.

The provider's own :class:`~prometheus_client.CollectorRegistry` is what ``/metrics`` of the
health server (:mod:`deimos.health`) serves. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
processes of one pod, e.g. a pre-fork server next to the consumers), values go to that
directory's files and ``/metrics`` serves every process's, as ``prometheus_client``'s
multiprocess mode does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from deimos.config import Settings
from deimos.hookspecs import hookimpl
from deimos.metrics.catalogue import CATALOGUE, Kind, MetricSpec
from deimos_prometheus.settings import PrometheusSettings

#: deimos names whose Prometheus name is not the rule's
RENAMES: dict[str, str] = {
    "pending_db_messages_count": "pending_db_messages",
}

_HOOK_KIND: dict[str, Kind] = {"increment": "counter", "gauge": "gauge",
                               "histogram": "histogram", "time": "timing"}


def prometheus_name(name: str, kind: Kind, unit: str = "1", namespace: str = "deimos") -> str:
    """The Prometheus name of deimos metric ``name`` (``handler`` counter ->
    ``deimos_handler_total``, ``handler`` timing -> ``deimos_handler_seconds``)."""
    base = RENAMES.get(name, name).replace(".", "_").replace("-", "_")
    if namespace:
        base = f"{namespace}_{base}"
    if kind == "counter":
        return base + "_total"
    if kind == "timing" or unit == "s":
        return base if base.endswith("_seconds") else base + "_seconds"
    return base


def _specs() -> dict[tuple[Kind, str], list[MetricSpec]]:
    out: dict[tuple[Kind, str], list[MetricSpec]] = {}
    for spec in CATALOGUE:
        out.setdefault((spec.kind, spec.name), []).append(spec)
    return out


class _Metric:
    __slots__ = ("labels", "metric", "observe")

    def __init__(self, metric: Any, labels: tuple[str, ...], kind: Kind) -> None:
        self.metric = metric
        self.labels = labels
        self.observe: Callable[[Any, float], None] = {
            "counter": lambda m, v: m.inc(v), "gauge": lambda m, v: m.set(v),
            "histogram": lambda m, v: m.observe(v), "timing": lambda m, v: m.observe(v),
        }[kind]


class PrometheusMetrics:
    """Keeps deimos's measurements as Prometheus metrics for ``/metrics`` to serve."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = PrometheusSettings()
        self._global_tags: tuple[str, ...] = ()
        self._metrics: dict[tuple[Kind, str], _Metric] = {}
        self._catalogue = _specs()
        self.registry = self._new_registry()

    # -- configuration ----------------------------------------------------------------------

    @hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[PrometheusSettings]]:
        return {"prometheus": PrometheusSettings}

    @hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        s: PrometheusSettings = settings.section("prometheus")
        tags = tuple(sorted(settings.metrics.tags))
        with self._lock:
            if s == self._settings and tags == self._global_tags:
                return
            # new names or labels: start over (values of the old settings are not kept)
            self._settings, self._global_tags = s, tags
            self._metrics.clear()
            self.registry = self._new_registry()

    @staticmethod
    def multiprocess() -> bool:
        return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

    def _new_registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        if self.multiprocess():
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        elif self._settings.process_metrics:
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        return registry

    # -- exposition -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format of every metric (what ``/metrics`` answers)."""
        return generate_latest(self.registry)

    @hookimpl
    def deimos_http_routes(self) -> Mapping[str, Callable[[], tuple[int, str, bytes]]]:
        return {"/metrics": lambda: (200, CONTENT_TYPE_LATEST, self.exposition())}

    # -- measurements -----------------------------------------------------------------------

    def _metric(self, kind: Kind, name: str, tags: Mapping[str, str]) -> _Metric:
        key = (kind, name)
        m = self._metrics.get(key)
        if m is not None:
            return m
        with self._lock:
            m = self._metrics.get(key)
            if m is not None:
                return m
            s = self._settings
            specs = self._catalogue.get(key)
            if specs:
                labels: list[str] = []
                for spec in specs:  # the variant's tag (status, time) is among its tags
                    labels.extend(t for t in spec.tags if t not in labels)
                unit = specs[0].unit
                doc = "; ".join(dict.fromkeys(
                    (f"{sp.variant[0]}={sp.variant[1]}: " if sp.variant else "")
                    + sp.description for sp in specs))
            else:
                labels = [t for t in tags if t not in self._global_tags]
                unit = "s" if kind == "timing" else "1"
                doc = f"deimos metric {name} (not in the catalogue)"
            labels.extend(t for t in self._global_tags if t not in labels)
            labelnames = tuple(_label(t) for t in labels)
            pname = prometheus_name(name, kind, unit, s.namespace)
            common: dict[str, Any] = {"labelnames": labelnames, "registry": None}
            metric: Any
            if kind == "counter":
                # prometheus_client adds _total itself
                metric = Counter(pname.removesuffix("_total"), doc, **common)
            elif kind == "gauge":
                metric = Gauge(pname, doc, multiprocess_mode=s.multiprocess_gauge_mode,
                               **common)
            else:
                buckets = s.buckets if kind == "timing" or unit == "s" else \
                    Histogram.DEFAULT_BUCKETS
                metric = Histogram(pname, doc, buckets=buckets, **common)
            if not self.multiprocess():
                self.registry.register(metric)
            m = self._metrics[key] = _Metric(metric, tuple(labels), kind)
            return m

    def _record(self, kind: Kind, name: str, value: float, tags: Mapping[str, str]) -> None:
        m = self._metric(kind, name, tags)
        target = m.metric.labels(*(str(tags.get(t, "")) for t in m.labels)) if m.labels \
            else m.metric
        m.observe(target, value)

    @hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        self._record("counter", name, value, tags)

    @hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._record("gauge", name, value, tags)

    @hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._record("histogram", name, value, tags)

    @hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        self._record("timing", name, seconds, tags)


def _label(tag: str) -> str:
    """A tag as a valid Prometheus label name."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in tag)
    return out if out and not out[0].isdigit() else f"_{out}"


def markdown_table(namespace: str = "deimos") -> str:
    """The Prometheus name of every catalogue row, as the table of ``docs/production.md``
    (a test keeps the page in step)."""
    rows = ["| Prometheus metric | type | deimos name | labels |", "| --- | --- | --- | --- |"]
    by_name: dict[str, list[MetricSpec]] = {}
    for spec in CATALOGUE:
        by_name.setdefault(prometheus_name(spec.name, spec.kind, spec.unit, namespace),
                           []).append(spec)
    for name, specs in by_name.items():
        first = specs[0]
        kind = "histogram" if first.kind == "timing" else first.kind
        variants = ", ".join(f"`{s.variant[0]}=\"{s.variant[1]}\"`" for s in specs if s.variant)
        rows.append(f"| `{name}` | {kind} | `{first.name}`"
                    f"{f' ({variants})' if variants else ''} | {', '.join(first.tags)} |")
    return "\n".join(rows)
