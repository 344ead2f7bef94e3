"""The conformance suite every tracing provider passes.

Subclass :class:`TracingConformance` and override ``provider_name`` (and ``extra_settings``
when the provider needs settings). The provider is called exactly as deimos calls it:
through :class:`deimos.telemetry.Telemetry`.
"""

from __future__ import annotations

from typing import Any

import pytest

from deimos.config import Settings, build_settings
from deimos.plugins import get_registry
from deimos.runtime import Runtime
from deimos.telemetry import Telemetry

ATTRIBUTES = {"messaging.system": "kafka", "messaging.destination.name": "conformance"}


class TracingConformance:
    """Checks spans start, fail and finish, and trace context travels in message headers."""

    @pytest.fixture
    def provider_name(self) -> str:
        """The entry-point name under ``deimos.tracing``. Required."""
        raise NotImplementedError("override the provider_name fixture")

    @pytest.fixture
    def extra_settings(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def settings(self, provider_name: str, extra_settings: dict[str, Any]) -> Settings:
        data = {**extra_settings, "tracing": {"providers": [provider_name]}}
        return build_settings(data, environ={}).settings

    @pytest.fixture
    def telemetry(self, settings: Settings) -> Telemetry:
        return Runtime(settings).telemetry

    def test_provider_is_installed(self, provider_name: str) -> None:
        info = get_registry().get("tracing", provider_name)
        assert {"deimos_tracing_start", "deimos_tracing_finish"} <= set(info.hooks)

    def test_span_lifecycle(self, telemetry: Telemetry) -> None:
        assert telemetry.tracing_enabled
        with telemetry.span("conformance publish", ATTRIBUTES):
            pass
        with pytest.raises(ValueError), telemetry.span("conformance process", ATTRIBUTES):
            raise ValueError("handler failed")

    def test_context_travels_in_headers(self, provider_name: str) -> None:
        registry = get_registry()
        start = registry.caller("tracing", provider_name, "deimos_tracing_start")
        finish = registry.caller("tracing", provider_name, "deimos_tracing_finish")
        inject = registry.caller("tracing", provider_name, "deimos_tracing_inject")
        assert start is not None and finish is not None
        span = start("conformance publish", ATTRIBUTES, None, None)
        headers: dict[str, bytes] = {}
        if inject is not None:
            inject(span, headers)
            assert headers, "inject added no header"
            assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers.items())
        finish(span)
        # a consumer continues the trace from those headers, and links a batch's messages
        child = start("conformance process", ATTRIBUTES, headers or None,
                      [headers, headers] if headers else None)
        finish(child)
