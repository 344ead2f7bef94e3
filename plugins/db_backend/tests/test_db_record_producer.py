"""Record producers on SQLite, PostgreSQL and MariaDB: session events publish inserts, watched
updates and deletes through the outbox in the session's transaction (a rollback publishes
nothing), or after commit with a direct backend; send_events and generate_payload."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import deimos
from deimos.testing import sent_messages
from deimos_db import (
    RecordProducer,
    create_tables,
    dispose_engines,
    get_engine,
    kafka_messages,
    track_changes,
)
from deimos_db_helpers import ALL_DATABASES

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    color: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    updated_at: Mapped[_dt.datetime] = mapped_column(
        DateTime, default=lambda: _dt.datetime(2024, 5, 1, 12, 0, 0))


class WidgetProducer(RecordProducer):
    topic = "widgets"
    key_config = "plain"
    model = Widget

    @classmethod
    def watched_attributes(cls, record: Any) -> list[str]:
        return ["name"]


def outbox(engine: sa.Engine) -> list[tuple[bytes | None, Any]]:
    with engine.connect() as conn:
        return [(r.key, None if r.message is None else json.loads(r.message))
                for r in conn.execute(sa.select(kafka_messages).order_by(kafka_messages.c.id))]


@pytest.fixture
def engine(deimos_database: str, deimos_reset: None) -> Iterator[sa.Engine]:
    deimos.configure(producers={"backend": "db"}, schema={"backend": "mock"},
                     db={"url": deimos_database})
    engine = get_engine(deimos_database)
    create_tables(engine)
    Base.metadata.create_all(engine)
    yield engine
    dispose_engines()


@ALL_DATABASES
def test_session_changes_publish_through_the_outbox_in_the_same_transaction(engine):
    factory = sessionmaker(engine)
    with track_changes(WidgetProducer, target=factory):
        with factory() as s:
            s.add(Widget(id=1, name="one", color="red"))
            s.add(Widget(id=2, name="two"))
            s.commit()
        assert outbox(engine) == [
            (b"1", {"id": 1, "name": "one", "color": "red", "updated_at": "2024-05-01T12:00:00"}),
            (b"2", {"id": 2, "name": "two", "color": None, "updated_at": "2024-05-01T12:00:00"})]
        with factory() as s:
            w = s.get(Widget, 1)
            assert w is not None
            w.color = "blue"  # not watched: no message
            s.commit()
            assert len(outbox(engine)) == 2
            w.name = "uno"
            s.commit()
            s.delete(s.get(Widget, 2))
            s.commit()
        got = outbox(engine)
        assert got[2] == (b"1", {"id": 1, "name": "uno", "color": "blue",
                                 "updated_at": "2024-05-01T12:00:00"})
        assert got[3] == (b"2", None)  # the deletion is a tombstone
        # a rolled-back change publishes nothing: the outbox rows roll back with it
        with factory() as s:
            s.add(Widget(id=3, name="three"))
            w = s.get(Widget, 1)
            assert w is not None
            w.name = "lost"
            s.flush()
            s.rollback()
        assert len(outbox(engine)) == 4
    # detached: no more tracking
    with factory() as s:
        s.add(Widget(id=4, name="four"))
        s.commit()
    assert len(outbox(engine)) == 4


@ALL_DATABASES
def test_with_a_direct_backend_messages_go_after_commit_and_never_on_rollback(engine):
    deimos.configure(producers={"backend": "test"}, schema={"backend": "mock"},
                     db={"url": engine.url.render_as_string(hide_password=False)})
    with track_changes(WidgetProducer, target=Session):
        with Session(engine) as s:
            s.add(Widget(id=1, name="one"))
            s.flush()
            assert sent_messages() == []  # not before the commit
            s.commit()
        assert [(m.key, m.payload["name"]) for m in sent_messages()] == [(1, "one")]
        with Session(engine) as s:
            s.add(Widget(id=2, name="two"))
            s.flush()
            s.rollback()
            w = s.get(Widget, 1)
            assert w is not None
            s.delete(w)
            s.commit()
        assert [(m.key, m.payload) for m in sent_messages()][1:] == [(1, None)]
    assert outbox(engine) == []


def test_send_events_uses_the_schema_fields_and_converts_column_values(engine, tmp_path: Path):
    (tmp_path / "com" / "example").mkdir(parents=True)
    (tmp_path / "com" / "example" / "Widget.avsc").write_text(json.dumps({
        "type": "record", "name": "Widget", "namespace": "com.example", "fields": [
            {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
            {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ]}))
    deimos.configure(producers={"backend": "test"},
                     schema={"backend": "avro_validation", "path": str(tmp_path)},
                     db={"url": engine.url.render_as_string(hide_password=False)})

    class Typed(RecordProducer):
        topic = "typed"
        schema = "Widget"
        namespace = "com.example"
        key_config = {"field": "id"}
        model = Widget

    when = _dt.datetime(2024, 5, 1, 12, 0, 0)
    Typed.send_events([Widget(id=7, name="seven", color="red", updated_at=when),
                       {"id": 8, "name": "eight", "color": None, "updated_at": when}])
    got = sent_messages("typed")
    millis = int(when.replace(tzinfo=_dt.timezone.utc).timestamp() * 1000)
    assert [(m.key, m.payload) for m in got] == [
        (7, {"id": 7, "name": "seven", "updated_at": millis}),  # color is not a field
        (8, {"id": 8, "name": "eight", "updated_at": millis})]

    class Skipping(Typed):
        @classmethod
        def generate_payload(cls, attrs: dict[str, Any], record: Any) -> Any:
            if attrs["name"] == "skip":
                return None
            return {**super().generate_payload(attrs, record), "name": attrs["name"].upper()}

    Skipping.send_events([Widget(id=1, name="skip", updated_at=when),
                          Widget(id=2, name="up", updated_at=when)])
    assert [m.payload["name"] for m in sent_messages("typed")][2:] == ["UP"]
    Typed.send_deletions([Widget(id=9, name="gone", updated_at=when)])
    assert sent_messages("typed")[-1].payload is None and sent_messages("typed")[-1].key == 9


def test_the_default_hooks_give_the_same_messages_in_one_loop_as_called_per_record(engine):
    deimos.configure(producers={"backend": "test"}, schema={"backend": "mock"},
                     db={"url": engine.url.render_as_string(hide_password=False)})

    class PerRecord(WidgetProducer):
        """Overrides a hook, so send_events calls every hook for every record."""

        topic = "per-record"

        @classmethod
        def key_for(cls, attrs: Any, record: Any, payload: Any = None) -> Any:
            return super().key_for(attrs, record, payload)

    class Inlined(WidgetProducer):
        topic = "inlined"

    when = _dt.datetime(2024, 5, 1, 12, 0, 0)
    records: list[Any] = [
        Widget(id=7, name="seven", color="red", updated_at=when),
        {"id": 8, "name": "eight", "color": None, "updated_at": when},
        {"id": 9, "name": "nine", "color": None, "updated_at": when, "payload_key": "k9"}]
    for producer in (PerRecord, Inlined):
        producer.send_events(records)
    got = [(m.key, m.payload) for m in sent_messages("inlined")]
    assert got == [(m.key, m.payload) for m in sent_messages("per-record")]
    assert got == [
        (7, {"id": 7, "name": "seven", "color": "red", "updated_at": "2024-05-01T12:00:00"}),
        (8, {"id": 8, "name": "eight", "color": None, "updated_at": "2024-05-01T12:00:00"}),
        ("k9", {"id": 9, "name": "nine", "color": None, "updated_at": "2024-05-01T12:00:00"})]
    assert records[1] == {"id": 8, "name": "eight", "color": None, "updated_at": when}
