"""The ``prometheus`` metrics provider for deimos: the metric catalogue on ``/metrics``."""

from deimos_prometheus.metrics import PrometheusMetrics, prometheus_name
from deimos_prometheus.settings import PrometheusSettings

__all__ = ["PrometheusMetrics", "PrometheusSettings", "prometheus_name"]
