"""datadog.propagation chooses which of ddtrace's trace headers travel with each message."""

from __future__ import annotations

import pytest

from deimos.config import ConfigError, build_settings
from deimos_datadog.tracing import _header_filter

DDTRACE_DEFAULT = ["x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
                   "x-datadog-tags", "traceparent", "tracestate"]


@pytest.mark.parametrize(("styles", "kept"), [
    (["tracecontext"], ["traceparent", "tracestate"]),
    (["datadog"], DDTRACE_DEFAULT[:4]),
    (["datadog", "tracecontext"], DDTRACE_DEFAULT),
])
def test_only_the_configured_styles_are_kept(styles: list[str], kept: list[str]) -> None:
    keep = _header_filter(styles)
    assert [h for h in DDTRACE_DEFAULT if keep(h)] == kept


def test_the_default_is_w3c_and_unknown_styles_are_rejected_with_their_path() -> None:
    assert build_settings(environ={}).settings.section("datadog").propagation == ["tracecontext"]
    with pytest.raises(ConfigError, match=r"datadog\.propagation\.0"):
        build_settings({"datadog": {"propagation": ["jaeger"]}}, environ={})
