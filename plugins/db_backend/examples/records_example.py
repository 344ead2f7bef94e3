"""Record producers, the DB poller and record consumers in one file, no broker needed.

    python plugins/db_backend/examples/records_example.py

A temporary SQLite database; producers write to the outbox (backend ``db``), so what they
publish is visible as rows of ``kafka_messages``; the consumer is fed a batch through deimos's
test helpers, which run the real consume path (decoding, error policy).
"""

from __future__ import annotations

import datetime as _dt
import tempfile

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import deimos
import deimos_db
from deimos.testing import consume_batch, test_mode
from deimos_db import DbPoller, DbPollerSettings, RecordConsumer, RecordProducer


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    price: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[_dt.datetime] = mapped_column(
        sa.DateTime, default=lambda: deimos_db.engine.utcnow(),
        onupdate=lambda: deimos_db.engine.utcnow())


class ProductProducer(RecordProducer):
    topic = "products"
    key_config = "plain"
    model = Product

    @classmethod
    def watched_attributes(cls, record: Product) -> list[str]:
        return ["name", "price"]  # updated_at alone changing publishes nothing


def record_producer_demo(engine: sa.Engine) -> None:
    with deimos_db.track_changes(ProductProducer):
        with Session(engine) as session:
            session.add(Product(id=1, name="teapot", price=20.0))
            session.commit()  # one message, written in this transaction
        with Session(engine) as session:
            session.add(Product(id=2, name="never", price=1.0))
            session.flush()
            session.rollback()  # nothing published: the outbox row rolled back too


class Price(Base):
    __tablename__ = "prices"
    product_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    price: Mapped[float] = mapped_column(sa.Float)


class PriceConsumer(RecordConsumer):
    topic = "prices"
    group_id = "price-sync"
    key_config = "plain"
    model = Price
    key_columns = ("product_id",)

    def should_consume(self, message: deimos_db.RecordMessage) -> bool:
        return message.payload is None or message.payload["price"] >= 0


def record_consumer_demo() -> None:
    with test_mode():
        consume_batch(PriceConsumer, [
            {"product_id": 1, "price": 10.0},
            {"product_id": 2, "price": 5.0},
            {"product_id": 1, "price": 12.5},  # compacted: the last one per key wins
            None,                              # a tombstone deletes product 2
            {"product_id": 3, "price": -1.0},  # filtered out by should_consume
        ], keys=[1, 2, 1, 2, 3])


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/example.sqlite"
        deimos.configure(producers={"backend": "db"}, schema={"backend": "mock"},
                         db={"url": url})
        engine = deimos_db.get_engine(url)
        deimos_db.create_tables(engine)
        Base.metadata.create_all(engine)

        record_producer_demo(engine)
        print("outbox after the producer demo:", count(engine))

        poller = DbPoller(DbPollerSettings(name="products",
                                           producer_class=f"{__name__}:ProductProducer",
                                           delay_time=0))
        print("poller published:", poller.process_updates().messages_processed)
        print("poller published on its next run:", poller.process_updates().messages_processed)

        record_consumer_demo()
        with engine.connect() as conn:
            print("prices:", conn.execute(sa.select(Price.product_id, Price.price)).all())
        deimos_db.dispose_engines()


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(deimos_db.kafka_messages))
        return int(n.scalar() or 0)


if __name__ == "__main__":
    main()
