"""Alembic environment for running deimos-db's migrations on their own."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from deimos_db.models import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(url)  # type: ignore[arg-type]
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
