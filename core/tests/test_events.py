"""Instrumentation events: a plugin's ``deimos_event`` hook and application subscribers get
``deimos.encode_message`` per publish call; with nobody subscribed the pipeline holds no
emitter (the publish path unchanged); a failing subscriber never breaks a publish."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import deimos
import deimos.events
from deimos.hookspecs import hookimpl
from deimos.plugins import get_registry


class EventSink:
    """A metrics provider that only listens to events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Mapping[str, Any]]] = []

    @hookimpl
    def deimos_event(self, name: str, payload: Mapping[str, Any]) -> None:
        self.events.append((name, payload))


class Orders(deimos.Producer):
    topic = "orders"
    key_config = "plain"


@pytest.fixture
def sink(deimos_reset: None) -> Iterator[EventSink]:
    plugin = EventSink()
    with get_registry().registered("metrics", "eventsink", plugin):
        yield plugin
    deimos.configure()


def test_a_plugin_gets_encode_message_only_when_enabled(sink):
    deimos.configure(producers={"backend": "test"})
    Orders.publish("a", key="1")
    assert sink.events == [] and Orders._pipeline().on_encode is None
    assert not Orders._pipeline().special  # the default path: no event work at all

    deimos.configure(producers={"backend": "test"}, metrics={"providers": ["eventsink"]})
    sent = Orders.publish("b", key="2")
    Orders.publish_list(["c", "d"], keys=["3", "4"], topic="orders-eu")
    assert [(n, p["producer"], p["topic"], p["payloads"]) for n, p in sink.events] == [
        ("deimos.encode_message", Orders, "orders", ["b"]),
        ("deimos.encode_message", Orders, "orders-eu", ["c", "d"])]
    assert sink.events[0][1]["messages"] == sent and sent[0].encoded_payload == b"b"


def test_application_subscribers_come_and_go_and_cannot_break_a_publish(sink, caplog):
    deimos.configure(producers={"backend": "test"})
    Orders.publish("warm", key="0")  # a pipeline resolved before anyone subscribed
    seen: list[str] = []

    def broken(name: str, payload: Mapping[str, Any]) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = deimos.events.subscribe(lambda n, p: seen.append(p["payloads"][0]))
    unsubscribe_broken = deimos.events.subscribe(broken, "deimos.encode_message")
    with caplog.at_level(logging.ERROR, logger="deimos.events"):
        assert len(Orders.publish("x", key="1")) == 1
    assert seen == ["x"] and "subscriber bug" in caplog.text
    unsubscribe()
    unsubscribe_broken()
    Orders.publish("y", key="2")
    assert seen == ["x"] and Orders._pipeline().on_encode is None
    with pytest.raises(ValueError, match="unknown deimos event"):
        deimos.events.subscribe(broken, "deimos.no_such_event")


def test_apublish_reports_encode_message_too(sink):
    import asyncio

    deimos.configure(producers={"backend": "test"}, metrics={"providers": ["eventsink"]})

    async def go() -> None:
        await Orders.apublish("e", key="5")
        await Orders.apublish_list(["f"], keys=["6"])

    asyncio.run(go())
    assert [p["payloads"] for _, p in sink.events] == [["e"], ["f"]]
