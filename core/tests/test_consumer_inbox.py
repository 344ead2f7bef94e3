"""``inbox = true`` in core: the processor calls the handler through the wrappers of the one
plugin that answers ``deimos_consumer_inbox``; none or two answering is a settings error."""

from __future__ import annotations

from typing import Any

import pytest

import deimos
from deimos.config import get_settings
from deimos.consumer import BatchConsumer, MessageProcessor, resolve_settings
from deimos.consumer.inbox import inbox_for
from deimos.consumer.offline import drive
from deimos.errors import ConfigError
from deimos.hookspecs import hookimpl
from deimos.plugins import PluginRegistry
from deimos.runtime import Runtime


class Seen(deimos.Consumer):
    topic = "inbox-core"
    group_id = "g"
    got: list[str] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        self.got.append(payload)


class SeenBatch(BatchConsumer):
    topic = "inbox-core"
    group_id = "g"

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        Seen.got.extend(payloads)


class Recording:
    """An inbox that wraps each call in a marker: what the handler's calls went through."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def deimos_consumer_inbox(self, handler: Any, settings: Any) -> Any:
        return self

    def wrap_consume(self, consume: Any) -> Any:
        def wrapped(payload: Any, metadata: Any) -> None:
            self.calls.append(f"message {metadata.offset}")
            consume(payload, metadata)
        return wrapped

    def wrap_consume_batch(self, consume_batch: Any) -> Any:
        def wrapped(payloads: list[Any], metadata: Any) -> None:
            self.calls.append(f"batch {metadata.offsets}")
            consume_batch(payloads, metadata)
        return wrapped


def _messages(n: int) -> list[Any]:
    from confluent_kafka import Message as KafkaMessage

    return [KafkaMessage(topic="inbox-core", partition=0, offset=i, value=f"v{i}".encode())
            for i in range(n)]


def test_the_handler_is_called_through_the_inbox_wrappers(deimos_reset, monkeypatch):
    monkeypatch.setenv("DEIMOS_PLUGINS", "-db,-outbox")  # this test's inbox the only one
    runtime = Runtime(get_settings(), PluginRegistry())
    inbox = Recording()
    with runtime.registry.registered("metrics", "inbox_rec", inbox):
        Seen.got = []
        drive(MessageProcessor(Seen(), resolve_settings(Seen, inbox=True), runtime),
             _messages(2), wait=False)
        drive(MessageProcessor(SeenBatch(), resolve_settings(SeenBatch, inbox=True), runtime),
             _messages(3), wait=False)
        drive(MessageProcessor(Seen(), resolve_settings(Seen), runtime), _messages(1), wait=False)
    assert inbox.calls == ["message 0", "message 1", "batch [0, 1, 2]"]
    assert Seen.got == ["v0", "v1", "v0", "v1", "v2", "v0"]


def test_no_plugin_or_two_plugins_keeping_an_inbox_is_a_settings_error():
    settings = resolve_settings(Seen, inbox=True)
    registry = PluginRegistry(entry_points=False)
    with pytest.raises(ConfigError, match="no installed plugin keeps an inbox"):
        inbox_for(Seen(), settings, registry)
    with registry.registered("metrics", "a", Recording()), \
            registry.registered("metrics", "b", Recording()), \
            pytest.raises(ConfigError, match="2 installed plugins keep an inbox"):
        inbox_for(Seen(), settings, registry)
    assert inbox_for(Seen(), resolve_settings(Seen), registry) is None
