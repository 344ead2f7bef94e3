"""The catalogue's mapping to OpenTelemetry instruments, without a broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from otel_helpers import metric, points

from deimos.config import build_settings
from deimos.metrics.catalogue import CATALOGUE, markdown_table
from deimos.runtime import Runtime

DOCS = Path(__file__).parents[3] / "docs" / "metrics.md"


def _telemetry(**tags: str) -> Any:
    data = {"metrics": {"providers": ["otel"], "tags": tags}}
    return Runtime(build_settings(data, environ={}).settings).telemetry


def test_gauges_are_observable_and_report_the_last_value(reader: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:6]}"
    tel = _telemetry()
    tags = {"consumer_group": "g", "topic": topic, "partition": "3"}
    tel.gauge("consumer_lag", 10, tags)
    tel.gauge("consumer_lag", 4, tags)
    (attrs, p), = [(a, p) for a, p in points(reader, "deimos.consumer.lag")
                   if a.get("messaging.destination.name") == topic]
    assert p.value == 4
    assert attrs == {"messaging.system": "kafka", "messaging.consumer.group.name": "g",
                     "messaging.destination.name": topic,
                     "messaging.destination.partition.id": "3"}
    assert type(metric(reader, "deimos.consumer.lag")[0].data).__name__ == "Gauge"


def test_publish_errors_share_the_sent_counter_with_an_error_type(reader: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:6]}"
    tel = _telemetry()
    tel.increment("publish", 5, {"topic": topic})
    tel.increment("publish_error", 2, {"topic": topic})
    got = {a.get("error.type"): p.value for a, p in points(
        reader, "messaging.client.sent.messages") if a["messaging.destination.name"] == topic}
    assert got == {None: 5, "_OTHER": 2}


def test_timings_are_seconds_and_unknown_names_are_kept(reader: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:6]}"
    tel = _telemetry(env="test")
    tel.timing("handler", 0.25, {"topic": topic, "consumer_group": "g", "time": "time_delayed"})
    tel.increment("my_app.thing", 2, {"topic": topic})
    (attrs, p), = [(a, p) for a, p in points(reader, "deimos.consumer.delay")
                   if a["messaging.destination.name"] == topic]
    assert p.sum == 0.25 and attrs["env"] == "test" and attrs["deimos.time"] == "time_delayed"
    assert metric(reader, "deimos.consumer.delay")[0].unit == "s"
    # seconds get the messaging conventions' boundaries, not the SDK's millisecond ones
    assert tuple(p.explicit_bounds)[:3] == (0.005, 0.01, 0.025)
    assert sum(p.bucket_counts[:6]) == 0 and p.bucket_counts[6] == 1  # 0.1 < 0.25 <= 0.25
    (p,) = [p for a, p in points(reader, "deimos.my_app.thing")
            if a["messaging.destination.name"] == topic]
    assert p.value == 2


def test_every_catalogue_row_maps_to_one_instrument_kind() -> None:
    kinds: dict[str, set[str]] = {}
    for spec in CATALOGUE:
        kinds.setdefault(spec.otel_name, set()).add(
            "histogram" if spec.kind in ("timing", "histogram") else spec.kind)
    assert all(len(k) == 1 for k in kinds.values()), kinds


def test_docs_show_the_catalogue_table() -> None:
    assert markdown_table() in DOCS.read_text(), "regenerate the table in docs/metrics.md"


def test_counters_export_a_cumulative_monotonic_sum_of_every_thread_s_counts(
        reader: Any) -> None:
    import threading

    topic = f"t-{uuid.uuid4().hex[:6]}"
    tel = _telemetry()
    tags = {"topic": topic, "consumer_group": "g", "partition": "0", "status": "success"}

    def count() -> None:
        for _ in range(2000):
            tel.increment("handler", 3, tags)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (p,) = [p for a, p in points(reader, "deimos.consumer.handled.messages")
            if a["messaging.destination.name"] == topic]
    assert p.value == 4 * 2000 * 3
    tel.increment("handler", 5, tags)
    (p,) = [p for a, p in points(reader, "deimos.consumer.handled.messages")
            if a["messaging.destination.name"] == topic]
    assert p.value == 4 * 2000 * 3 + 5  # cumulative across collections
    data = metric(reader, "deimos.consumer.handled.messages")[0].data
    assert type(data).__name__ == "Sum" and data.is_monotonic


def test_a_second_provider_instance_counts_into_the_instruments_the_first_made(
        reader: Any) -> None:
    # the SDK makes an instrument name once per meter: a provider instance built later in
    # the process (another plugin registry, deimos configured again) gets the first
    # instrument back, so its counts must land where that instrument's callback reads
    from deimos_otel import OtelMetrics

    topics = [f"t-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    first, second = OtelMetrics(), OtelMetrics()
    first.deimos_metrics_increment("publish", 3, {"topic": topics[0]})
    second.deimos_metrics_increment("publish", 4, {"topic": topics[1]})
    second.deimos_metrics_gauge("consumer_lag", 7, {"topic": topics[1], "partition": "0",
                                                    "consumer_group": "g"})
    got = {a["messaging.destination.name"]: p.value for a, p in points(
        reader, "messaging.client.sent.messages") if a["messaging.destination.name"] in topics}
    assert got == {topics[0]: 3, topics[1]: 4}
    (lag,) = [p for a, p in points(reader, "deimos.consumer.lag")
              if a.get("messaging.destination.name") == topics[1]]
    assert lag.value == 7
