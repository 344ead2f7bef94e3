"""The DB poller on SQLite, PostgreSQL and MariaDB with the real broker: every row (and every
update) arrives once across batch boundaries inside one timestamp, a restart resumes where it
left off, state-based mode marks rows, a failing row is skipped and recorded, a too-large one
too, and the CLI runs the configured pollers. Producers that override no hook handed the
record get the rows as column values instead of loaded instances: the same messages, the same
positions, the same session-wide filters, the same skipping."""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, with_loader_criteria

import deimos
from deimos_db import (
    DbPoller,
    DbPollerGroup,
    DbPollerSettings,
    RecordProducer,
    create_tables,
    deimos_poll_info,
    dispose_engines,
    get_engine,
)
from deimos_db.engine import utcnow
from deimos_db_helpers import ALL_DATABASES, mock_metrics, read_topic, wait_for

pytestmark = [pytest.mark.kafka, ALL_DATABASES]

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text().with_variant(mysql.LONGTEXT(), "mariadb",
                                                             "mysql"))
    updated_at: Mapped[_dt.datetime] = mapped_column(DateTime)
    state: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    published_at: Mapped[_dt.datetime | None] = mapped_column(DateTime, nullable=True)


class ItemProducer(RecordProducer):
    topic = "items"
    key_config = "plain"
    model = Item

    @classmethod
    def generate_payload(cls, attrs: dict[str, Any], record: Any) -> Any:
        if attrs["name"] == "poison":
            raise ValueError("cannot publish a poisoned row")
        return {"id": attrs["id"], "name": attrs["name"]}


class ItemAudit(ItemProducer):
    topic = "items-audit"


class PlainItemProducer(RecordProducer):
    """The default hooks: the poller hands it column values, never loads an instance."""

    topic = "plain-items"
    key_config = "plain"
    model = Item


class Gadget(Base):
    __tablename__ = "gadgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column("name", sa.String(50))  # attribute named otherwise
    price: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(10, 2))
    hidden: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    updated_at: Mapped[_dt.datetime] = mapped_column(DateTime)


class GadgetProducer(RecordProducer):
    topic = "gadgets"
    key_config = "plain"
    model = Gadget


class LoadedGadgetProducer(GadgetProducer):
    """Overrides a hook handed the record: the poller loads instances for it."""

    topic = "gadgets-loaded"

    @classmethod
    def generate_payload(cls, attrs: dict[str, Any], record: Any) -> Any:
        assert isinstance(record, Gadget)
        return super().generate_payload(attrs, record)


T0 = _dt.datetime(2024, 1, 1, 9, 0, 0)


@pytest.fixture
def setup(deimos_database: str, deimos_reset: None, deimos_kafka: str,
          deimos_topic: Callable[..., str]) -> Iterator[sa.Engine]:
    ItemProducer.topic = deimos_topic()
    ItemAudit.topic = deimos_topic()
    PlainItemProducer.topic = deimos_topic()
    GadgetProducer.topic = deimos_topic()
    LoadedGadgetProducer.topic = deimos_topic()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka}, producers={"backend": "kafka"},
                     schema={"backend": "mock"}, metrics={"providers": ["mock"]},
                     db={"url": deimos_database})
    mock_metrics().clear()
    engine = get_engine(deimos_database)
    create_tables(engine)
    Base.metadata.create_all(engine)
    yield engine
    dispose_engines()


