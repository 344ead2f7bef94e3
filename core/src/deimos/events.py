"""Instrumentation events: Ruby Deimos's Karafka monitor events as a hook.

An event is a name and a dict. Plugins receive them through the ``deimos_event`` hook (the
enabled metrics and tracing providers and the selected producer and schema backends that
implement it); applications with :func:`subscribe`. The events:

=============================================  =============================================
``deimos.encode_message``                      a producer encoded the messages of one
                                               ``publish``/``publish_list`` call: ``producer``
                                               (the class, or None for ``deimos.produce``),
                                               ``topic``, ``payloads``, ``messages``
``deimos.outbox.produce``                      the DB producer sent a batch: ``topic``,
                                               ``messages`` (the rows), ``sent``, ``dead``
                                               (rows moved to kafka_dead_letters, with their
                                               error), ``exception`` (the batch's error)
``deimos.batch_consumption.valid_records``     a record consumer committed rows: ``consumer``,
                                               ``topic``, ``partition``, ``records`` (the
                                               ``RecordMessage`` s written)
``deimos.batch_consumption.invalid_records``   ``should_consume`` dropped messages: the same
                                               keys, ``records`` the dropped ones
``deimos.batch_consumption.initial_failure``   a bulk write failed and is written again row by
                                               row: ``consumer``, ``topic``, ``partition``,
                                               ``operation``, ``count``, ``error``
``deimos.inbox.committed``                     a consumer with ``inbox = true`` committed the
                                               database transaction of a message or batch,
                                               before its Kafka offset commit: ``consumer``
                                               (its inbox name), ``topic``, ``partition``,
                                               ``offsets``
=============================================  =============================================

Nobody subscribed, nothing is done: an emitting place asks for its event's emitter once (a
producer pipeline when it is built, a consumer or the DB producer per batch) and gets None.
A subscriber that raises is logged and skipped; events never break message flow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from deimos.errors import PluginError

if TYPE_CHECKING:
    from deimos.config import Settings
    from deimos.plugins import PluginRegistry

log = logging.getLogger("deimos.events")

ENCODE_MESSAGE = "deimos.encode_message"
OUTBOX_PRODUCE = "deimos.outbox.produce"
VALID_RECORDS = "deimos.batch_consumption.valid_records"
INVALID_RECORDS = "deimos.batch_consumption.invalid_records"
INITIAL_FAILURE = "deimos.batch_consumption.initial_failure"
INBOX_COMMITTED = "deimos.inbox.committed"
EVENTS = frozenset({ENCODE_MESSAGE, OUTBOX_PRODUCE, VALID_RECORDS, INVALID_RECORDS,
                    INITIAL_FAILURE, INBOX_COMMITTED})

Subscriber = Callable[[str, Mapping[str, Any]], None]
Emitter = Callable[[Mapping[str, Any]], None]

_lock = threading.Lock()
#: application subscribers: (the event names, None for all; the function)
_subscribers: list[tuple[frozenset[str] | None, Subscriber]] = []
#: bumped on every (un)subscribe, so emitters resolved earlier are resolved again
_version = 0
#: called after a change, for places that keep an emitter longer than a batch
_on_change: list[Callable[[], None]] = []


def subscribe(fn: Subscriber, *names: str) -> Callable[[], None]:
    """Call ``fn(name, payload)`` for the events ``names`` (every event when none given);
    returns a function that unsubscribes it. Subscribers run in the thread that emits."""
    unknown = set(names) - EVENTS
    if unknown:
        raise ValueError(f"unknown deimos event(s) {sorted(unknown)}; the events are "
                         f"{', '.join(sorted(EVENTS))}")
    entry = (frozenset(names) if names else None, fn)
    with _lock:
        _subscribers.append(entry)
    _changed()

    def unsubscribe() -> None:
        with _lock:
            if entry in _subscribers:
                _subscribers.remove(entry)
        _changed()

    return unsubscribe


def on_change(fn: Callable[[], None]) -> None:
    _on_change.append(fn)


def _changed() -> None:
    global _version
    with _lock:
        _version += 1
    for fn in list(_on_change):
        fn()


class EventBus:
    """The event subscribers of one runtime (plugins resolved when the runtime is made)."""

    def __init__(self, registry: PluginRegistry, settings: Settings) -> None:
        self._plugins: list[Subscriber] = []
        in_use = [("metrics", n) for n in settings.metrics.providers]
        in_use += [("tracing", n) for n in settings.tracing.providers]
        in_use += [("producer_backend", settings.producers.backend),
                   ("schema_backend", settings.schema.backend)]
        for kind, name in dict.fromkeys(in_use):
            try:
                fn = registry.caller(kind, name, "deimos_event")
            except PluginError:
                continue  # reported where the plugin is selected
            if fn is not None:
                self._plugins.append(fn)
        self._emitters: dict[str, Emitter | None] = {}
        self._version = -1

    def emitter(self, name: str) -> Emitter | None:
        """A function emitting event ``name`` to its subscribers, None when it has none."""
        if self._version != _version:
            self._emitters = {}
            self._version = _version
        if name in self._emitters:
            return self._emitters[name]
        subs = list(self._plugins) + [fn for names, fn in _subscribers
                                      if names is None or name in names]
        emit = _emit_to(name, subs) if subs else None
        self._emitters[name] = emit
        return emit


def _emit_to(name: str, subscribers: list[Subscriber]) -> Emitter:
    def emit(payload: Mapping[str, Any]) -> None:
        for fn in subscribers:
            try:
                fn(name, payload)
            except Exception:  # instrumentation must never break message flow
                log.exception("event subscriber %s failed on %s",
                              getattr(fn, "__qualname__", fn), name)
    return emit


__all__ = ["EVENTS", "EventBus", "subscribe"]
