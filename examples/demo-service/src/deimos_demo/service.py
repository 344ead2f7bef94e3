"""The demo service's parts: tables, producers and consumers.

* ``demo_widgets`` is the source of truth. :class:`WidgetProducer` publishes every change to
  it through the outbox, in the same transaction as the change.
* The DB producer relays the outbox to ``demo.widgets``; :class:`WidgetReadModelConsumer`
  keeps ``demo_widget_read_model`` equal to the source with bulk upserts and deletes.
* A DB poller publishes ``demo_gadgets`` (written by code that does not publish itself) to
  ``demo.gadgets``; :class:`GadgetConsumer` retries a gadget it cannot handle, then parks it
  on the dead-letter topic.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from deimos.consumer import Consumer, Metadata
from deimos_db import RecordConsumer, RecordMessage, RecordProducer

SCHEMA_PATH = str(Path(__file__).parent / "schemas")
NAMESPACE = "com.deimos.demo"

#: microsecond precision on MariaDB/MySQL too (their DATETIME keeps whole seconds by default)
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "demo_widgets"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    color: Mapped[str] = mapped_column(sa.String(10))
    price: Mapped[float] = mapped_column(sa.Float)
    quantity: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class WidgetReadModel(Base):
    """What downstream services see: built only from the messages."""

    __tablename__ = "demo_widget_read_model"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    color: Mapped[str] = mapped_column(sa.String(10))
    price: Mapped[float] = mapped_column(sa.Float)
    quantity: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class Gadget(Base):
    __tablename__ = "demo_gadgets"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(100))
    weight: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


def utcnow_ms() -> dt.datetime:
    """Now in UTC, naive, cut to milliseconds: what an Avro timestamp-millis carries, so the
    read model can match the source exactly."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class WidgetProducer(RecordProducer):
    """Publishes widget changes through the outbox (``backend = "db"``)."""

    topic = "demo.widgets"
    schema = "Widget"
    namespace = NAMESPACE
    key_config = {"field": "id"}
    model = Widget
    backend = "db"

    @classmethod
    def watched_attributes(cls, record: Any) -> list[str]:
        return ["name", "color", "price", "quantity"]


class GadgetProducer(RecordProducer):
    """Used by the DB poller; sends straight to Kafka, synchronously."""

    topic = "demo.gadgets"
    schema = "Gadget"
    namespace = NAMESPACE
    key_config = {"field": "id"}
    model = Gadget
    backend = "kafka"


class Stats:
    """Counts and timings the demo's summary reads (shared by the consumer threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read_model_messages = 0
        self.read_model_done_at: float | None = None
        self.latencies: list[float] = []
        self.gadgets_ok = 0
        self.gadget_attempts = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


stats = Stats()


class WidgetReadModelConsumer(RecordConsumer):
    """Keeps the read model: bulk upserts, tombstones as deletes, last message per key."""

    topic = "demo.widgets"
    group_id = "deimos-demo-read-model"
    schema = "Widget"
    namespace = NAMESPACE
    key_config = {"field": "id"}
    model = WidgetReadModel

    def post_process_batch(self, conn: sa.Connection, upserted: list[RecordMessage],
                           deleted: list[RecordMessage]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        lat = []
        for m in upserted:
            written = m.payload["updated_at"] if m.payload else None
            if isinstance(written, dt.datetime):
                if written.tzinfo is None:
                    written = written.replace(tzinfo=dt.timezone.utc)
                lat.append((now - written).total_seconds())
        with stats.lock:
            stats.latencies.extend(lat)

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        super().consume_batch(payloads, metadata)
        with stats.lock:
            stats.read_model_messages += len(payloads)
            stats.read_model_done_at = time.perf_counter()


class GadgetConsumer(Consumer):
    """Handles gadgets; a gadget with a negative weight fails every time: after the retries it
    goes to the dead-letter topic and the partition moves on."""

    topic = "demo.gadgets"
    group_id = "deimos-demo-gadgets"
    schema = "Gadget"
    namespace = NAMESPACE
    key_config = {"field": "id"}
    on_error = "dead_letter"
    dead_letter_topic = "demo.gadgets.dlq"
    retry = {"attempts": 3, "backoff": 0.05, "multiplier": 2}

    def consume(self, payload: Any, metadata: Metadata) -> None:
        with stats.lock:
            stats.gadget_attempts += 1
        if payload["weight"] < 0:
            raise ValueError(f"gadget {payload['id']} has a negative weight {payload['weight']}")
        with stats.lock:
            stats.gadgets_ok += 1
