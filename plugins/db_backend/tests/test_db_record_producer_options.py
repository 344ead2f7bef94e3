"""Record producer and poller options on SQLite, PostgreSQL and MariaDB (test backend):
``refetch`` loads dict records in one query, ``post_process`` runs after publishing (also per
poller batch), ``truncate_columns`` cuts tracked rows before the flush, and a custom
``poller_class`` with its own ``producer_classes`` and ``publish_batch``."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import deimos
from deimos.errors import DeimosError
from deimos.testing import sent_messages
from deimos_db import (
    DbPoller,
    RecordProducer,
    create_tables,
    dispose_engines,
    get_engine,
    track_changes,
)
from deimos_db.poller import poller_factories
from deimos_db_helpers import ALL_DATABASES

pytestmark = ALL_DATABASES

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class Tool(Base):
    __tablename__ = "tools"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(8))
    owner: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    updated_at: Mapped[_dt.datetime] = mapped_column(
        DateTime, default=lambda: _dt.datetime(2024, 5, 1, 12, 0, 0))


class ToolProducer(RecordProducer):
    topic = "tools"
    key_config = "plain"
    model = Tool
    processed: ClassVar[list[list[Any]]] = []

    @classmethod
    def generate_payload(cls, attrs: dict[str, Any], record: Any) -> Any:
        # reads the record, not attrs: a dict record without refetch has no .owner
        return {"id": attrs["id"], "name": attrs.get("name"), "owner": record.owner}

    @classmethod
    def post_process(cls, records: Sequence[Any]) -> None:
        cls.processed.append([r["id"] if isinstance(r, dict) else r.id for r in records])


class Refetching(ToolProducer):
    refetch = True


@pytest.fixture
def engine(deimos_database: str, deimos_test_mode: Any) -> Iterator[sa.Engine]:
    deimos.configure(schema={"backend": "mock"}, db={"url": deimos_database})
    engine = get_engine(deimos_database)
    create_tables(engine)
    Base.metadata.create_all(engine)
    ToolProducer.processed.clear()
    yield engine
    dispose_engines()


def seed(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(Tool.__table__.insert(), [
            {"id": i, "name": f"t{i}", "owner": f"o{i}",
             "updated_at": _dt.datetime(2024, 1, 1, 0, 0, i)} for i in range(1, n + 1)])


def payloads(topic: str) -> list[Any]:
    return [m.payload for m in sent_messages(topic)]


def test_refetch_loads_dict_records_in_one_query_and_post_process_follows(engine):
    seed(engine, 3)
    selects: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        Refetching.send_events([{"id": 1, "name": "x"}, {"id": 3}])
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(selects) == 1
    # attrs are the dict's; the record was loaded (id 99 does not exist: the dict stays)
    with pytest.raises(AttributeError):
        Refetching.send_events([{"id": 99}])
    assert payloads("tools")[:2] == [{"id": 1, "name": "x", "owner": "o1"},
                                     {"id": 3, "name": None, "owner": "o3"}]
    with pytest.raises(AttributeError):  # without refetch the hook gets the dict
        ToolProducer.send_events([{"id": 1}])
    assert ToolProducer.processed == [[1, 3]]  # only the call that published
    with Session(engine) as session:
        tools = list(session.scalars(sa.select(Tool).order_by(Tool.id)))
        ToolProducer.send_events(tools)
    assert ToolProducer.processed == [[1, 3], [1, 2, 3]]


def test_truncate_columns_cuts_tracked_rows_before_the_flush(engine):
    class Truncating(ToolProducer):
        truncate_columns = True

    with track_changes(Truncating), Session(engine) as session:
        session.add(Tool(id=1, name="much-too-long", owner="someone-with-a-long-name"))
        session.commit()
        tool = session.get(Tool, 1)
        assert tool is not None
        tool.name = "another-long-one"
        session.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.select(Tool.name, Tool.owner)).one() == ("another-", "someone-"
                                                                        "with-a-long-")
    assert [p["name"] for p in payloads("tools")] == ["much-too", "another-"]


class Auditing(DbPoller):
    """A custom poller_class: its own producers, and batches counted before publishing."""

    producer_classes = (ToolProducer,)
    batches: ClassVar[list[int]] = []

    def publish_batch(self, records: Sequence[Any]) -> None:
        self.batches.append(len(records))
        super().publish_batch(records)


def test_a_custom_poller_class_feeds_its_own_producers(engine, deimos_database):
    seed(engine, 5)
    Auditing.batches.clear()
    settings = deimos.configure(schema={"backend": "mock"}, db={
        "url": deimos_database,
        "pollers": [{"poller_class": f"{__name__}:Auditing", "batch_size": 2,
                     "delay_time": 0}]})
    (factory,) = poller_factories(settings)
    poller = factory()
    assert isinstance(poller, Auditing) and poller.name == f"{__name__}:Auditing"
    status = poller.process_updates()  # type: ignore[attr-defined]
    assert status.messages_processed == 5 and Auditing.batches == [2, 2, 1]
    assert [p["id"] for p in payloads("tools")] == [1, 2, 3, 4, 5]
    assert ToolProducer.processed == [[1, 2], [3, 4], [5]]  # post_process per batch

    with pytest.raises(DeimosError, match=r"is not a subclass of deimos_db\.DbPoller"):
        poller_factories(deimos.configure(schema={"backend": "mock"}, db={
            "url": deimos_database,
            "pollers": [{"poller_class": f"{__name__}:ToolProducer"}]}))
