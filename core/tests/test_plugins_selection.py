"""Selection (producer and schema backends: only the named one is called) and fan-out
(metrics and tracing: every enabled provider is called)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

import deimos
from deimos.backends import test as test_backend
from deimos.config import KeyConfig
from deimos.errors import UnknownPluginError
from deimos.message import Message, ProduceContext
from deimos.metrics.builtin import MockMetrics
from deimos.plugins import PluginRegistry, get_registry
from deimos.runtime import get_runtime
from deimos.schema.base import SchemaContext
from deimos.tracing.builtin import MockTracer

pytestmark = pytest.mark.usefixtures("isolated_deimos")


class RecordingSchema:
    """A schema backend that prefixes what it encodes with its own tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[tuple[str, str, list[Any]]] = []

    @deimos.hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        self.calls.append(("encode", context.topic, list(payloads)))
        return [None if p is None else f"{self.tag}:{p}".encode() for p in payloads]

    @deimos.hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        self.calls.append(("decode", context.topic, list(data)))
        return [None if d is None else d.decode().split(":", 1)[1] for d in data]

    @deimos.hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        self.calls.append(("coerce", context.topic, [payload]))
        return payload


class RecordingBackend:
    def __init__(self) -> None:
        self.batches: list[list[Message]] = []

    @deimos.hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        self.batches.append(list(messages))


@pytest.fixture
def clear_test_backend() -> None:
    test_backend.clear()


def _producer(topic: str, **attrs: Any) -> type[deimos.Producer]:
    return type("SelectionProducer", (deimos.Producer,), {"topic": topic, **attrs})


# --- schema backends --------------------------------------------------------------------------


@pytest.mark.usefixtures("clear_test_backend")
def test_publish_calls_only_the_configured_schema_backend() -> None:
    registry = get_registry()
    a, b = RecordingSchema("A"), RecordingSchema("B")
    with registry.registered("schema_backend", "rec_a", a), \
            registry.registered("schema_backend", "rec_b", b):
        deimos.configure(schema={"backend": "rec_b"}, producers={"backend": "test"})
        _producer("selection").publish_list(["one", "two"])

        assert a.calls == []
        assert [c[0] for c in b.calls] == ["coerce", "coerce", "encode"]
        assert [m.encoded_payload for m in test_backend.messages()] == [b"B:one", b"B:two"]

        # pluggy itself would broadcast to every registered schema backend: deimos never
        # dispatches through it.
        bare = PluginRegistry(entry_points=False)
        bare.register("schema_backend", "rec_a", RecordingSchema("A"))
        bare.register("schema_backend", "rec_b", RecordingSchema("B"))
        context = SchemaContext("rec_b", None, None, "t", KeyConfig(), deimos.get_settings())
        results = bare.pm.hook.deimos_schema_encode(context=context, payloads=["x"])
        assert sorted(results) == [[b"A:x"], [b"B:x"]]


@pytest.mark.usefixtures("clear_test_backend")
def test_schema_backend_is_selected_per_producer_through_the_runtime() -> None:
    registry = get_registry()
    a, b = RecordingSchema("A"), RecordingSchema("B")
    with registry.registered("schema_backend", "rec_a", a), \
            registry.registered("schema_backend", "rec_b", b):
        deimos.configure(schema={"backend": "rec_a"}, producers={"backend": "test"})
        runtime = get_runtime()
        bound = runtime.schema_backend(topic="t", schema=None, namespace=None,
                                       key_config=KeyConfig(), backend="rec_b")
        assert bound.name == "rec_b"
        assert bound.encode(bound.context, ["p"]) == [b"B:p"]
        assert bound.decode(bound.context, [b"B:p"]) == ["p"]
        assert a.calls == []

        default = runtime.schema_backend(topic="t", schema=None, namespace=None,
                                         key_config=KeyConfig())
        assert default.encode(default.context, ["p"]) == [b"A:p"]
        assert len(b.calls) == 2


# --- producer backends ------------------------------------------------------------------------


@pytest.mark.usefixtures("clear_test_backend")
def test_publish_calls_only_the_configured_producer_backend() -> None:
    registry = get_registry()
    x, y = RecordingBackend(), RecordingBackend()
    with registry.registered("producer_backend", "rec_x", x), \
            registry.registered("producer_backend", "rec_y", y):
        deimos.configure(producers={"backend": "rec_y"})
        _producer("selection").publish("hello")
        assert x.batches == []
        assert [[m.encoded_payload for m in batch] for batch in y.batches] == [[b"hello"]]
        assert test_backend.messages() == []

        # a producer class may name its own backend
        _producer("selection", backend="rec_x").publish("other")
        assert [[m.encoded_payload for m in batch] for batch in x.batches] == [[b"other"]]
        assert len(y.batches) == 1


