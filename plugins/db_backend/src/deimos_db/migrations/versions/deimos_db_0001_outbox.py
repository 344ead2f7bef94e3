"""deimos-db: kafka_messages, kafka_topic_info and kafka_dead_letters.

Revision ID: deimos_db_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "deimos_db_0001"
down_revision = None
branch_labels = ("deimos_db",)
depends_on = None

# the column types of deimos_db.models, spelled out so that later model changes never
# change what this revision does
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
KeyBlob = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
Text = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
#: microseconds on MySQL/MariaDB too (their DATETIME keeps whole seconds by default)
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "kafka_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", KeyBlob, nullable=True),
        sa.Column("message", Blob, nullable=True),
        sa.Column("partition_key", KeyBlob, nullable=True),
        sa.Column("key_hash", sa.Integer, nullable=False, server_default="0"),
        sa.Column("headers", Text, nullable=True),
        sa.Column("created_at", DateTime, nullable=False),
    )
    op.create_index("ix_kafka_messages_topic_id", "kafka_messages", ["topic", "id"])
    op.create_table(
        "kafka_topic_info",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("locked_by", sa.String(100), nullable=True),
        sa.Column("locked_at", DateTime, nullable=True),
        sa.Column("error", Text, nullable=True),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retry_at", DateTime, nullable=True),
        sa.Column("last_processed_at", DateTime, nullable=True),
        sa.UniqueConstraint("topic", name="uq_kafka_topic_info_topic"),
    )
    op.create_index("ix_kafka_topic_info_locked_at", "kafka_topic_info", ["locked_at"])
    op.create_table(
        "kafka_dead_letters",
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
    )
    op.create_index("ix_kafka_dead_letters_topic", "kafka_dead_letters", ["topic"])


def downgrade() -> None:
    op.drop_table("kafka_dead_letters")
    op.drop_table("kafka_topic_info")
    op.drop_table("kafka_messages")
