"""deimos: schema-aware Kafka producers and consumers, a transactional outbox, metrics and
tracing, every implementation a plugin."""

from __future__ import annotations

from contextlib import AbstractContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from deimos.config import Settings, configure, get_settings
from deimos.consumer import (
    AsyncBatchConsumer,
    AsyncConsumer,
    BatchConsumer,
    BatchError,
    BatchMetadata,
    Consumer,
    Metadata,
)
from deimos.errors import (
    ConfigError,
    DeimosError,
    MissingKeyError,
    PublishError,
    SchemaValidationError,
)
from deimos.hookspecs import hookimpl
from deimos.message import Message
from deimos.producer import (
    Producer,
    Tombstone,
    disable_producers,
    flush,
    produce,
    producer_for,
    producers_disabled,
    tombstone,
)

if TYPE_CHECKING:
    from deimos.kafka.transactions import Transaction


def transaction() -> AbstractContextManager[Transaction]:
    """``with deimos.transaction(): MyProducer.publish(...)``: what the block publishes through
    the ``kafka`` backends commits in one Kafka transaction on exit, or is aborted when it
    raises (:func:`deimos.kafka.transactions.transaction`; needs
    ``producers.transactional_id``)."""
    from deimos.kafka.transactions import transaction as _transaction

    return _transaction()


def run(consumers: list[str] | None = None, **options: object) -> bool:
    """Run the configured consumers until SIGINT/SIGTERM (:func:`deimos.runner.run`)."""
    from deimos.runner import run as _run

    return _run(consumers, **options)  # type: ignore[arg-type]


try:
    __version__ = version("deimos-kafka")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = [
    "AsyncBatchConsumer",
    "AsyncConsumer",
    "BatchConsumer",
    "BatchError",
    "BatchMetadata",
    "ConfigError",
    "Consumer",
    "DeimosError",
    "Message",
    "Metadata",
    "MissingKeyError",
    "Producer",
    "PublishError",
    "SchemaValidationError",
    "Settings",
    "Tombstone",
    "__version__",
    "configure",
    "disable_producers",
    "flush",
    "get_settings",
    "hookimpl",
    "produce",
    "producer_for",
    "producers_disabled",
    "run",
    "tombstone",
    "transaction",
]
