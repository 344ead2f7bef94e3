"""``transactional = true``: the Kafka transactions of a consumer loop, over its polled batches.

The loop's transactional producer has the ``transactional.id``
``<transactional_id>-<consumer name>-<thread index>``: stable per consumer thread, which is
enough under KIP-447 (the consumed offsets go to the transaction with the consumer's group
metadata, whose generation fences a zombie consumer's commit after a rebalance). Starting the
producer fences an older instance with the same id and aborts what it left open.

A transaction spans the polled batches of ``transaction_interval`` seconds (one batch with 0),
as Kafka Streams' does over ``commit.interval.ms``: the commit's round trips to the
coordinator (the outputs' acknowledgements, the offsets, the end of the transaction) are paid
once per interval, not once per batch. It commits whole or not at all: what the handler
published (through the ``kafka`` backends, on the consumer's cluster) and the offsets after
what it handled. A handler failure aborts the transaction and rewinds every partition it read
to where the transaction began, so the messages before the failed one are handled again in
the next transaction (their earlier outputs were aborted); then the error policy runs as
usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import TopicPartition

from deimos.kafka.transactions import TransactionalProducer

if TYPE_CHECKING:
    from confluent_kafka import Consumer as KafkaConsumer

    from deimos.config import ConsumerSettings, Settings

log = logging.getLogger("deimos.consumer")


def transactional_id(cs: ConsumerSettings, index: int) -> str:
    """The ``transactional.id`` of thread ``index`` of consumer ``cs``."""
    return f"{cs.transactional_id}-{cs.name}-{index}"


class BatchTransactions:
    """The transactional producer of one consumer thread and its batch transactions."""

    def __init__(self, kafka_settings: Settings, cs: ConsumerSettings, index: int) -> None:
        self.id = transactional_id(cs, index)
        self.producer = TransactionalProducer(kafka_settings, self.id)
        self.interval = cs.transaction_interval
        #: of the open transaction: the first offset read of each partition (where an abort
        #: rewinds to), the offsets after what was handled (what a commit stores), and when
        #: it began (``time.monotonic()``)
        self.first: dict[tuple[str, int], int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.began = 0.0
        log.info("consumer %s: transactional, transactional.id %r", cs.name, self.id)

    @property
    def open(self) -> bool:
        return self.producer.open is not None

    def begin(self) -> None:
        """Begin a transaction unless one is open (the batch joins it)."""
        if self.producer.open is None:
            self.producer.begin()
            self.first.clear()
            self.offsets.clear()
            self.began = time.monotonic()

    def read(self, groups: Mapping[tuple[str, int], list[Any]]) -> None:
        """A batch of the open transaction was read: where each partition's part began."""
        for tp, group in groups.items():
            self.first.setdefault(tp, group[0].offset())

    def due(self) -> bool:
        """Whether the open transaction has been open ``transaction_interval`` seconds."""
        return self.producer.open is not None and (
            time.monotonic() - self.began >= self.interval)

    def commit(self, consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
        """Commit the open transaction with the offsets after what it handled; those
        offsets (raises :class:`~deimos.kafka.transactions.TransactionAborted` when it was
        aborted instead)."""
        offsets = dict(self.offsets)
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.producer.commit(tps, consumer.consumer_group_metadata() if tps else None)
        self.first.clear()
        self.offsets.clear()
        return offsets

    def abort(self) -> None:
        self.producer.abort()

    def rewind(self, consumer: KafkaConsumer, skip: Any = ()) -> None:
        """Seek every partition the aborted transaction read back to where it began (but
        ``skip``, those a retry seeks itself)."""
        for (topic, partition), offset in self.first.items():
            if (topic, partition) not in skip:
                consumer.seek(TopicPartition(topic, partition, offset))
        self.first.clear()
        self.offsets.clear()

    def close(self) -> None:
        self.producer.close()
