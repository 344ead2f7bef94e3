"""``transactional = true``: one Kafka transaction per polled batch of a consumer loop.

The loop's transactional producer has the ``transactional.id``
``<transactional_id>-<consumer name>-<thread index>``: stable per consumer thread, which is
enough under KIP-447 (the consumed offsets go to the transaction with the consumer's group
metadata, whose generation fences a zombie consumer's commit after a rebalance). Starting the
producer fences an older instance with the same id and aborts what it left open.

A batch commits whole or not at all: what the handler published (through the ``kafka``
backends, on the consumer's cluster) and the offsets after what it handled. A handler failure
aborts the transaction and rewinds every partition of the batch to where the batch began, so
the messages before the failed one are handled again in the next transaction (their earlier
outputs were aborted); then the error policy runs as usual (:meth:`BatchTransactions.failed`).
"""

from __future__ import annotations

import logging
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
        log.info("consumer %s: transactional, transactional.id %r", cs.name, self.id)

    @property
    def open(self) -> bool:
        return self.producer.open is not None

    def begin(self) -> None:
        self.producer.begin()

    def commit(self, consumer: KafkaConsumer, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit the batch's transaction with the offsets after what it handled (raises
        :class:`~deimos.kafka.transactions.TransactionAborted` when it was aborted instead)."""
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.producer.commit(tps, consumer.consumer_group_metadata() if tps else None)

    def abort(self) -> None:
        self.producer.abort()

    @staticmethod
    def rewind(consumer: KafkaConsumer, groups: Mapping[tuple[str, int], list[Any]],
               skip: Any = ()) -> None:
        """Seek every partition of the batch back to its first message (but ``skip``, those
        a retry seeks itself)."""
        for (topic, partition), group in groups.items():
            if (topic, partition) not in skip:
                consumer.seek(TopicPartition(topic, partition, group[0].offset()))

    def close(self) -> None:
        self.producer.close()
