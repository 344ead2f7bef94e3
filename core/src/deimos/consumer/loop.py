"""The broker loop: one librdkafka consumer in one thread, polling batches until stopped.

At-least-once, always: librdkafka commits only offsets deimos *stored*, and deimos stores an
offset only after the handler succeeded for every message up to it
(``enable.auto.offset.store=false``). On shutdown or partition revocation the stored offsets
are committed synchronously. A message to retry pauses its partition for the policy's delay
(other partitions keep flowing), then the partition is sought back to it and resumed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from deimos.config import ConsumerSettings
from deimos.consumer.api import _Base, _error, _partition, _topic
from deimos.consumer.policy import Outcome
from deimos.consumer.processor import MessageProcessor
from deimos.consumer.transactions import BatchTransactions
from deimos.errors import DeimosError
from deimos.health import Heartbeat
from deimos.kafka import connection as _connection
from deimos.kafka.config import cluster_settings, consumer_config
from deimos.kafka.statistics import StatisticsForwarder
from deimos.kafka.transactions import TransactionAborted
from deimos.runtime import Runtime, get_runtime

log = logging.getLogger("deimos.consumer")


class ConsumerLoop:
    """One librdkafka consumer in one thread, polling batches until stopped."""

    def __init__(self, cls: type[_Base], settings: ConsumerSettings,
                 runtime: Runtime | None = None, stop: threading.Event | None = None,
                 event_loop: Any = None, index: int = 0) -> None:
        """``event_loop``: where an asyncio handler's coroutines run (an application's loop
        running in another thread); by default an event loop of the consumer's thread.
        ``index``: which of the consumer's ``concurrency`` threads this is (a transactional
        consumer's ``transactional.id`` names it)."""
        self.cls = cls
        self.index = index
        self.settings = settings
        self.runtime = runtime or get_runtime()
        self.stop_event = stop or threading.Event()
        self.processor = MessageProcessor(cls(), settings, self.runtime, event_loop)
        self.policy = self.processor.policy
        #: paused partitions: (offset to seek back to, monotonic time to resume)
        self._retries: dict[tuple[str, int], tuple[int, float]] = {}
        self.consumer: KafkaConsumer | None = None
        self._multi_topic = bool(settings.topic_pattern) or len(settings.topics) != 1
        self._fatal: KafkaError | None = None
        #: set once the group gave this consumer its first partitions
        self.assigned = threading.Event()
        #: the partitions assigned now (readiness)
        self.assignment: set[tuple[str, int]] = set()
        #: the poll loop's last completed iteration (liveness)
        self.heartbeat = Heartbeat()
        #: ``transactional = true``: the batch transactions (made when the loop starts)
        self.tx: BatchTransactions | None = None
        self.connection: _connection.BrokerConnection | None = None
        #: the settings with this consumer's cluster as the ``kafka`` section
        self.kafka_settings = cluster_settings(self.runtime.settings, settings.cluster,
                                               where=f"consumer {settings.name}.cluster")
        if settings.dead_letter_topic:
            self.processor.dead_letters.kafka_settings()  # an unknown cluster: stop here
        poll_ms = settings.config.get("max.poll.interval.ms",
                                      self.kafka_settings.kafka.config.get(
                                          "max.poll.interval.ms", 300000))
        #: seconds without a completed iteration after which this consumer is not live:
        #: librdkafka's own max.poll.interval.ms (it leaves the group then) plus a poll
        self.live_bound = float(poll_ms) / 1000.0 + 2 * settings.max_wait_time + 1.0

    def __repr__(self) -> str:
        return f"consumer {self.settings.name}"

    def stop(self) -> None:
        self.stop_event.set()
        runner = self.runtime.settings.runner
        grace = runner.cancel_handlers_after
        self.processor.cancel_after(runner.shutdown_timeout / 2 if grace is None else grace)

    def health(self) -> dict[str, Any]:
        """Live while the poll loop keeps completing iterations within
        ``max.poll.interval.ms``; ready with partitions assigned and the brokers reachable."""
        age = self.heartbeat.age()
        live = age < self.live_bound
        conn = self.connection
        reachable = conn is not None and not conn.down
        ready = live and bool(self.assignment) and reachable
        if self.consumer is None:
            state = "starting"
        elif not reachable:
            state = "brokers unreachable"
        elif not self.assignment:
            state = "waiting for partitions"
        else:
            state = "consuming"
        return {"name": repr(self), "kind": "consumer", "group": self.settings.group_id,
                "state": state, "live": live, "ready": ready,
                "partitions": len(self.assignment),
                "last_iteration_seconds_ago": round(age, 3),
                "live_bound_seconds": self.live_bound}

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err  # the loop raises: the runner restarts this consumer
        else:
            log.warning("consumer %s: %s", self.settings.name, err)

    def _on_assign(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self.assignment |= {(tp.topic, tp.partition) for tp in partitions}
        if partitions:
            self.assigned.set()
            if self.connection is not None:
                self.connection.reachable()
            log.info("consumer %s: %d partition(s) assigned (%d in all)", self.settings.name,
                     len(partitions), len(self.assignment))

    def _on_revoke(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self.assignment -= {(tp.topic, tp.partition) for tp in partitions}
        if self.tx is not None:
            if self.tx.open:
                # still this member's partitions while the callback runs (Kafka Streams
                # commits here too); an abort reads what it held again
                try:
                    self._commit_transaction(consumer, self.tx)
                except Exception as exc:
                    log.warning("consumer %s: the open transaction could not commit at a "
                                "rebalance: %s", self.settings.name, exc)
                    if self.tx.open:
                        self.tx.abort()
                    self.tx.rewind(consumer, self._retries)  # kept partitions read again
        else:
            self._commit(consumer)
        for tp in partitions:
            self._retries.pop((tp.topic, tp.partition), None)
            self.policy.forget(tp.topic, tp.partition)
            for key in [k for k in self.processor.doomed if k[:2] == (tp.topic, tp.partition)]:
                del self.processor.doomed[key]

    @staticmethod
    def _commit(consumer: KafkaConsumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed: %s", exc)

    def run(self) -> None:
        """Poll until :meth:`stop`; the batch in flight finishes and offsets are committed."""
        cs = self.settings
        base = consumer_config(self.kafka_settings, cs)
        conf = _connection.instrument(
            base, on_error=self._on_error,
            summary_interval=self.kafka_settings.kafka.error_summary_interval,
            on_stats=StatisticsForwarder(
                {"client": "consumer", "consumer_group": str(cs.group_id),
                 "bootstrap": str(base["bootstrap.servers"])}, lambda: self.runtime))
        self.connection = conn = _connection.connection(str(conf["bootstrap.servers"]))
        self.heartbeat.beat()
        if cs.transactional:
            # before the consumer joins: fences an older instance with the same id
            self.tx = BatchTransactions(self.kafka_settings, cs, self.index)
        consumer = KafkaConsumer(conf)
        self.consumer = consumer
        topics = list(cs.topics)
        if cs.topic_pattern:
            topics.append(cs.topic_pattern if cs.topic_pattern.startswith("^")
                          else "^" + cs.topic_pattern)
        prefix = self.runtime.settings.producers.topic_prefix
        topics = [t if t.startswith("^") else prefix + t for t in topics]
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consumer %s started on %s (group %s); waiting for partitions", cs.name,
                 topics, cs.group_id)
        beat = self.heartbeat.beat
        try:
            while not self.stop_event.is_set():
                if self._fatal is not None:
                    raise DeimosError(f"consumer {cs.name}: fatal Kafka error: {self._fatal}")
                self._resume_due(consumer)
                msgs = consumer.consume(cs.max_batch_size, cs.max_wait_time)
                if msgs:
                    if conn.failing:
                        conn.reachable()
                    self.handle(consumer, msgs)
                elif self.tx is not None and self.tx.due():
                    self._commit_transaction(consumer, self.tx)  # nothing more came
                beat()
            if self.tx is not None and self.tx.open:
                self._commit_transaction(consumer, self.tx)  # stopped: keep what was done
        except asyncio.CancelledError as cancelled:
            if not self.stop_event.is_set():
                # not the shutdown's (a task of the application's cancelled the handler):
                # an error, so the runner restarts the consumer from its commit
                raise DeimosError(f"consumer {cs.name}: an asyncio handler was cancelled, "
                                  "not by the consumer's shutdown") from cancelled
            # runner.cancel_handlers_after passed: what finished before is committed below
            log.warning("consumer %s: asyncio handlers still running at "
                        "runner.cancel_handlers_after were cancelled; their messages were not "
                        "committed", cs.name)
        finally:
            if self.tx is None:
                self._commit(consumer)
            consumer.close()
            if self.tx is not None:
                self.tx.close()  # what is open is aborted; nothing is committed on its own
                self.tx = None
            self.processor.close()
            self.consumer = None
            self.assignment.clear()
            log.info("consumer %s stopped", cs.name)

    def _groups(self, msgs: list[Any]) -> dict[tuple[str, int], list[Any]] | None:
        """A polled batch's messages by topic-partition, errors logged and left out (None:
        nothing left)."""
        # not errs.count(None): KafkaError == None raises TypeError (a consumer subscribed to
        # a topic that does not exist yet crashed on its first error event). Every KafkaError
        # is true (NO_ERROR too), so any() finds them in C: a third of the cost of testing
        # each with ``is not None``. Over the map, not over a list of the errors: any() of a
        # list cost 25 instructions a message more than f3b3459's list and count(None)
        # (callgrind); the list is made only when there are errors
        if any(map(_error, msgs)):
            errs = list(map(_error, msgs))
            for err in errs:
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.error("consumer %s: %s", self.settings.name, err)
            msgs = [m for m, err in zip(msgs, errs) if err is None]
            if not msgs:
                return None
        parts: list[int] = list(map(_partition, msgs))
        topics: list[str] | None = list(map(_topic, msgs)) if self._multi_topic else None
        groups: dict[tuple[str, int], list[Any]]
        if parts.count(parts[0]) == len(parts) and (
                topics is None or topics.count(topics[0]) == len(topics)):
            groups = {(str(msgs[0].topic()), parts[0]): msgs}
        else:
            groups = {}
            for i, m in enumerate(msgs):
                tp = (topics[i] if topics is not None else str(m.topic()), parts[i])
                g = groups.get(tp)
                if g is None:
                    groups[tp] = [m]
                else:
                    g.append(m)
        return groups

    def handle(self, consumer: KafkaConsumer, msgs: list[Any]) -> None:
        """Process one polled batch: group by topic-partition, handle, store offsets (or
        commit them with the batch's transaction)."""
        groups = self._groups(msgs)
        if groups is None:
            return
        if self.tx is not None:
            self._handle_in_transaction(consumer, groups, self.tx)
            return
        process, policy = self.processor.process, self.policy
        for (topic, partition), group in groups.items():
            if self._retries and (topic, partition) in self._retries:
                continue  # paused for a retry; re-read after the seek
            try:
                outcome = process(group)
            except BaseException:
                self._commit(consumer)
                raise
            handled = outcome.handled
            if handled:
                last = group[handled - 1].offset()
                consumer.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
            if policy.tracking:
                policy.done(topic, partition, group, outcome)
            if outcome.stop is not None:
                # on_error=raise, a fatal error: keep what succeeded before it, then stop
                self._commit(consumer)
                raise outcome.stop
            if outcome.retry is not None and outcome.retry_offset is not None:
                self._schedule_retry(consumer, topic, partition, outcome.retry_offset,
                                     outcome.retry)

    def _handle_in_transaction(self, consumer: KafkaConsumer,
                               groups: dict[tuple[str, int], list[Any]],
                               tx: BatchTransactions) -> None:
        """Process one polled batch in one Kafka transaction: what the handler published
        and the offsets after what it handled commit together, or nothing does."""
        processor, policy = self.processor, self.policy
        offsets = tx.offsets
        failed: tuple[str, int, Outcome] | None = None
        tx.begin()
        tx.read({tp: g for tp, g in groups.items() if tp not in self._retries})
        try:
            for (topic, partition), group in groups.items():
                if self._retries and (topic, partition) in self._retries:
                    continue  # paused for a retry; re-read after the seek
                outcome = processor.process(group)
                if outcome.retry is not None or outcome.stop is not None:
                    failed = (topic, partition, outcome)
                    break
                if outcome.handled:
                    offsets[(topic, partition)] = group[outcome.handled - 1].offset() + 1
                policy.done(topic, partition, group, outcome)
        except BaseException:
            self._abort(consumer, tx)
            raise
        if failed is None:
            if tx.due():
                self._commit_transaction(consumer, tx)
            return
        topic, partition, outcome = failed
        paused = {(topic, partition)} if outcome.stop is None and not outcome.give_up else set()
        # the failed partition's first message of the transaction: where its retry reads again
        first = tx.first.get((topic, partition), groups[(topic, partition)][0].offset())
        self._abort(consumer, tx, skip=paused)
        if outcome.stop is not None:
            raise outcome.stop
        error, offset = outcome.retry, outcome.retry_offset
        assert error is not None and offset is not None
        if outcome.give_up:
            if self.settings.on_error == "raise":
                raise error
            # on_error applies when the aborted batch is read again (its outputs are gone)
            processor.doomed[(topic, partition, offset)] = (error, outcome.give_up)
            return
        self._schedule_retry(consumer, topic, partition, offset, error, seek_to=first)

    def _commit_transaction(self, consumer: KafkaConsumer, tx: BatchTransactions) -> None:
        """Commit the open transaction; an abortable error (not the handler's doing) reads
        everything it held again, nothing counted."""
        try:
            committed = tx.commit(consumer)
        except TransactionAborted as aborted:
            log.warning("consumer %s: %s; handling its messages again", self.settings.name,
                        aborted)
            tx.rewind(consumer, self._retries)
            return
        if self.processor.doomed:
            self.processor.forget_doomed(committed)

    def _abort(self, consumer: KafkaConsumer, tx: BatchTransactions, skip: Any = ()) -> None:
        """Abort the open transaction and read its messages again (from the first it read
        of each partition: what was handled before a failure is aborted too)."""
        tx.abort()
        tx.rewind(consumer, set(skip) | set(self._retries))

    def _schedule_retry(self, consumer: KafkaConsumer, topic: str, partition: int,
                        offset: int, error: BaseException, seek_to: int | None = None
                        ) -> None:
        """Pause the partition for the policy's delay, then read it again from the failed
        message (``seek_to``: from an earlier one, the first of an aborted transaction)."""
        retry = self.policy.failed(topic, partition, offset, error)
        if retry.counted:
            limit = "no limit" if self.policy.forever else f"of {self.policy.attempts}"
            log.warning("consumer %s: %s[%d]@%d failed (attempt %d %s), retrying in %.2fs: "
                        "%r", self.settings.name, topic, partition, offset, retry.attempt,
                        limit, retry.delay, error)
        else:
            # not the message's fault: wait for the service, use up none of its attempts
            log.warning("consumer %s: %s[%d]@%d cannot be handled yet (not counted against "
                        "retry.attempts), retrying in %.2fs: %s", self.settings.name, topic,
                        partition, offset, retry.delay, error)
        consumer.pause([TopicPartition(topic, partition)])
        self._retries[(topic, partition)] = (offset if seek_to is None else seek_to,
                                             time.monotonic() + retry.delay)
        self.processor.telemetry.increment(
            "retries", 1, {"topic": topic, "consumer_group": self.processor.group})

    def _resume_due(self, consumer: KafkaConsumer) -> None:
        if not self._retries:
            return
        now = time.monotonic()
        for (topic, partition), (offset, resume_at) in list(self._retries.items()):
            if resume_at <= now:
                tp = TopicPartition(topic, partition, offset)
                consumer.seek(tp)
                consumer.resume([TopicPartition(topic, partition)])
                del self._retries[(topic, partition)]
