"""The ``datadog`` settings section (``[datadog]`` in deimos.toml, ``DEIMOS_DATADOG__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deimos.config import Section


class DatadogSettings(Section):
    """Where DogStatsD datagrams go, how they are buffered, and the APM service name.

    Unset ``host``/``port`` fall back to the Datadog client's own environment
    (``DD_AGENT_HOST``, ``DD_DOGSTATSD_PORT``), then ``localhost:8125``.
    """

    host: str | None = Field(None, description="DogStatsD host (UDP)")
    port: int | None = Field(None, description="DogStatsD port (UDP)")
    socket_path: str | None = Field(
        None, description="Unix domain socket of the agent; used instead of host/port")
    namespace: str | None = Field("deimos", description="prefix of every metric name")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="constant tags the client adds to every datagram (metrics.tags too)")
    aggregation: bool = Field(
        True, description="sum counters and keep the last gauge in process between flushes")
    flush_interval: float = Field(
        0.3, gt=0, description="seconds between flushes of the buffer by a background thread")
    sender_queue_size: int = Field(
        4096, ge=0,
        description="packets queued for the background sender; when full, new packets are "
        "dropped (counted by the client's telemetry), never waited for")
    client_telemetry: bool = Field(
        True, description="the client's own datadog.dogstatsd.client.* metrics")
    service: str | None = Field(
        None, description="APM service of deimos spans (default: DD_SERVICE, then ddtrace's)")
    propagation: list[Literal["tracecontext", "datadog", "b3"]] = Field(
        default_factory=lambda: ["tracecontext"],  # type: ignore[arg-type]
        description="trace headers put on each produced message, of those ddtrace injects: "
        "W3C traceparent/tracestate by default (ddtrace and OpenTelemetry both read them); "
        "add \"datadog\" for x-datadog-* headers read by older tracers. Every header costs "
        "bytes and broker work on every message")
