"""The outbox in one file: an order row and its Kafka message commit together.

    python plugins/db_backend/examples/outbox_example.py

(the embedded broker, unless DEIMOS_TEST_BOOTSTRAP_SERVERS names one)

Writes to a temporary SQLite database, rolls one transaction back, commits another, then runs
one DB producer pass and reads the topic back.
"""

from __future__ import annotations

import tempfile

import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.orm import Session

import deimos
import deimos_db
from deimos.testing.broker import broker, create_topic
from deimos_db.producer import DbProducer

orders = sa.Table("orders", deimos_db.metadata, sa.Column("id", sa.Integer, primary_key=True),
                  sa.Column("item", sa.String(50)))


class OrderCreated(deimos.Producer):
    topic = "orders"
    key_config = "plain"


def place_order(engine: sa.Engine, order_id: int, item: str, fail: bool = False) -> None:
    with Session(engine) as session, deimos_db.transaction(session):
        session.execute(orders.insert().values(id=order_id, item=item))
        OrderCreated.publish(item, key=str(order_id))  # a row in kafka_messages, same txn
        if fail:
            session.rollback()  # neither the order nor its message exists
            return
        session.commit()


def main() -> None:
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        create_topic(bootstrap, "orders")
        url = f"sqlite:///{tmp}/shop.sqlite"
        deimos.configure(kafka={"bootstrap_servers": bootstrap},
                         producers={"backend": "db"}, db={"url": url})
        engine = deimos_db.get_engine(url)
        deimos_db.metadata.create_all(engine)  # the outbox tables and ours

        place_order(engine, 1, "teapot")
        place_order(engine, 2, "kettle", fail=True)

        sent = DbProducer().process_next()  # `deimos db-producer` does this in a loop
        print(f"the DB producer sent {sent} message(s)")

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "example"})
        c.assign([TopicPartition("orders", 0, 0)])
        for m in c.consume(10, 5):
            print(f"orders: key={m.key()!r} value={m.value()!r}")
        c.close()
        deimos_db.dispose_engines()


if __name__ == "__main__":
    main()
