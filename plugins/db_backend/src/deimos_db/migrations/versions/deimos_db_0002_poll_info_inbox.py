"""deimos-db: deimos_poll_info (DB poller state) and deimos_inbox (record consumer inbox).

Revision ID: deimos_db_0002
Revises: deimos_db_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "deimos_db_0002"
down_revision = "deimos_db_0001"
branch_labels = None
depends_on = None

# spelled out, as in deimos_db_0001, so later model changes never change this revision
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Text = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "deimos_poll_info",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("poller", sa.String(255), nullable=False),
        sa.Column("last_sent", DateTime, nullable=False),
        sa.Column("last_sent_id", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_run_at", DateTime, nullable=True),
        sa.Column("batches_errored", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", Text, nullable=True),
        sa.UniqueConstraint("poller", name="uq_deimos_poll_info_poller"),
    )
    op.create_table(
        "deimos_inbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("consumed_at", DateTime, nullable=False),
        sa.UniqueConstraint("consumer", "topic", "partition", "offset",
                            name="uq_deimos_inbox_message"),
    )
    op.create_index("ix_deimos_inbox_consumed_at", "deimos_inbox", ["consumed_at"])


def downgrade() -> None:
    op.drop_table("deimos_inbox")
    op.drop_table("deimos_poll_info")