def insert(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(Item.__table__.insert(), rows)


def config(**kw: Any) -> DbPollerSettings:
    base: dict[str, Any] = {"name": "items", "producer_class": f"{__name__}:ItemProducer",
                            "batch_size": 10, "delay_time": 0, "retry": {"backoff": 0.01}}
    if "attempts" in kw:
        base["retry"] = {**base["retry"], "attempts": kw.pop("attempts")}
    return DbPollerSettings.model_validate({**base, **kw})


def ids(messages: list[Any]) -> Counter[int]:
    return Counter(json.loads(m.value())["id"] for m in messages)


def test_every_row_and_update_arrives_once_and_a_restart_resumes(setup, deimos_kafka):
    engine = setup
    # 25 rows sharing one timestamp: batches of 10 cut through it
    insert(engine, [{"id": i, "name": f"n{i}", "updated_at": T0} for i in range(1, 26)])
    inserted_while_polling = threading.Event()

    class Busy(ItemProducer):
        @classmethod
        def send_events(cls, records: Any, **kw: Any) -> Any:
            if not inserted_while_polling.is_set():  # a service writes during the poll
                inserted_while_polling.set()
                insert(engine, [{"id": 100, "name": "late", "updated_at": utcnow()}])
                with engine.begin() as conn:
                    conn.execute(Item.__table__.update().where(Item.id == 3)
                                 .values(name="n3-updated", updated_at=utcnow()))
            return super().send_events(records, **kw)

    globals()["Busy"] = Busy
    poller = DbPoller(config(producer_class=f"{__name__}:Busy"))
    status = poller.process_updates()
    assert status.messages_processed == 25 and status.batches_processed == 3
    with engine.connect() as conn:
        info = conn.execute(sa.select(deimos_poll_info)).one()
    assert (info.poller, info.last_sent, info.last_sent_id) == ("items", T0, 25)
    # more rows at the very same timestamp, after the saved id
    insert(engine, [{"id": i, "name": f"n{i}", "updated_at": T0} for i in range(26, 31)])
    assert poller.process_updates().messages_processed == 7  # 5 + late row + update of 3
    # a restarted poller (new object, state from the table) finds nothing new
    assert DbPoller(config(producer_class=f"{__name__}:Busy")).process_updates(
        ).messages_processed == 0
    got = ids(read_topic(deimos_kafka, ItemProducer.topic, 32, settle=0.5))
    assert got == Counter({**dict.fromkeys(range(1, 31), 1), 100: 1, 3: 2})
    assert mock_metrics().total("db_poller.messages_processed") == 32


def test_start_from_now_and_full_table(setup, deimos_kafka):
    engine = setup
    insert(engine, [{"id": i, "name": f"n{i}", "updated_at": T0} for i in range(1, 4)])
    assert DbPoller(config(start_from_beginning=False)).process_updates(
        ).messages_processed == 0
    full = DbPoller(config(name="full", full_table=True))
    assert full.process_updates().messages_processed == 3
    assert full.process_updates().messages_processed == 3  # every row, every run


def test_state_based_marks_published_and_failed_rows_and_feeds_several_producers(
        setup, deimos_kafka):
    engine = setup
    insert(engine, [{"id": i, "name": "poison" if i == 4 else f"n{i}", "updated_at": T0}
                    for i in range(1, 13)])
    poller = DbPoller(config(
        mode="state_based", state_column="state", published_state="published",
        failed_state="failed", publish_timestamp_column="published_at", attempts=2,
        producer_classes=[f"{__name__}:ItemProducer", f"{__name__}:ItemAudit"]))
    status = poller.process_updates()
    assert status.messages_processed == 11 and status.skipped_ids == [4]
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(Item.id, Item.state)).all())
        stamped = conn.execute(sa.select(sa.func.count()).where(
            Item.published_at.is_not(None))).scalar()
        info = conn.execute(sa.select(deimos_poll_info)).one()
    assert states == {i: "failed" if i == 4 else "published" for i in range(1, 13)}
    assert stamped == 11
    # skipped and recorded, never silently
    assert info.batches_errored == 1 and "[4]" in info.error and "poisoned" in info.error
    assert mock_metrics().total("db_poller.batches_errored") == 1
    assert poller.process_updates().messages_processed == 0  # nothing left to publish
    for topic in (ItemProducer.topic, ItemAudit.topic):
        assert ids(read_topic(deimos_kafka, topic, 11)) == Counter(
            {i: 1 for i in range(1, 13) if i != 4})


