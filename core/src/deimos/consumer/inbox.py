"""``inbox = true``: the consumer's handler calls wrapped by a plugin that keeps an inbox.

Core knows no database. A plugin answering the ``deimos_consumer_inbox`` hook (deimos-db
does) returns a :class:`ConsumerInbox`, whose wrappers run each handler call (a message, or a
batch of a batch consumer) in one transaction that first skips what the inbox already holds
and records the rest. The processor calls the wrapped functions in place of the handler's own
methods, so retries, dead letters and offset commits work as without an inbox; the offset
commit comes after the wrapper returned, i.e. after the transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from deimos.errors import ConfigError

if TYPE_CHECKING:
    from deimos.config import ConsumerSettings
    from deimos.consumer.api import BatchMetadata, Metadata
    from deimos.plugins import PluginRegistry

Consume = Callable[[Any, "Metadata"], None]
ConsumeBatch = Callable[[list[Any], "BatchMetadata"], None]


class ConsumerInbox(Protocol):
    """What a plugin's ``deimos_consumer_inbox`` returns."""

    def wrap_consume(self, consume: Consume) -> Consume:
        """``consume`` run in the inbox's transaction, skipped for a redelivered message."""
        ...

    def wrap_consume_batch(self, consume_batch: ConsumeBatch) -> ConsumeBatch:
        """``consume_batch`` run in one transaction for the batch, given only the messages
        the inbox does not hold yet; a failure must be raised as (or become) an error of the
        first message the call was given, since nothing of the call committed."""
        ...


def inbox_for(handler: Any, settings: ConsumerSettings, registry: PluginRegistry
              ) -> ConsumerInbox | None:
    """The inbox of a consumer with ``inbox = true`` (None without): the one installed
    plugin's answer; a :class:`ConfigError` when none or several answer."""
    if not settings.inbox:
        return None
    from deimos.plugins import call_all

    answers = [a for a in call_all(registry.all(), "deimos_consumer_inbox", handler, settings)
               if a is not None]
    where = f"consumers.{settings.name}.inbox"
    if not answers:
        raise ConfigError([(where, "no installed plugin keeps an inbox (one implementing "
                                   "the deimos_consumer_inbox hook; docs/exactly-once.md)")])
    if len(answers) > 1:
        raise ConfigError([(where, f"{len(answers)} installed plugins keep an inbox; "
                                   "exactly one may")])
    inbox: ConsumerInbox = answers[0]
    return inbox


__all__ = ["ConsumerInbox", "inbox_for"]
