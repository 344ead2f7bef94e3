"""Isolated databases for tests: SQLite (a temp file), PostgreSQL and MariaDB.

Each ``isolated_database(kind)`` gives a SQLAlchemy URL of a database (PostgreSQL: schema)
nobody else uses and drops it afterwards, so tests can run in any order. The server URLs come
from ``DEIMOS_TEST_POSTGRES_URL`` / ``DEIMOS_TEST_MYSQL_URL`` (defaults: the local servers
with trust/empty-password auth and database ``test``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator

POSTGRES_URL = os.environ.get(
    "DEIMOS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("DEIMOS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

KINDS = ("sqlite", "postgresql", "mariadb")


@contextlib.contextmanager
def isolated_database(kind: str) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty database of ``kind``; dropped afterwards."""
    import sqlalchemy as sa

    name = f"deimos_t_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="deimos-db-") as d:
            yield f"sqlite:///{os.path.join(d, name + '.sqlite')}"
        return
    if kind == "postgresql":
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        url = sa.engine.make_url(POSTGRES_URL).update_query_dict(
            {"options": f"-csearch_path={name}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
            admin.dispose()
        return
    if kind == "mariadb":
        admin = sa.create_engine(MYSQL_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE `{name}`"))
        url = sa.engine.make_url(MYSQL_URL).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f"DROP DATABASE `{name}`"))
            admin.dispose()
        return
    raise ValueError(f"unknown database kind {kind!r}; use one of {', '.join(KINDS)}")
