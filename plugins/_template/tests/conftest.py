"""Until the plugin is installed (``pip install -e .``), register its classes by hand so the
conformance suites can find them; once installed, the entry points register them and this
does nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deimos.plugins import get_registry, reset_registry

try:
    import deimos_template
except ImportError:  # not installed yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import deimos_template

PLUGINS = [
    ("producer_backend", "template", deimos_template.TemplateBackend),
    ("schema_backend", "template", deimos_template.TemplateSchemaBackend),
    ("metrics", "template", deimos_template.TemplateMetrics),
    ("tracing", "template", deimos_template.TemplateTracer),
]


@pytest.fixture(autouse=True)
def template_plugins() -> Iterator[None]:
    reset_registry(None)
    registry = get_registry()
    for kind, name, cls in PLUGINS:
        if name not in registry.names(kind):
            registry.register(kind, name, cls())
    yield
    reset_registry(None)
