"""The conformance suite every metrics provider passes.

Subclass :class:`MetricsConformance` and override ``provider_name`` (and ``extra_settings``
when the provider needs settings). The provider is called exactly as deimos calls it:
through :class:`deimos.telemetry.Telemetry`, with the global tags merged in.
"""

from __future__ import annotations

from typing import Any

import pytest

from deimos.config import Settings, build_settings
from deimos.plugins import get_registry
from deimos.runtime import Runtime
from deimos.telemetry import Telemetry

_HOOKS = ("deimos_metrics_increment", "deimos_metrics_gauge", "deimos_metrics_histogram",
          "deimos_metrics_time")


class MetricsConformance:
    """Checks every implemented metrics hook takes the spec's arguments, with tags."""

    @pytest.fixture
    def provider_name(self) -> str:
        """The entry-point name under ``deimos.metrics``. Required."""
        raise NotImplementedError("override the provider_name fixture")

    @pytest.fixture
    def extra_settings(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def settings(self, provider_name: str, extra_settings: dict[str, Any]) -> Settings:
        data = {**extra_settings, "metrics": {"providers": [provider_name],
                                              "tags": {"service": "conformance"}}}
        return build_settings(data, environ={}).settings

    @pytest.fixture
    def telemetry(self, settings: Settings) -> Telemetry:
        return Runtime(settings).telemetry

    def test_provider_is_installed(self, provider_name: str) -> None:
        info = get_registry().get("metrics", provider_name)
        assert set(info.hooks) & set(_HOOKS), "implements no metrics hook"

    def test_every_measurement(self, telemetry: Telemetry) -> None:
        assert telemetry.metrics_enabled
        telemetry.increment("conformance.count", 3, {"topic": "t"})
        telemetry.increment("conformance.count")
        telemetry.gauge("conformance.gauge", 1.5, {"topic": "t", "partition": "0"})
        telemetry.histogram("conformance.histogram", 7.0)
        telemetry.timing("conformance.time", 0.25, {"status": "success"})
        with telemetry.time("conformance.block"):
            pass

    def test_hooks_return_nothing(self, provider_name: str, telemetry: Telemetry) -> None:
        registry = get_registry()
        args: dict[str, tuple[str, float, dict[str, str]]] = {
            "deimos_metrics_increment": ("conformance.count", 1, {}),
            "deimos_metrics_gauge": ("conformance.gauge", 2.0, {}),
            "deimos_metrics_histogram": ("conformance.histogram", 3.0, {}),
            "deimos_metrics_time": ("conformance.time", 0.5, {}),
        }
        for hook, hook_args in args.items():
            fn = registry.caller("metrics", provider_name, hook)
            if fn is not None:
                assert fn(*hook_args) is None, hook