def test_a_too_large_row_is_skipped_and_recorded_or_stops_the_poller(setup, deimos_kafka):
    engine = setup
    insert(engine, [{"id": 1, "name": "a", "updated_at": T0},
                    {"id": 2, "name": "x" * 1_200_000, "updated_at": T0},
                    {"id": 3, "name": "c", "updated_at": T0}])
    stopping = DbPoller(config(name="strict", skip_too_large_messages=False))
    with pytest.raises(Exception, match=r"MSG_SIZE_TOO_LARGE|too large"):
        stopping.process_updates()
    with engine.connect() as conn:
        info = conn.execute(sa.select(deimos_poll_info).where(
            deimos_poll_info.c.poller == "strict")).one()
    assert info.last_sent_id == 0 and "MSG_SIZE_TOO_LARGE" in info.error
    status = DbPoller(config()).process_updates()
    assert status.skipped_ids == [2] and status.messages_processed == 2
    got = ids(read_topic(deimos_kafka, ItemProducer.topic, 2, settle=0.5))
    assert got[1] >= 1 and got[3] >= 1 and 2 not in got


def test_the_poller_group_runs_configured_pollers_until_stopped(setup, deimos_kafka,
                                                                deimos_database):
    engine = setup
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka}, producers={"backend": "kafka"},
                     schema={"backend": "mock"}, db={"url": deimos_database, "pollers": [
                         {"name": "items", "producer_class": f"{__name__}:ItemProducer",
                          "run_every": 0.2, "delay_time": 0}]})
    insert(engine, [{"id": 1, "name": "a", "updated_at": T0}])
    with DbPollerGroup():
        wait_for(lambda: ids(read_topic(deimos_kafka, ItemProducer.topic, 1, timeout=2))[1],
                 timeout=30, what="the first row")
        insert(engine, [{"id": 2, "name": "b", "updated_at": utcnow()}])
        wait_for(lambda: 2 in ids(read_topic(deimos_kafka, ItemProducer.topic, 2, timeout=2)),
                 timeout=30, what="the second row")


def test_the_poll_query_takes_the_rows_after_the_position_up_to_the_end(setup):
    engine = setup
    t = [T0 + _dt.timedelta(seconds=s) for s in (-1, 0, 1, 5)]
    # every mix of an earlier/equal/later timestamp with a lower/higher id than the position
    rows = [{"id": i, "name": f"n{i}", "updated_at": t[i % 4]} for i in range(1, 21)]
    insert(engine, rows)
    query = ItemProducer.poll_query(time_from=T0, time_to=t[2], column_name="updated_at",
                                    min_id=10, id_column="id")
    with Session(engine) as session:
        got = [i.id for i in session.scalars(query.order_by(Item.updated_at, Item.id))]
    expected = sorted((r for r in rows if (r["updated_at"], r["id"]) > (T0, 10)
                       and r["updated_at"] <= t[2]), key=lambda r: (r["updated_at"], r["id"]))
    assert got == [r["id"] for r in expected]
    assert {r["updated_at"] for r in expected} == {T0, t[2]}  # both cases are in it


def _gadget_messages(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, Any]]:
    return [(m.key(), json.loads(m.value())) for m in
            sorted(read_topic(bootstrap, topic, n, settle=0.5), key=lambda m: m.offset())]