@pytest.mark.usefixtures("clear_test_backend")
def test_test_backend_receives_messages_when_selected() -> None:
    registry = get_registry()
    x = RecordingBackend()
    with registry.registered("producer_backend", "rec_x", x):
        deimos.configure(producers={"backend": "test"})
        _producer("selection").publish_list(["a", "b", "c"])
        assert x.batches == []
        assert [m.payload for m in test_backend.messages()] == ["a", "b", "c"]


def test_registered_always_unregisters() -> None:
    registry = get_registry()
    backend = RecordingBackend()
    with pytest.raises(RuntimeError), \
            registry.registered("producer_backend", "rec_gone", backend):
        assert "rec_gone" in registry.names("producer_backend")
        raise RuntimeError("boom")
    assert "rec_gone" not in registry.names("producer_backend")
    assert not registry.pm.is_registered(backend)


# --- metrics and tracing fan out --------------------------------------------------------------


@pytest.mark.usefixtures("clear_test_backend")
def test_metrics_fan_out_to_every_enabled_provider_with_global_tags() -> None:
    registry = get_registry()
    m1, m2, off = MockMetrics(), MockMetrics(), MockMetrics()
    with registry.registered("metrics", "fan_1", m1), \
            registry.registered("metrics", "fan_2", m2), \
            registry.registered("metrics", "fan_off", off):
        deimos.configure(producers={"backend": "test"},
                         metrics={"providers": ["fan_1", "fan_2"], "tags": {"env": "ci"}})
        _producer("fan").publish_list(["a", "b", "c"])

        expected = ("increment", "publish", 3, {"env": "ci", "topic": "fan"})
        assert m1.records == [expected]
        assert m2.records == [expected]
        assert off.records == []

        telemetry = get_runtime().telemetry
        telemetry.gauge("lag", 7, {"partition": "0"})
        telemetry.histogram("batch_size", 3.0)
        with telemetry.time("handler", {"env": "override"}):
            pass
        for m in (m1, m2):
            kinds = [(r[0], r[1], r[3]) for r in m.records[1:]]
            assert kinds == [
                ("gauge", "lag", {"env": "ci", "partition": "0"}),
                ("histogram", "batch_size", {"env": "ci"}),
                ("time", "handler", {"env": "override"}),
            ]
            assert m.records[-1][2] >= 0


def test_a_failing_metrics_provider_does_not_stop_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        @deimos.hookimpl
        def deimos_metrics_increment(self, name: str, value: int, tags: Any) -> None:
            raise RuntimeError("statsd is down")

    registry = get_registry()
    good = MockMetrics()
    with registry.registered("metrics", "fan_broken", Broken()), \
            registry.registered("metrics", "fan_good", good):
        deimos.configure(metrics={"providers": ["fan_broken", "fan_good"]})
        get_runtime().telemetry.increment("handler", 2)
    assert good.records == [("increment", "handler", 2, {})]
    assert "statsd is down" in caplog.text


@pytest.mark.usefixtures("clear_test_backend")
def test_tracing_fans_out_to_every_enabled_provider() -> None:
    registry = get_registry()
    t1, t2 = MockTracer(), MockTracer()
    with registry.registered("tracing", "trace_1", t1), \
            registry.registered("tracing", "trace_2", t2):
        deimos.configure(producers={"backend": "test"},
                         tracing={"providers": ["trace_1", "trace_2"]})
        _producer("traced").publish("x")
        for tracer in (t1, t2):
            assert [s.name for s in tracer.spans] == ["send traced"]
        [message] = test_backend.messages()
        header_names = [name for name, _ in message.headers or []]
        assert header_names == ["deimos-trace-id"]  # both inject the same header name


def test_unknown_metrics_provider_names_the_extra(uninstalled: Callable[..., None]) -> None:
    uninstalled("deimos-datadog")
    deimos.configure(metrics={"providers": ["datadog"]})
    with pytest.raises(UnknownPluginError) as info:
        get_runtime()
    message = str(info.value)
    assert message.startswith("Unknown metrics provider 'datadog'. Installed: ")
    assert "log" in message and "mock" in message
    assert message.endswith('Install it with: pip install "deimos-kafka[datadog]"')
