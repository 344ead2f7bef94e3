"""Consumers: per-message and batch handlers, the error policy and the commit rules.

The package, one job a module:

* :mod:`~deimos.consumer.api`: what a handler class overrides and is given (``Consumer``,
  ``BatchConsumer``, their asyncio twins ``AsyncConsumer``/``AsyncBatchConsumer``,
  ``Metadata``, ``BatchMetadata``, ``BatchError``);
* :mod:`~deimos.consumer.settings`: class attributes and ``[[consumers]]`` entries resolved;
* :mod:`~deimos.consumer.decoding`: a polled batch decoded with the schema backend;
* :mod:`~deimos.consumer.policy`: the outcome of a pass and when a message is retried
  (``on_error``: ``raise``, ``retry``, ``dead_letter``, ``skip``, ``retry_topics``);
* :mod:`~deimos.consumer.dead_letters`: writing given-up messages to the dead-letter topic;
* :mod:`~deimos.consumer.retry_topics`: ``on_error = "retry_topics"``, the ladder and the
  forwards to its rungs;
* :mod:`~deimos.consumer.retry_loop`: the retry consumer reading the rungs, each message
  once it is due;
* :mod:`~deimos.consumer.processor`: decode, call the handler, apply the policy;
* :mod:`~deimos.consumer.concurrency`: ``max_concurrency``, a partition's messages handled
  at once, per key in order;
* :mod:`~deimos.consumer.aio`: where an asyncio handler's coroutines run;
* :mod:`~deimos.consumer.loop`: the broker loop (poll, pause/seek for retries, store and
  commit offsets).
"""

from deimos.consumer.api import (
    AsyncBatchConsumer,
    AsyncConsumer,
    BatchConsumer,
    BatchError,
    BatchMetadata,
    Consumer,
    Metadata,
    _Base,
)
from deimos.consumer.dead_letters import ERROR_HEADERS, DeadLetters
from deimos.consumer.loop import ConsumerLoop
from deimos.consumer.policy import Outcome, RetryPolicy
from deimos.consumer.processor import MessageProcessor
from deimos.consumer.settings import consumer_settings_for, import_class, resolve_settings
from deimos.kafka.config import consumer_config

__all__ = [
    "ERROR_HEADERS",
    "AsyncBatchConsumer",
    "AsyncConsumer",
    "BatchConsumer",
    "BatchError",
    "BatchMetadata",
    "Consumer",
    "ConsumerLoop",
    "DeadLetters",
    "MessageProcessor",
    "Metadata",
    "Outcome",
    "RetryPolicy",
    "_Base",
    "consumer_config",
    "consumer_settings_for",
    "import_class",
    "resolve_settings",
]
