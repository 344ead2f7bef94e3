"""The ``deimos-error-message`` header of a dead letter never carries a SQL statement's bound
parameters (customer data), on SQLite, PostgreSQL and MariaDB, and is capped in length."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from deimos.consumer.dead_letters import error_message
from deimos_db_helpers import ALL_DATABASES

SECRET = "alice@example.com"
meta = sa.MetaData()
people = sa.Table("dl_message_people", meta,
                  sa.Column("id", sa.Integer, primary_key=True),
                  sa.Column("email", sa.String(100), nullable=False, unique=True),
                  sa.Column("qty", sa.Integer),
                  sa.CheckConstraint("qty > 0", name="ck_dl_message_qty"))


@pytest.fixture
def engine(deimos_database: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(deimos_database)
    meta.create_all(engine)
    yield engine
    engine.dispose()


def failure(engine: sa.Engine, **row: object) -> sa.exc.StatementError:
    with pytest.raises(sa.exc.StatementError) as info, engine.begin() as conn:
        conn.execute(people.insert(), [{"id": 1, "email": SECRET, "qty": 1}, row])
    return info.value


@ALL_DATABASES
def test_sql_errors_keep_the_drivers_error_and_the_sql_without_parameters(
        engine: sa.Engine) -> None:
    duplicate = failure(engine, id=2, email=SECRET, qty=2)
    assert SECRET in str(duplicate)  # what deimos used to copy into the header
    text = error_message(duplicate).decode()
    assert SECRET not in text, text
    assert ("unique" in text.lower() or "duplicate" in text.lower()), text
    assert "[SQL: INSERT INTO dl_message_people" in text, text

    check = failure(engine, id=2, email="bob@example.com", qty=-5)
    text = error_message(check).decode()
    assert "bob@example.com" not in text and SECRET not in text, text
    assert "[SQL: INSERT INTO dl_message_people" in text


def test_the_message_is_capped_on_a_character_boundary() -> None:
    long = ValueError("é" * 2000)
    capped = error_message(long, 1024)
    assert len(capped) <= 1024 and capped.endswith(b"...")
    capped.decode()  # no character cut in half
    assert error_message(ValueError("short")) == b"short"
