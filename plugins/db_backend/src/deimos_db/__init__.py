"""deimos-db: the transactional outbox.

The ``db`` producer backend (alias ``outbox``) writes messages to ``kafka_messages`` in your
database transaction (:func:`transaction`); the DB producer (:class:`DbProducer`,
:func:`run_db_producer`, ``deimos db-producer``) sends them to Kafka and deletes each row once
the broker acknowledged it.
"""

from __future__ import annotations

from deimos_db.engine import dispose_engines, get_engine, transaction
from deimos_db.models import (
    create_tables,
    kafka_dead_letters,
    kafka_messages,
    kafka_topic_info,
    metadata,
)
from deimos_db.settings import DbProducerSettings, DbSettings

__all__ = [
    "DbProducerSettings",
    "DbSettings",
    "create_tables",
    "dispose_engines",
    "get_engine",
    "kafka_dead_letters",
    "kafka_messages",
    "kafka_topic_info",
    "metadata",
    "transaction",
]
