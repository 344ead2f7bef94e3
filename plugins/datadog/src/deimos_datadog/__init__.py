"""Datadog providers for deimos: metrics through DogStatsD (``datadog``), tracing through
ddtrace (``datadog-tracing``), with trace context carried in Kafka message headers."""

from deimos_datadog.metrics import DatadogMetrics
from deimos_datadog.settings import DatadogSettings
from deimos_datadog.tracing import DatadogTracer

__all__ = ["DatadogMetrics", "DatadogSettings", "DatadogTracer"]
