"""The outbox with several clusters, on two real brokers and the three databases: each row
keeps its producer's cluster and the DB producer relays it there (Ruby Deimos's outbox
producer sends each topic through ``Deimos.producer_for(topic)``, the topic's cluster);
a cluster the settings no longer name keeps its rows with the error; ``deimos db init``
adds the column to tables an earlier version made.

The second broker is an embedded Tansu (``deimos_second_kafka``, per module)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

import deimos
from deimos.testing.broker import create_topic
from deimos_db import create_tables, kafka_messages, kafka_topic_info
from deimos_db.migrations import BRANCH, alembic_config
from deimos_db.producer import DbProducer
from deimos_db_helpers import ALL_DATABASES, FAST, count_rows, read_topic

pytestmark = [pytest.mark.kafka, ALL_DATABASES]


@pytest.fixture
def two(db: sa.Engine, deimos_kafka: str, deimos_second_kafka: str) -> tuple[str, str]:
    deimos.configure(
        kafka={"bootstrap_servers": deimos_kafka,
               "clusters": {"analytics": {"bootstrap_servers": deimos_second_kafka}}},
        producers={"backend": "db"},
        db={"url": db.url.render_as_string(hide_password=False), "producer": dict(FAST)})
    return deimos_kafka, deimos_second_kafka


def _both(a: str, b: str) -> str:
    """A topic of one name on both brokers, so a message relayed to the wrong one is seen."""
    name = f"oc-{uuid.uuid4().hex[:10]}"
    create_topic(a, name)
    create_topic(b, name)
    return name


def _clusters(db: sa.Engine) -> list[Any]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            sa.select(kafka_messages.c.cluster).order_by(kafka_messages.c.id))]


def test_each_row_is_relayed_to_its_producers_cluster(two: tuple[str, str], db: sa.Engine) -> None:
    a, b = two
    topic = _both(a, b)

    class ToDefault(deimos.Producer):
        key_config = "plain"

    class ToAnalytics(deimos.Producer):
        key_config = "plain"
        cluster = "analytics"

    ToDefault.topic = ToAnalytics.topic = topic
    # interleaved, the same keys on both: each cluster keeps its own per-key order
    for i in range(3):
        ToDefault.publish(f"d{i}", key=f"k{i % 2}")
        ToAnalytics.publish(f"a{i}", key=f"k{i % 2}")
    assert _clusters(db) == [None, "analytics"] * 3  # the default cluster stays NULL
    assert DbProducer().process_next() == 6
    assert count_rows(db) == 0
    on_default = read_topic(a, topic, 3, settle=0.5)
    on_analytics = read_topic(b, topic, 3, settle=0.5)
    assert [m.value() for m in on_default] == [b"d0", b"d1", b"d2"]
    assert [m.value() for m in on_analytics] == [b"a0", b"a1", b"a2"]


def test_compaction_keeps_one_message_per_key_per_cluster(
        two: tuple[str, str], db: sa.Engine) -> None:
    a, b = two
    topic = _both(a, b)
    deimos.configure(db={"producer": {**FAST, "compact_topics": [topic]}})

    class ToDefault(deimos.Producer):
        key_config = "plain"

    class ToAnalytics(deimos.Producer):
        key_config = "plain"
        cluster = "analytics"

    ToDefault.topic = ToAnalytics.topic = topic
    ToDefault.publish("d-old", key="k")
    ToAnalytics.publish("a-old", key="k")
    ToDefault.publish("d-new", key="k")
    assert DbProducer().process_next() == 3
    assert [m.value() for m in read_topic(a, topic, 1, settle=0.5)] == [b"d-new"]
    # the default cluster's later row of key k does not compact the analytics row away
    assert [m.value() for m in read_topic(b, topic, 1, settle=0.5)] == [b"a-old"]


def test_a_cluster_no_longer_configured_keeps_its_rows_with_the_error(
        two: tuple[str, str], db: sa.Engine) -> None:
    a, b = two
    stuck, flowing = _both(a, b), _both(a, b)

    class ToAnalytics(deimos.Producer):
        key_config = "plain"
        cluster = "analytics"

    class ToDefault(deimos.Producer):
        key_config = "plain"

    ToAnalytics.topic, ToDefault.topic = stuck, flowing
    ToAnalytics.publish("a0", key="k")
    ToDefault.publish("d0", key="k")
    # a DB producer whose settings lost the analytics cluster
    url = db.url.render_as_string(hide_password=False)
    deimos.configure(kafka={"bootstrap_servers": a}, producers={"backend": "db"},
                     db={"url": url, "producer": dict(FAST)}, replace=True)
    assert DbProducer().process_next() == 1  # the other topic flows
    assert [m.value() for m in read_topic(a, flowing, 1)] == [b"d0"]
    assert count_rows(db) == 1
    with db.connect() as conn:
        error = conn.execute(sa.select(kafka_topic_info.c.error)
                             .where(kafka_topic_info.c.topic == stuck)).scalar()
    assert "'analytics'" in error and "kafka.clusters" in error
    # named again (and the topic's backoff over), the rows go where they were meant to
    with db.begin() as conn:
        conn.execute(kafka_topic_info.update().where(kafka_topic_info.c.topic == stuck)
                     .values(retry_at=None))
    deimos.configure(kafka={"bootstrap_servers": a,
                            "clusters": {"analytics": {"bootstrap_servers": b}}},
                     db={"url": url, "producer": dict(FAST)},
                     producers={"backend": "db"}, replace=True)
    assert DbProducer().process_next() == 1
    assert [m.value() for m in read_topic(b, stuck, 1)] == [b"a0"]


def test_deimos_db_init_adds_the_cluster_column_to_an_earlier_versions_tables(
        deimos_database: str) -> None:
    command.upgrade(alembic_config(deimos_database), f"{BRANCH}@deimos_db_0002")
    engine = sa.create_engine(deimos_database)
    try:
        assert "cluster" not in {c["name"] for c in sa.inspect(engine).get_columns(
            "kafka_messages")}
        create_tables(engine)
        for table in ("kafka_messages", "kafka_dead_letters"):
            assert "cluster" in {c["name"] for c in sa.inspect(engine).get_columns(table)}
        create_tables(engine)  # and again: nothing left to add
    finally:
        engine.dispose()
