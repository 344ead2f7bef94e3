"""OpenTelemetry providers for deimos, on ``opentelemetry-api`` only: the application picks
the SDK and exporters. Metrics follow the catalogue in :mod:`deimos.metrics.catalogue`;
spans follow the messaging semantic conventions and carry W3C trace context through Kafka
headers."""

from deimos_otel.metrics import OtelMetrics
from deimos_otel.tracing import OtelTracer

__all__ = ["OtelMetrics", "OtelTracer"]

