"""deimos-db: the producer's cluster on outbox rows (kafka_messages.cluster) and on the
dead letters (kafka_dead_letters.cluster), so the DB producer relays each message to the
cluster its producer chose; NULL is the default cluster (every row written before).

Revision ID: deimos_db_0003
Revises: deimos_db_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "deimos_db_0003"
down_revision = "deimos_db_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kafka_messages", sa.Column("cluster", sa.String(255), nullable=True))
    op.add_column("kafka_dead_letters", sa.Column("cluster", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kafka_dead_letters") as batch:
        batch.drop_column("cluster")
    with op.batch_alter_table("kafka_messages") as batch:
        batch.drop_column("cluster")
