"""The conformance suite every producer backend passes.

Subclass :class:`ProducerBackendConformance` in a test module and override the fixtures that
describe your backend::

    class TestMyBackend(ProducerBackendConformance):
        @pytest.fixture
        def backend_name(self) -> str:
            return "my_backend"

        @pytest.fixture
        def delivered(self, settings):
            # optional: how to read back what the backend delivered
            return lambda: [(m.topic, m.key, m.value) for m in read_my_store(settings)]

The backend is resolved through :class:`deimos.runtime.Runtime`, as producers resolve it,
under settings built from the fixtures and an empty environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deimos.config import Settings, build_settings
from deimos.message import Message, ProduceContext
from deimos.plugins import get_registry
from deimos.runtime import Backend, Runtime

#: what a backend delivered: (topic, encoded key, encoded value)
Delivered = list[tuple[str, bytes | None, bytes | None]]


class ProducerBackendConformance:
    """Checks that ``execute`` takes batches (sync and async) with keys, headers and
    tombstones, that ``flush`` and ``close`` behave, and (given ``delivered``) what arrived."""

    # -- fixtures a backend overrides ---------------------------------------------------------

    @pytest.fixture
    def backend_name(self) -> str:
        """The entry-point name under ``deimos.producer_backends``. Required."""
        raise NotImplementedError("override the backend_name fixture")

    @pytest.fixture
    def extra_settings(self) -> dict[str, Any]:
        """Settings (as for ``deimos.configure``) the backend needs, e.g. its own section."""
        return {}

    @pytest.fixture
    def topic(self) -> str:
        return "conformance-topic"

    @pytest.fixture
    def delivered(self) -> Callable[[], Delivered] | None:
        """A function returning everything delivered so far (``None``: not checked)."""
        return None

    # -- plumbing ------------------------------------------------------------------------------

    @pytest.fixture
    def settings(self, backend_name: str, extra_settings: dict[str, Any]) -> Settings:
        data = {**extra_settings, "producers": {
            **extra_settings.get("producers", {}), "backend": backend_name}}
        return build_settings(data, environ={}).settings

    @pytest.fixture
    def runtime(self, settings: Settings) -> Iterator[Runtime]:
        runtime = Runtime(settings)
        yield runtime
        runtime.close()

    @pytest.fixture
    def backend(self, runtime: Runtime) -> Backend:
        return runtime.backend()

    @pytest.fixture
    def context(self, runtime: Runtime, topic: str) -> ProduceContext:
        failures: list[tuple[Message, BaseException]] = []
        return ProduceContext(topic, "ConformanceProducer", runtime.settings, runtime.telemetry,
                              lambda m, e: failures.append((m, e)))

    @staticmethod
    def batch(topic: str) -> list[Message]:
        return [
            Message(topic, "a", "k1", [("h", b"1")], b"k1", b"k1", b"a"),
            Message(topic, "b", None, None, None, None, b"b"),
            Message(topic, None, "k3", None, b"k3", b"k3", None),  # a tombstone
        ]

    # -- the checks ----------------------------------------------------------------------------

    def test_backend_is_installed(self, backend_name: str) -> None:
        info = get_registry().get("producer_backend", backend_name)
        assert "deimos_backend_execute" in info.hooks

    @pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
    def test_execute_delivers_a_batch(self, backend: Backend, context: ProduceContext,
                                      topic: str, sync: bool,
                                      delivered: Callable[[], Delivered] | None) -> None:
        before = len(delivered()) if delivered is not None else 0
        backend.execute(context, self.batch(topic), sync)
        if backend.flush is not None:
            assert backend.flush(30.0) == 0
        if delivered is not None:
            expected = [(m.topic, m.encoded_key, m.encoded_payload) for m in self.batch(topic)]
            assert delivered()[before:] == expected

    def test_empty_batch(self, backend: Backend, context: ProduceContext) -> None:
        backend.execute(context, [], True)

    def test_flush_and_close_when_idle(self, backend: Backend) -> None:
        if backend.flush is not None:
            left = backend.flush(0.0)
            assert isinstance(left, int) and left >= 0
        if backend.close is not None:
            backend.close()
            backend.close()  # closing twice is harmless
