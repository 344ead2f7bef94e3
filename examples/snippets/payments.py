"""The example of docs/exactly-once.md, "Database exactly-once" (run by the test suite).

    python examples/snippets/payments.py localhost:9092 sqlite:///payments.sqlite

A consumer with ``inbox = true`` books each payment into a ledger table and publishes a
``payments.booked`` message through the ``db`` backend, all in one database transaction per
message with its inbox row. The example then replays the topic from the start (a
redelivery), which changes nothing, and lets the DB producer relay the outbox to Kafka.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

import deimos
import deimos_db
from deimos.consumer import Consumer, ConsumerLoop, Metadata, resolve_settings
from deimos_db.producer import DbProducer

ledger = sa.Table("ledger", sa.MetaData(),
                  sa.Column("payment_id", sa.String(40), primary_key=True),
                  sa.Column("amount", sa.Integer, nullable=False))


class PaymentRequested(deimos.Producer):
    topic = "payments"
    key_config = "plain"


class PaymentBooked(deimos.Producer):
    topic = "payments.booked"
    key_config = "plain"


class BookPayments(Consumer):
    topic = "payments"
    group_id = "bookkeeping"
    key_config = "plain"
    inbox = True                  # one transaction per message: inbox row + writes + outbox

    def consume(self, payload: Any, metadata: Metadata) -> None:
        session = deimos_db.session()      # the message's transaction
        session.execute(ledger.insert().values(payment_id=metadata.key, amount=int(payload)))
        PaymentBooked.publish(payload, key=metadata.key)   # an outbox row, same transaction


def _topic(settings: Any) -> str:
    return deimos.get_settings().producers.topic_prefix + settings.topics[0]


def _consume_until(settings: Any, offsets: int) -> None:
    """Run the consumer in a thread until it has committed ``offsets`` on partition 0."""
    loop = ConsumerLoop(BookPayments, settings)
    thread = threading.Thread(target=loop.run)
    thread.start()
    probe = KafkaConsumer({"bootstrap.servers": deimos.get_settings().kafka.bootstrap_servers,
                           "group.id": settings.group_id})
    tp = TopicPartition(_topic(settings), 0)
    while probe.committed([tp], timeout=10)[0].offset < offsets:
        threading.Event().wait(0.2)
    probe.close()
    loop.stop()
    thread.join()


def _rewind(settings: Any) -> None:
    """Commit offset 0 for the group: the next run gets every message again."""
    c = KafkaConsumer({"bootstrap.servers": deimos.get_settings().kafka.bootstrap_servers,
                       "group.id": settings.group_id})
    c.commit(offsets=[TopicPartition(_topic(settings), 0, 0)], asynchronous=False)
    c.close()


def main(bootstrap: str, url: str, topic_prefix: str = "",
         **consumer_overrides: Any) -> tuple[list[Any], int]:
    deimos.configure(kafka={"bootstrap_servers": bootstrap}, db={"url": url},
                     producers={"backend": "db", "topic_prefix": topic_prefix})
    engine = deimos_db.get_engine(url)
    deimos_db.create_tables(engine)
    ledger.create(engine, checkfirst=True)
    requests = {"p-1": "100", "p-2": "250", "p-3": "75"}
    # the input goes to Kafka directly (force_send), not through the outbox
    PaymentRequested.publish_list(list(requests.values()), keys=list(requests),
                                  force_send=True, sync=True)

    settings = resolve_settings(BookPayments, **consumer_overrides)
    settings.config.setdefault("auto.commit.interval.ms", 200)
    _consume_until(settings, len(requests))
    _rewind(settings)                        # as if the consumer had crashed before its commit
    _consume_until(settings, len(requests))  # every message again: the inbox skips them

    relayed = DbProducer().process_next()    # `deimos db-producer` does this continuously
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.execute(sa.select(ledger)))
    return rows, relayed


if __name__ == "__main__":
    rows, relayed = main(sys.argv[1] if len(sys.argv) > 1 else "localhost:9092",
                         sys.argv[2] if len(sys.argv) > 2 else "sqlite:///payments.sqlite")
    print(rows, f"{relayed} message(s) relayed")
