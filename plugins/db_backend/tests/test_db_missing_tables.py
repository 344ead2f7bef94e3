"""A database without deimos-db's tables: the error names the fix (``deimos db init``)."""

from __future__ import annotations

import pytest

import deimos
from deimos_db import dispose_engines
from deimos_db.engine import MissingTableError
from deimos_db_helpers import ALL_DATABASES


@ALL_DATABASES
def test_publishing_to_the_outbox_without_its_tables_says_run_deimos_db_init(
        deimos_database: str, deimos_reset: None) -> None:
    deimos.configure(producers={"backend": "db"}, db={"url": deimos_database})

    class P(deimos.Producer):
        topic = "orders"

    try:
        with pytest.raises(MissingTableError, match=r"kafka_messages .*run `deimos db init`"):
            P.publish("x")
    finally:
        dispose_engines()
