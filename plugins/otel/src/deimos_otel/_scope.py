"""The instrumentation scope name and version shared by the tracer and the meter."""

from __future__ import annotations

from importlib import metadata

NAME = "deimos_otel"

try:
    VERSION: str | None = metadata.version("deimos-otel")
except metadata.PackageNotFoundError:  # running from a source tree without metadata
    VERSION = None
