"""deimos-db: the transactional outbox.

The ``db`` producer backend (alias ``outbox``) writes messages to ``kafka_messages`` in your
database transaction (:func:`transaction`); the DB producer (:class:`DbProducer`,
:func:`run_db_producer`, ``deimos db-producer``) sends them to Kafka and deletes each row once
the broker acknowledged it.

Records: :class:`RecordProducer` (with :func:`track_changes`) publishes rows of a SQLAlchemy
model, :class:`DbPoller` (``deimos db-poller``) publishes changed rows on a schedule, and
:class:`RecordConsumer` writes messages into a model's table with bulk upserts (with the rows of
its relationships, :mod:`deimos_db.associations`); :func:`deadlock_retry` runs a transaction
again after a deadlock or lock timeout, as the record consumer does.

Exactly-once effects (:mod:`deimos_db.inbox`): any consumer with ``inbox = true`` handles each
message (each batch) in one transaction with its inbox row; its handler writes through
:func:`session` and publishes through the ``db`` backend in that same transaction.
"""

from __future__ import annotations

from deimos_db.deadlock import deadlock_retry, retry_transaction
from deimos_db.engine import current_bind, dispose_engines, get_engine, session, transaction
from deimos_db.inbox import prune_inbox
from deimos_db.models import (
    create_tables,
    deimos_inbox,
    deimos_poll_info,
    kafka_dead_letters,
    kafka_messages,
    kafka_topic_info,
    metadata,
)
from deimos_db.poller import DbPoller, DbPollerGroup, run_db_pollers
from deimos_db.record_consumer import RecordConsumer, RecordMessage
from deimos_db.record_producer import RecordProducer, track_changes
from deimos_db.settings import DbPollerSettings, DbProducerSettings, DbSettings

__all__ = [
    "DbPoller",
    "DbPollerGroup",
    "DbPollerSettings",
    "DbProducerSettings",
    "DbSettings",
    "RecordConsumer",
    "RecordMessage",
    "RecordProducer",
    "create_tables",
    "current_bind",
    "deadlock_retry",
    "deimos_inbox",
    "deimos_poll_info",
    "dispose_engines",
    "get_engine",
    "kafka_dead_letters",
    "kafka_messages",
    "kafka_topic_info",
    "metadata",
    "prune_inbox",
    "retry_transaction",
    "run_db_pollers",
    "session",
    "track_changes",
    "transaction",
]
