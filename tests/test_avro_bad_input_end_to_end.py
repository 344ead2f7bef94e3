"""Issue 4's bad-input guarantees end to end: Avro through a synchronous Kafka producer and
through the outbox, on SQLite, PostgreSQL and MariaDB. Nothing half-done, nothing lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import deimos
import deimos_db
from deimos.config import reset
from deimos.errors import SchemaValidationError
from deimos.testing.broker import _free_port
from deimos_avro import RegistryError, clear_cache, reset_clients

SCHEMAS = Path(__file__).parents[1] / "plugins" / "avro" / "tests" / "schemas"
GOOD = {"id": 1, "name": "gear", "tags": ["a", "b"]}
BAD = {"id": 2, "name": "cog", "tags": ["a", "b", {"not": "a string"}]}

business = sa.Table("bad_input_orders", sa.MetaData(),
                    sa.Column("id", sa.Integer, primary_key=True))


class Widgets(deimos.Producer):
    topic = "widgets"
    schema = "Widget"
    namespace = "com.example"
    key_config = {"field": "id"}


def _configure(url: str, registry: str, backend: str) -> None:
    deimos.configure(schema={"backend": "avro_schema_registry", "path": str(SCHEMAS),
                             "registry_url": registry},
                     avro={"registry_config": {"max.retries": 0, "timeout": 2}},
                     kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     producers={"backend": backend}, db={"url": url})


@pytest.fixture
def db(deimos_database: str) -> Iterator[tuple[str, sa.Engine]]:
    engine = deimos_db.get_engine(deimos_database)
    deimos_db.create_tables(engine)
    business.create(engine)
    yield deimos_database, engine
    reset()
    reset_clients()
    clear_cache()
    deimos_db.dispose_engines()


def _counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        messages = conn.execute(sa.select(sa.func.count()).select_from(
            deimos_db.kafka_messages)).scalar()
        orders = conn.execute(sa.select(sa.func.count()).select_from(business)).scalar()
    return int(messages or 0), int(orders or 0)


DATABASES = pytest.mark.parametrize("deimos_database", ["sqlite", "postgresql", "mariadb"],
                                    indirect=True)


@DATABASES
def test_invalid_avro_payload_names_its_field_and_writes_nothing_to_the_outbox(db):
    url, engine = db
    _configure(url, "mock://bad-input", "db")
    with pytest.raises(SchemaValidationError, match=r"tags\[2\]"), Session(engine) as s, \
            deimos_db.transaction(s):
        s.execute(business.insert().values(id=1))
        Widgets.publish_list([GOOD, BAD])
        s.commit()
    assert _counts(engine) == (0, 0)


@DATABASES
def test_unreachable_registry_fails_the_transaction_whole_then_it_goes_through(db):
    url, engine = db
    _configure(url, "http://svc:hunter2@127.0.0.1:1", "db")
    with pytest.raises(RegistryError) as info, Session(engine) as s, \
            deimos_db.transaction(s):
        s.execute(business.insert().values(id=1))
        Widgets.publish(GOOD)
        s.commit()
    assert "127.0.0.1:1" in str(info.value) and "hunter2" not in str(info.value)
    assert _counts(engine) == (0, 0)  # neither the business row nor a half-made message
    _configure(url, "mock://bad-input-back", "db")  # the registry is back
    with Session(engine) as s, deimos_db.transaction(s):
        s.execute(business.insert().values(id=1))
        Widgets.publish(GOOD)
        s.commit()
    assert _counts(engine) == (1, 1)  # the message waits in the outbox for the DB producer


def test_synchronous_kafka_producer_raises_before_sending_on_bad_input(deimos_reset):
    _configure("sqlite://", "mock://bad-input-sync", "kafka")
    with pytest.raises(SchemaValidationError, match=r"tags\[2\]"):
        Widgets.publish_list([GOOD, BAD])
    _configure("sqlite://", "http://svc:hunter2@127.0.0.1:1", "kafka")
    with pytest.raises(RegistryError, match=r"127\.0\.0\.1:1"):
        Widgets.publish(GOOD)
    reset_clients()
    clear_cache()