def test_default_hooks_publish_the_same_messages_from_column_values_as_from_instances(
        setup, deimos_kafka):
    engine = setup
    # 25 rows in one timestamp and 5 in the next: batches of 10 cut through both
    rows = [{"id": i, "name": f"g{i}", "price": decimal.Decimal(i) / 4, "hidden": i % 2 == 0,
             "updated_at": T0 if i <= 25 else T0 + _dt.timedelta(seconds=1)}
            for i in range(1, 31)]
    with engine.begin() as conn:
        conn.execute(Gadget.__table__.insert(), rows)
    loaded: list[Any] = []

    def on_load(target: Gadget, _ctx: Any) -> None:
        loaded.append(target.id)

    sa.event.listen(Gadget, "load", on_load)
    try:
        plain = DbPoller(config(name="plain", producer_class=f"{__name__}:GadgetProducer"))
        assert plain.process_updates().messages_processed == 30
        assert loaded == []  # no instance was loaded for the default hooks
        instances = DbPoller(config(name="loaded",
                                    producer_class=f"{__name__}:LoadedGadgetProducer"))
        assert instances.process_updates().messages_processed == 30
        assert sorted(loaded) == list(range(1, 31))
    finally:
        sa.event.remove(Gadget, "load", on_load)
    got = _gadget_messages(deimos_kafka, GadgetProducer.topic, 30)
    assert got == _gadget_messages(deimos_kafka, LoadedGadgetProducer.topic, 30)
    assert got[0] == (b"1", {"id": 1, "name": "g1", "price": "0.25", "hidden": False,
                             "updated_at": T0.isoformat()})
    assert [k for k, _ in got] == [str(i).encode() for i in range(1, 31)]
    with engine.connect() as conn:
        positions = {r.poller: (r.last_sent, r.last_sent_id)
                     for r in conn.execute(sa.select(deimos_poll_info))}
    assert positions == {"plain": (T0 + _dt.timedelta(seconds=1), 30),
                         "loaded": (T0 + _dt.timedelta(seconds=1), 30)}


def test_a_session_wide_filter_applies_to_the_rows_read_as_column_values(setup, deimos_kafka):
    engine = setup
    with engine.begin() as conn:
        conn.execute(Gadget.__table__.insert(), [
            {"id": i, "name": f"g{i}", "price": 1, "hidden": i in (2, 3), "updated_at": T0}
            for i in range(1, 6)])

    def hide(state: Any) -> None:  # the usual soft-delete filter of a service's sessions
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Gadget, Gadget.hidden == sa.false()))

    sa.event.listen(Session, "do_orm_execute", hide)
    try:
        for name, producer in (("plain", GadgetProducer), ("loaded", LoadedGadgetProducer)):
            poller = DbPoller(config(name=name, producer_class=f"{__name__}:{producer.__name__}"))
            assert poller.process_updates().messages_processed == 3
            assert [p["id"] for _, p in _gadget_messages(deimos_kafka, producer.topic, 3)
                    ] == [1, 4, 5]
    finally:
        sa.event.remove(Session, "do_orm_execute", hide)


def test_rows_read_as_column_values_are_skipped_recorded_and_marked_like_instances(
        setup, deimos_kafka):
    engine = setup
    insert(engine, [{"id": i, "name": "x" * 1_200_000 if i == 3 else f"n{i}",
                     "updated_at": T0} for i in range(1, 6)])
    status = DbPoller(config(name="time", producer_class=f"{__name__}:PlainItemProducer")
                      ).process_updates()
    assert status.skipped_ids == [3] and status.messages_processed == 4
    marking = DbPoller(config(
        name="state", producer_class=f"{__name__}:PlainItemProducer", mode="state_based",
        state_column="state", published_state="published", failed_state="failed",
        publish_timestamp_column="published_at"))
    status = marking.process_updates()
    assert status.skipped_ids == [3] and status.messages_processed == 4
    with engine.connect() as conn:
        states = dict(conn.execute(sa.select(Item.id, Item.state)).all())
        info = {r.poller: r for r in conn.execute(sa.select(deimos_poll_info))}
    assert states == {1: "published", 2: "published", 3: "failed", 4: "published",
                      5: "published"}
    assert info["time"].last_sent_id == 5 and "[3]" in info["time"].error
    assert info["state"].batches_errored == 1 and "[3]" in info["state"].error
    got = [json.loads(m.value()) for m in
           read_topic(deimos_kafka, PlainItemProducer.topic, 16, settle=0.5)]
    # per run: the failed batch delivered the four good rows, the row-by-row pass sent them
    # again (at least once), and never the large one
    assert Counter(p["id"] for p in got) == Counter({1: 4, 2: 4, 4: 4, 5: 4})
    assert got[0] == {"id": 1, "name": "n1", "updated_at": T0.isoformat(), "state": None,
                      "published_at": None}

