"""The outbox tables, as SQLAlchemy Core tables on their own ``MetaData``.

Include them in your own metadata (``deimos_db.models.metadata``), let Alembic create them
from the shipped migrations, or run ``deimos db init``.

* ``kafka_messages``: messages waiting to be sent, already encoded, in insertion (id) order.
  ``key_hash`` is a stable hash of the partition key (or key), so a split hot topic can give
  every key to exactly one shard.
* ``kafka_topic_info``: one row per topic (or shard ``topic#i/n``): who holds it and since
  when, the last error and how many retries it has had.
* ``kafka_dead_letters``: messages the broker can never accept (too large), kept with the
  error instead of being deleted.
* ``deimos_poll_info``: one row per DB poller: the (timestamp, id) of the last row it
  published, so a restarted poller resumes exactly there; the last error and how many batches
  it had to skip, so a skipped batch is never silent.
* ``deimos_inbox``: the (consumer, topic, partition, offset) of every message a record
  consumer with ``inbox = True`` applied, written in the same transaction as its rows, so a
  redelivered message is not applied twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

#: BIGINT ids, but INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: message bytes up to 4 GB on MySQL/MariaDB (BLOB stops at 64 KB)
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
KeyBlob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
Text = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
#: microseconds on MySQL/MariaDB too (their DATETIME keeps whole seconds by default)
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

kafka_messages = sa.Table(
    "kafka_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", KeyBlob, nullable=True),
    sa.Column("message", Blob, nullable=True),
    sa.Column("partition_key", KeyBlob, nullable=True),
    sa.Column("key_hash", sa.Integer, nullable=False, server_default="0"),
    sa.Column("headers", Text, nullable=True),
    sa.Column("created_at", DateTime, nullable=False),
    #: the producer's cluster (``kafka.clusters``); NULL: the default cluster
    sa.Column("cluster", sa.String(255), nullable=True),
    sa.Index("ix_kafka_messages_topic_id", "topic", "id"),
)

kafka_topic_info = sa.Table(
    "kafka_topic_info",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("locked_by", sa.String(100), nullable=True),
    sa.Column("locked_at", DateTime, nullable=True),
    sa.Column("error", Text, nullable=True),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_at", DateTime, nullable=True),
    sa.Column("last_processed_at", DateTime, nullable=True),
    sa.UniqueConstraint("topic", name="uq_kafka_topic_info_topic"),
    sa.Index("ix_kafka_topic_info_locked_at", "locked_at"),
)

kafka_dead_letters = sa.Table(
    "kafka_dead_letters",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.BigInteger, nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", KeyBlob, nullable=True),
    sa.Column("message", Blob, nullable=True),
    sa.Column("partition_key", KeyBlob, nullable=True),
    sa.Column("headers", Text, nullable=True),
    sa.Column("created_at", DateTime, nullable=False),
    sa.Column("failed_at", DateTime, nullable=False),
    sa.Column("error", Text, nullable=False),
    sa.Column("cluster", sa.String(255), nullable=True),
    sa.Index("ix_kafka_dead_letters_topic", "topic"),
)

deimos_poll_info = sa.Table(
    "deimos_poll_info",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("poller", sa.String(255), nullable=False),
    sa.Column("last_sent", DateTime, nullable=False),
    sa.Column("last_sent_id", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_run_at", DateTime, nullable=True),
    sa.Column("batches_errored", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", Text, nullable=True),
    sa.UniqueConstraint("poller", name="uq_deimos_poll_info_poller"),
)

deimos_inbox = sa.Table(
    "deimos_inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(255), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("consumed_at", DateTime, nullable=False),
    sa.UniqueConstraint("consumer", "topic", "partition", "offset",
                        name="uq_deimos_inbox_message"),
    sa.Index("ix_deimos_inbox_consumed_at", "consumed_at"),
)

TABLES = (kafka_messages, kafka_topic_info, kafka_dead_letters, deimos_poll_info, deimos_inbox)


#: columns added after a table's first release (all nullable): ``deimos db init`` adds them
#: to tables an earlier version created, as the shipped migrations do for Alembic users
ADDED_COLUMNS = (("kafka_messages", "cluster"), ("kafka_dead_letters", "cluster"))


def create_tables(bind: sa.Engine | sa.Connection) -> None:
    """Create deimos-db's tables that do not exist yet, and the columns later versions added
    to them (``deimos db init``)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    def run(conn: sa.Connection) -> None:
        metadata.create_all(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        ops = Operations(MigrationContext.configure(conn))
        for table, column in ADDED_COLUMNS:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                model = metadata.tables[table].c[column]
                ops.add_column(table, sa.Column(column, model.type, nullable=True))

    if isinstance(bind, sa.Connection):
        run(bind)
    else:
        with bind.begin() as conn:
            run(conn)
