"""The ``prometheus`` settings section (``[prometheus]`` in deimos.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deimos.config import Section


class PrometheusSettings(Section):
    """How deimos metrics are named and kept for Prometheus."""

    namespace: str = Field("deimos", description="prefix of every metric name")
    buckets: list[float] = Field(
        default_factory=lambda: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                 5.0, 10.0, 30.0, 60.0],
        description="histogram buckets (seconds) of timings")
    process_metrics: bool = Field(
        True, description="add prometheus_client's process_*, python_gc_* and python_info "
        "metrics (single-process mode)")
    multiprocess_gauge_mode: Literal["all", "liveall", "min", "livemin", "max", "livemax",
                                     "sum", "livesum", "mostrecent", "livemostrecent"] = Field(
        "max", description="multiprocess mode (PROMETHEUS_MULTIPROC_DIR set): how gauges of "
        "several processes combine; max suits pending_db_messages and lag, which every "
        "process reports alike")
