"""The prometheus provider: the shared conformance suite, Prometheus names for every row of
the catalogue, and what /metrics answers."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deimos.metrics.catalogue import CATALOGUE
from deimos.plugins import get_registry
from deimos.telemetry import Telemetry
from deimos.testing.conformance.metrics import MetricsConformance
from deimos_prometheus import PrometheusMetrics, prometheus_name


def _samples(provider: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]:
    text = provider.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _provider() -> PrometheusMetrics:
    obj = get_registry().get("metrics", "prometheus").obj
    assert isinstance(obj, PrometheusMetrics)
    return obj


class TestPrometheusMetricsConformance(MetricsConformance):
    @pytest.fixture
    def provider_name(self) -> str:
        return "prometheus"

    def test_the_suite_s_measurements_are_exposed(self, telemetry: Telemetry) -> None:
        # one provider object per process: other tests may have counted these names before
        before = _samples(_provider())
        telemetry.increment("conformance.count", 3, {"topic": "t"})
        telemetry.timing("conformance.time", 0.25, {"status": "success"})
        after = _samples(_provider())
        count = ("deimos_conformance_count_total",
                 (("service", "conformance"), ("topic", "t")))
        timing = ("deimos_conformance_time_seconds_count",
                  (("service", "conformance"), ("status", "success")))
        assert after[count] - before.get(count, 0) == 3
        assert after[timing] - before.get(timing, 0) == 1


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: f"{s.kind}-{s.name}-{s.variant}")
def test_every_catalogue_name_follows_prometheus_conventions(spec: Any) -> None:
    name = prometheus_name(spec.name, spec.kind, spec.unit)
    assert name.startswith("deimos_") and "." not in name
    if spec.kind == "counter":
        assert name.endswith("_total")
    if spec.kind == "timing" or spec.unit == "s":
        assert name.endswith("_seconds")
    if spec.kind == "gauge":
        assert not name.endswith(("_count", "_total", "_sum", "_bucket"))


def test_catalogue_rows_share_one_metric_with_their_variant_label(deimos_reset: None) -> None:
    import deimos
    from deimos.runtime import get_runtime

    deimos.configure(metrics={"providers": ["prometheus"]})
    telemetry = get_runtime().telemetry
    tags = {"topic": "orders", "consumer_group": "g"}
    telemetry.increment("handler", 5, {**tags, "status": "received"})
    telemetry.increment("handler", 4, {**tags, "status": "success"})
    telemetry.timing("handler", 0.5, {**tags, "time": "consume"})
    telemetry.gauge("pending_db_messages_count", 7, {"topic": "orders"})
    telemetry.gauge("pending_db_messages_max_wait", 1.5, {})
    samples = _samples(_provider())
    assert _value(samples, "deimos_handler_total", **tags, status="received") == 5
    assert _value(samples, "deimos_handler_total", **tags, status="success") == 4
    assert _value(samples, "deimos_handler_seconds_count", **tags, time="consume") == 1
    assert _value(samples, "deimos_pending_db_messages", topic="orders") == 7
    # a measurement without the topic tag gets the label empty
    assert _value(samples, "deimos_pending_db_messages_max_wait_seconds", topic="") == 1.5


def test_the_metrics_route_answers_the_text_format(deimos_reset: None) -> None:
    import deimos

    deimos.configure(metrics={"providers": ["prometheus"]})
    from deimos.health import plugin_routes

    status, ctype, body = plugin_routes()["/metrics"]()
    assert status == 200 and ctype.startswith("text/plain")
    assert b"process_cpu_seconds_total" in body or b"python_info" in body


def test_the_production_page_lists_every_prometheus_name() -> None:
    from pathlib import Path

    import yaml

    from deimos_prometheus.metrics import markdown_table

    page = (Path(__file__).parents[3] / "docs" / "production.md").read_text()
    assert markdown_table() in page, "regenerate the table from deimos_prometheus.markdown_table"
    import re

    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    assert len(blocks) >= 2
    kinds = [doc["kind"] for block in blocks for doc in yaml.safe_load_all(block)]
    assert kinds == ["Deployment", "Deployment", "ScaledObject", "ScaledObject"]
