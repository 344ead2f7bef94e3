"""The DB producer: sends the rows of ``kafka_messages`` to Kafka and deletes them once acked.

Each worker (a thread; run several, in as many processes as you like) repeats:

1. find the topics with pending rows; a topic in ``split_topics`` becomes ``n`` shards
   (``topic#i/n``), each holding the keys whose ``key_hash % n == i``;
2. claim the least recently processed topic (or shard) nobody holds: a conditional
   ``UPDATE kafka_topic_info SET locked_by = me`` that succeeds for exactly one worker.
   On PostgreSQL, MySQL and MariaDB the worker first takes a lock that dies with its
   connection (:class:`SessionLocks`: a session advisory lock, ``GET_LOCK``), so a killed
   worker's topics are free again as soon as the database sees its connection close. On
   SQLite (and against holders without one) candidates are read ``FOR UPDATE SKIP LOCKED``
   where the database has it, and a lock whose holder stopped renewing it for
   ``lock_timeout`` seconds is taken over; a heartbeat thread renews the held lock every
   ``heartbeat_interval`` seconds, however long a batch takes;
3. drain it in id order, ``batch_size`` rows at a time: send (compacted to the last message
   per key for ``compact_topics``), wait for the broker's acknowledgements, then delete
   exactly the rows whose delivery was acknowledged, and keep the ones behind a failed
   message of the same key so that a key's messages are never reordered (a message refused
   at ``produce()`` holds its key's later rows back unsent); the Kafka producer is core's
   shared reporting producer (:mod:`deimos.kafka.producers`), replaced after a fatal error
   or when every delivery times out while the broker answers;
4. on failure, record the error and retry count on the topic, back off exponentially and go
   on with the other topics. A message the broker can never take (too large) moves to
   ``kafka_dead_letters`` with the error (or, with ``dead_letter = false``, stays and blocks
   its topic with the error recorded); it is never silently deleted.

Delivery is at least once: a worker killed between the broker's ack and the delete sends those
rows again after restart.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException

from deimos import events
from deimos.config import Settings, get_settings
from deimos.errors import ConfigError, PublishError
from deimos.health import Heartbeat
from deimos.kafka.config import cluster_settings
from deimos.kafka.producers import DeliveryWaiter, SharedProducer, shared_producer
from deimos.message import Message
from deimos.retry import Backoff
from deimos.runner import Executor, ExecutorGroup, Runnable, run_until_stopped
from deimos.runtime import get_runtime
from deimos.telemetry import Telemetry

from .engine import NOTIFY_CHANNEL, decode_headers, get_engine, utcnow
from .models import kafka_dead_letters, kafka_messages, kafka_topic_info
from .settings import DbProducerSettings, DbSettings

log = logging.getLogger("deimos_db.producer")

#: errors after which resending the same bytes can never succeed
FATAL_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                         KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD})

_M = kafka_messages.c
_T = kafka_topic_info.c
_EPOCH = _dt.datetime(1970, 1, 1)
_DELETE_IDS = kafka_messages.delete().where(_M.id.in_(sa.bindparam("ids", expanding=True)))


class OutboxRow(NamedTuple):
    """One ``kafka_messages`` row as the DB producer sends it: the columns of its select, in
    that order. A named tuple, not SQLAlchemy's ``Row``: a ``Row`` attribute is a mapping
    lookup (measured: 230 ns against a named tuple's 30), and a row's columns are read six
    to eight times on its way to the broker (1.5 µs of the 10 µs a row took on SQLite)."""

    id: int
    key: bytes | None
    message: bytes | None
    partition_key: bytes | None
    headers: str | None
    cluster: str | None


#: the columns of an :class:`OutboxRow`
_SEND_COLUMNS = (_M.id, _M.key, _M.message, _M.partition_key, _M.headers, _M.cluster)
assert tuple(c.name for c in _SEND_COLUMNS) == OutboxRow._fields
#: ``OutboxRow._make`` without its Python frame per row
_outbox_row = functools.partial(tuple.__new__, OutboxRow)


@dataclass(frozen=True)
class Unit:
    """What one lock covers: a whole topic, or shard ``index`` of ``shards`` of a hot topic."""

    topic: str
    index: int = 0
    shards: int = 1

    @property
    def name(self) -> str:
        return self.topic if self.shards == 1 else f"{self.topic}#{self.index}/{self.shards}"

    def where(self) -> Any:
        cond = _M.topic == self.topic
        if self.shards > 1:
            cond = sa.and_(cond, _M.key_hash % self.shards == self.index)
        return cond


def topic_of(unit_name: str) -> str:
    """``orders#1/4`` -> ``orders``."""
    head, sep, tail = unit_name.rpartition("#")
    return head if sep and "/" in tail else unit_name


class Waker:
    """Lets idle workers sleep until new rows are announced (PostgreSQL NOTIFY) or stop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def wake(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float, since: int | None = None) -> None:
        with self._cond:
            gen = self._generation if since is None else since
            self._cond.wait_for(lambda: self._generation != gen, timeout)

    @property
    def generation(self) -> int:
        return self._generation


def kafka_settings(settings: Settings, ps: DbProducerSettings) -> Settings:
    """deimos's producer settings with messages timing out inside ``delivery_timeout``, so a
    failed batch fails cleanly instead of lingering in librdkafka's queue and arriving after
    its retry."""
    conf = {**settings.producers.config,
            "message.timeout.ms": int(ps.delivery_timeout * 1000)}
    producers = settings.producers.model_copy(update={"config": conf})
    return settings.model_copy(update={"producers": producers})


class BatchResult:
    """What happened to one batch: rows to delete, rows to dead-letter, the first error."""

    __slots__ = ("dead", "delete_ids", "error", "sent")

    def __init__(self) -> None:
        self.delete_ids: list[int] = []
        self.dead: list[tuple[Any, str]] = []
        self.error: BaseException | None = None
        self.sent = 0


class DbProducer:
    """One DB producer worker: a runnable (``run``/``stop``) for :class:`deimos.runner.Executor`.

    ``process_next()`` does one pass over every pending topic and returns the number of rows
    it finished with (sent, or dead-lettered); tests and scripts can call it directly.
    """

    def __init__(self, settings: Settings | None = None, *, waker: Waker | None = None,
                 worker_id: str | None = None, telemetry: Telemetry | None = None) -> None:
        self.settings = settings or get_settings()
        db: DbSettings = self.settings.section("db")
        self.db = db
        self.ps: DbProducerSettings = db.producer
        self.engine = get_engine(db.url, db.engine_options)
        self.id = worker_id or f"{uuid.uuid4()}"
        self.waker = waker or Waker()
        self.telemetry = telemetry or get_runtime().telemetry
        self._kafka_settings = kafka_settings(self.settings, self.ps)
        self._stop = threading.Event()
        self._skip_locked = supports_skip_locked(self.engine)
        #: PostgreSQL, MySQL and MariaDB: topic locks that die with this worker's connection
        self._locks = SessionLocks(self.engine) if supports_session_locks(self.engine) else None
        if self._locks is not None and not self.id.endswith(SESSION_MARK):
            self.id += SESSION_MARK
        self._known: set[str] = set()
        self._held: str | None = None
        self._held_lock = threading.Lock()
        self._lost = threading.Event()
        self._heartbeat: threading.Thread | None = None
        #: the loop's last completed pass or batch (liveness), failed passes in a row
        self.beat = Heartbeat()
        self.failures = 0
        #: when this worker last had a delivery acknowledged (``time.monotonic()``)
        self._acked_at = time.monotonic()
        self._backoff = retry_backoff(self.ps)

    def __repr__(self) -> str:
        return f"DbProducer({self.id})"

    def health(self) -> dict[str, Any]:
        """Liveness and readiness for the health endpoint (:mod:`deimos_db.health`)."""
        from .health import producer_health

        return producer_health(self)

    # -- runnable ---------------------------------------------------------------------------

    def run(self) -> None:
        log.info("DB producer %s started on %s", self.id, self.engine.url.render_as_string())
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                           name=f"deimos-db-heartbeat-{self.id[:8]}")
        self._heartbeat.start()
        try:
            while not self._stop.is_set():
                generation = self.waker.generation
                try:
                    done = self.process_next()
                    self.failures = 0
                except Exception:
                    self.failures += 1
                    log.exception("DB producer %s: pass failed; retrying", self.id)
                    done = 0
                    # a dropped connection, a database restart: back off, the pool reconnects
                    self._stop.wait(self._backoff.delay(self.failures))
                self.beat.beat()
                if not done and not self._stop.is_set():
                    self.waker.wait(self.ps.poll_interval, generation)
        finally:
            self._stop.set()
            self._heartbeat.join(5)
            if self._locks is not None:
                self._locks.close()
            log.info("DB producer %s stopped", self.id)

    def stop(self) -> None:
        self._stop.set()
        self.waker.wake()

    # -- one pass ---------------------------------------------------------------------------

    def pending_units(self) -> list[Unit]:
        with self.engine.connect() as conn:
            topics = [r[0] for r in conn.execute(sa.select(_M.topic).distinct())]
        units: list[Unit] = []
        for topic in topics:
            n = self.ps.split_topics.get(topic, 1)
            units.extend(Unit(topic, i, n) for i in range(n))
        return units

    def process_next(self) -> int:
        """Claim and drain topics until none with pending rows is free; rows finished."""
        units = self.pending_units()
        if not units:
            return 0
        self._ensure_topic_rows([u.name for u in units])
        by_name = {u.name: u for u in units}
        done = 0
        tried: set[str] = set()
        while not self._stop.is_set():
            unit = self._claim([n for n in by_name if n not in tried])
            if unit is None:
                break
            tried.add(unit)
            done += self._drain(by_name[unit])
        return done

    # -- topic locks ------------------------------------------------------------------------

    def _ensure_topic_rows(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self._known]
        if not missing:
            return
        with self.engine.connect() as conn:
            existing = {r[0] for r in conn.execute(
                sa.select(_T.topic).where(_T.topic.in_(missing)))}
        for name in missing:
            if name not in existing:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(kafka_topic_info.insert().values(topic=name, retries=0))
                except sa.exc.IntegrityError:
                    pass  # another worker made it first
            self._known.add(name)

    def _claimable(self, now: _dt.datetime) -> Any:
        expired = now - _dt.timedelta(seconds=self.ps.lock_timeout)
        free = [_T.locked_by.is_(None), _T.locked_by == self.id, _T.locked_at < expired]
        if self._locks is not None:
            # held by a worker whose session lock we can take: that worker's connection is
            # gone (it died), whatever its lease says
            free.append(_T.locked_by.like(f"%{SESSION_MARK}"))
        return sa.and_(sa.or_(*free), sa.or_(_T.retry_at.is_(None), _T.retry_at <= now))

    def _claim(self, names: Sequence[str]) -> str | None:
        """Lock the least recently processed free unit among ``names``; its name or None."""
        if not names:
            return None
        now = utcnow()
        query = (sa.select(_T.topic)
                 .where(_T.topic.in_(names), self._claimable(now))
                 .order_by(sa.func.coalesce(_T.last_processed_at, _EPOCH), _T.id))
        if self._locks is not None:
            return self._claim_with_session_lock(query, now)
        if self._skip_locked:
            # read and lock one free candidate without waiting on rows other workers hold
            with self.engine.begin() as conn:
                row = conn.execute(query.limit(1).with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                if self._lock(conn, row[0], now):
                    return str(row[0])
                return None
        with self.engine.connect() as conn:
            candidates = [r[0] for r in conn.execute(query.limit(8))]
        for name in candidates:
            with self.engine.begin() as conn:
                if self._lock(conn, name, now):
                    return str(name)
        return None

    def _claim_with_session_lock(self, query: Any, now: _dt.datetime) -> str | None:
        """Take the session lock of a candidate, then its lease row; free ones first."""
        assert self._locks is not None
        query = query.order_by(None).order_by(
            sa.case((_T.locked_by.is_(None), 0), else_=1),
            sa.func.coalesce(_T.last_processed_at, _EPOCH), _T.id)
        with self.engine.connect() as conn:
            candidates = [r[0] for r in conn.execute(query.limit(16))]
        for name in candidates:
            if not self._locks.acquire(name):
                continue  # a live worker holds it
            try:
                with self.engine.begin() as conn:
                    if self._lock(conn, name, now):
                        return str(name)
            except BaseException:
                self._locks.release(name)
                raise
            self._locks.release(name)
        return None

    def _lock(self, conn: sa.Connection, name: str, now: _dt.datetime) -> bool:
        result = conn.execute(
            kafka_topic_info.update()
            .where(_T.topic == name, self._claimable(now))
            .values(locked_by=self.id, locked_at=now))
        if result.rowcount != 1:
            return False
        with self._held_lock:
            self._held = name
        self._lost.clear()
        return True

    def _release(self, name: str) -> None:
        with self._held_lock:
            self._held = None
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    kafka_topic_info.update()
                    .where(_T.topic == name, _T.locked_by == self.id)
                    .values(locked_by=None, locked_at=None, error=None, retries=0,
                            retry_at=None, last_processed_at=utcnow()))
        finally:
            if self._locks is not None:
                self._locks.release(name)

    def _register_error(self, name: str, error: BaseException) -> None:
        """Record the error and back off: this topic waits, the others keep flowing."""
        with self._held_lock:
            self._held = None
        text = f"{type(error).__name__}: {error}"[:4000]
        try:
            retries, delay = self._record_error(name, text)
        finally:
            if self._locks is not None:
                self._locks.release(name)
        log.error("DB producer %s: topic %s failed (retry %d in %.1fs): %s", self.id, name,
                  retries, delay, text)
        self.telemetry.increment("db_producer.error", 1, {"topic": topic_of(name)})

    def _record_error(self, name: str, text: str) -> tuple[int, float]:
        with self.engine.begin() as conn:
            conn.execute(kafka_topic_info.update()
                         .where(_T.topic == name, _T.locked_by == self.id)
                         .values(retries=_T.retries + 1, error=text))
            retries = conn.execute(
                sa.select(_T.retries).where(_T.topic == name)).scalar() or 1
            # jittered so workers of many topics do not retry in step; capped after it
            delay = self._backoff.delay(retries)
            conn.execute(kafka_topic_info.update()
                         .where(_T.topic == name, _T.locked_by == self.id)
                         .values(locked_by=None, locked_at=None,
                                 retry_at=utcnow() + _dt.timedelta(seconds=delay)))
        return retries, delay

    def _heartbeat_loop(self) -> None:
        """Renew the held lock so a long batch (a slow broker) never lets it expire."""
        while not self._stop.wait(self.ps.heartbeat_interval):
            self.heartbeat()

    def heartbeat(self) -> bool:
        """Renew the held lock now; False when it was lost (taken over after expiry)."""
        with self._held_lock:
            name = self._held
        if name is None:
            return True
        try:
            with self.engine.begin() as conn:
                result = conn.execute(kafka_topic_info.update()
                                      .where(_T.topic == name, _T.locked_by == self.id)
                                      .values(locked_at=utcnow()))
        except Exception:
            log.warning("DB producer %s: lock heartbeat for %s failed", self.id, name,
                        exc_info=True)
            return True
        if result.rowcount != 1:
            log.error("DB producer %s lost its lock on %s", self.id, name)
            self._lost.set()
            return False
        return True

    # -- draining ---------------------------------------------------------------------------

    def _drain(self, unit: Unit) -> int:
        name = unit.name
        done = 0
        try:
            while not self._stop.is_set():
                if self._lost.is_set():
                    raise PublishError(f"lock on {name} was lost; another worker took over")
                with self.engine.connect() as conn:
                    # only what sending needs: a dead letter's other columns are read when
                    # it is moved (SQLite hands datetimes back as text to parse, per row)
                    rows = list(map(_outbox_row, conn.execute(
                        sa.select(*_SEND_COLUMNS)
                        .where(unit.where()).order_by(_M.id).limit(self.ps.batch_size)
                    ).all()))
                if not rows:
                    break
                result = self.send(unit.topic, rows)
                self._finish(unit.topic, result)
                on_produce = get_runtime().events.emitter(events.OUTBOX_PRODUCE)
                if on_produce is not None:
                    on_produce({"topic": unit.topic, "messages": rows, "sent": result.sent,
                                "dead": result.dead, "exception": result.error})
                self.beat.beat()
                done += len(result.delete_ids) + len(result.dead)
                if result.error is not None:
                    raise result.error
                if len(rows) < self.ps.batch_size:
                    break
        except Exception as exc:
            self._register_error(name, exc)
            return done
        self._release(name)
        return done

    def _finish(self, topic: str, result: BatchResult) -> None:
        """Delete what the broker acknowledged; move what it can never take aside."""
        if not result.delete_ids and not result.dead:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            if result.dead:
                errors = {r.id: err for r, err in result.dead}
                dead = conn.execute(sa.select(kafka_messages).where(
                    _M.id.in_(list(errors)))).all()
                conn.execute(kafka_dead_letters.insert(), [{
                    "message_id": r.id, "topic": r.topic, "key": r.key, "message": r.message,
                    "partition_key": r.partition_key, "headers": r.headers,
                    "created_at": r.created_at, "failed_at": now,
                    "error": errors[r.id][:4000], "cluster": r.cluster,
                } for r in dead])
            ids = result.delete_ids + [r.id for r, _ in result.dead]
            for start in range(0, len(ids), 1000):
                # one cached statement, the id list bound at execution: building an IN of
                # 1,000 literal parameters per batch cost more than the DELETE itself
                conn.execute(_DELETE_IDS, {"ids": ids[start:start + 1000]})
        tags = {"topic": topic}
        if result.sent:
            self.telemetry.increment("db_producer.process", result.sent, tags)
        if result.dead:
            self.telemetry.increment("db_producer.dead_letter", len(result.dead), tags)
            log.error("DB producer %s: %d message(s) of %s moved to kafka_dead_letters: %s",
                      self.id, len(result.dead), topic, result.dead[0][1])

    def _blocks(self, exc: KafkaException) -> bool:
        """Whether a message refused at ``produce()`` holds its key's later messages back:
        always, unless it is one the broker can never take and goes to the dead letters."""
        return not (self.ps.dead_letter and _code(exc.args[0] if exc.args else exc)
                    in FATAL_CODES)

    def send(self, topic: str, rows: Sequence[Any]) -> BatchResult:
        """Send ``rows`` (id order) each to its producer's cluster (the row's ``cluster``,
        NULL: the default one), and sort them into delivered / dead / to retry.

        Rows of different clusters are different streams (a key's order is kept per
        cluster), so each cluster's rows go as a batch of their own, in id order."""
        if all(_cluster_of(r) is None for r in rows):  # the usual case: one cluster
            return self._send(topic, rows, None)
        by_cluster: dict[str | None, list[Any]] = {}
        for r in rows:
            by_cluster.setdefault(_cluster_of(r), []).append(r)
        result = BatchResult()
        for cluster, part in by_cluster.items():
            got = self._send(topic, part, cluster)
            result.delete_ids.extend(got.delete_ids)
            result.dead.extend(got.dead)
            result.sent += got.sent
            if result.error is None:
                result.error = got.error
        return result

    def _settings_for(self, cluster: str | None) -> Settings:
        """The DB producer's Kafka settings on ``cluster``; a cluster no longer configured
        is the topic's error (its rows stay, retried, until the settings name it again)."""
        if cluster is None:
            return self._kafka_settings
        try:
            return cluster_settings(self._kafka_settings, cluster,
                                    where=f"kafka_messages.cluster {cluster!r}")
        except ConfigError as exc:
            raise PublishError(
                f"outbox rows name cluster {cluster!r}, which is not configured under "
                f"kafka.clusters: {exc}") from None

    def _send(self, topic: str, rows: Sequence[Any], cluster: str | None) -> BatchResult:
        """Send ``rows`` of one cluster (id order) and sort them into delivered / dead / to
        retry.

        A row refused at ``produce()`` (larger than ``message.max.bytes``, say) holds its
        key back: the later rows of that key are not sent in this batch (they stay, and go
        after it). A row whose delivery failed keeps the later rows of its key that failed
        too (librdkafka fails a partition's queue in order); a later row that *was*
        delivered is deleted all the same, never sent twice."""
        result = BatchResult()
        to_send = compact(rows) if self.ps.compacts(topic) else list(rows)
        if self.ps.log_topics and self.ps.logs(topic):
            log.info("DB producer %s: producing %d message(s) to %s: %r", self.id,
                     len(to_send), topic, [(r.key, r.message) for r in to_send])
        try:
            sp = shared_producer(self._settings_for(cluster), reports=True)
        except PublishError as unknown:
            result.error = unknown
            return result  # nothing sent: every row stays
        messages = [Message(topic, None, None, decode_headers(r.headers) if r.headers else None,
                            r.partition_key, r.key, r.message) for r in to_send]
        index = {id(m): i for i, m in enumerate(messages)}
        waiter = DeliveryWaiter(len(messages))
        refused = sp.produce_all(topic, messages, waiter, self._blocks)
        waiter.refused(len(refused))
        failed: dict[int, Any] = {}
        held: set[int] = set()
        for m, exc in refused:
            if exc is None:
                held.add(index[id(m)])
            else:
                failed[index[id(m)]] = exc.args[0] if exc.args else exc
        if not self._await(sp, waiter, topic):
            result.error = PublishError(
                f"{waiter.pending} message(s) to {topic!r} were not acknowledged within "
                f"{self.ps.delivery_timeout}s")
            return result  # not known to be delivered: keep every row
        if waiter.delivered:
            self._acked_at = time.monotonic()
        if waiter.failures:
            # Every row with a failed message's key and bytes counts as failed: identical
            # messages cannot be told apart, and sending one again is at-least-once as usual.
            by_content = {(m.key(), m.value()): err for m, err in waiter.failures}
            for i, r in enumerate(to_send):
                if i not in failed and i not in held:
                    err = by_content.get((r.key, r.message))
                    if err is not None:
                        failed[i] = err
            # every delivery timed out while the broker answers: the next batch gets a new
            # producer (an idempotent one a restarted broker does not know stays stuck)
            sp.note_deliveries(waiter.delivered, waiter.failures)
        if not failed and not held:  # the usual case: every row goes (compacted-away too)
            result.delete_ids = [r.id for r in rows]
            result.sent = len(to_send)
            return result
        # Sort rows out in id order: a row behind a failed or held row of its key stays.
        blocked: set[bytes] = set()
        survivor_done: dict[bytes, bool] = {}
        overtaken = 0
        for i, r in enumerate(to_send):
            k = r.partition_key if r.partition_key is not None else r.key
            err = failed.get(i)
            if err is not None:
                if self.ps.dead_letter and _code(err) in FATAL_CODES:
                    result.dead.append((r, f"{_describe(err)}"))
                    ok = True
                else:
                    if result.error is None:
                        result.error = PublishError(
                            f"could not deliver message {r.id} to {topic!r}: {_describe(err)}")
                    if k is not None:
                        blocked.add(k)
                    ok = False
            elif i in held:
                ok = False
            else:  # delivered: deleted even behind a failure (resending would duplicate it)
                result.delete_ids.append(r.id)
                result.sent += 1
                ok = True
                overtaken += k is not None and k in blocked
            if k is not None:
                survivor_done[k] = ok
        if overtaken:
            log.warning("DB producer %s: %d message(s) to %s were delivered although an "
                        "earlier message of their key failed; that key's order is broken",
                        self.id, overtaken, topic)
        if len(to_send) != len(rows):  # compacted-away rows go with their key's survivor
            sent_ids = {r.id for r in to_send}
            for r in rows:
                if r.id not in sent_ids:
                    k = r.partition_key if r.partition_key is not None else r.key
                    if survivor_done.get(k, False):
                        result.delete_ids.append(r.id)
        return result

    def _await(self, sp: SharedProducer, waiter: DeliveryWaiter, topic: str) -> bool:
        """Wait for every delivery report of a batch; False when some did not come in time.

        While it waits, an error librdkafka reported since this worker's last acknowledged
        batch (the broker went away, say) is made visible within a second: a log line, the
        ``db_producer.broker_error`` metric and ``kafka_topic_info.error``."""
        deadline = time.monotonic() + self.ps.delivery_timeout + 5
        reported = False
        while not waiter.done.wait(1.0):
            if not reported:
                # connection failures go to the cluster's BrokerConnection, others to sp
                if sp.connection.failing and sp.connection.last_error:
                    reported = True
                    self._report_waiting(topic, sp.connection.last_error)
                elif sp.last_error is not None and sp.last_error_at > self._acked_at:
                    reported = True
                    self._report_waiting(topic, _describe(sp.last_error))
            if time.monotonic() >= deadline:
                return waiter.done.is_set()
        return True

    def _report_waiting(self, topic: str, error: str) -> None:
        with self._held_lock:
            name = self._held
        text = f"waiting for Kafka's acknowledgements: {error}"[:4000]
        log.error("DB producer %s: %s: no acknowledgement yet; librdkafka reports: %s",
                  self.id, name or topic, error)
        self.telemetry.increment("db_producer.broker_error", 1, {"topic": topic})
        if name is None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(kafka_topic_info.update()
                             .where(_T.topic == name, _T.locked_by == self.id)
                             .values(error=text))
        except Exception:
            log.warning("DB producer %s: could not record the error of %s", self.id, name,
                        exc_info=True)


def _cluster_of(row: Any) -> str | None:
    return getattr(row, "cluster", None)


def retry_backoff(ps: DbProducerSettings) -> Backoff:
    """A failed topic's wait: ``retry.backoff`` growing per retry, spread by
    ``retry.jitter``, never longer than ``retry.max_backoff``."""
    return Backoff.from_settings(ps.retry)


def compact(rows: Sequence[Any]) -> list[Any]:
    """The last row per key, in id order (rows without a key are all kept)."""
    last: dict[bytes, int] = {}
    for r in rows:
        if r.key is not None:
            last[r.key] = r.id
    return [r for r in rows if r.key is None or last[r.key] == r.id]


def _code(err: Any) -> Any:
    return err.code() if isinstance(err, KafkaError) else None


def _describe(err: Any) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)


#: ends the worker id of a worker that holds its topics with session locks: such a lease is
#: taken over as soon as its session lock is free, without waiting for ``lock_timeout``
SESSION_MARK = "@session"

#: the first key of deimos-db's PostgreSQL advisory locks (two-int form: 'dmdb')
_PG_LOCK_CLASS = 0x646D6462


def supports_session_locks(engine: sa.Engine) -> bool:
    """PostgreSQL (advisory locks), MySQL and MariaDB (``GET_LOCK``)."""
    return engine.dialect.name in ("postgresql", "mysql", "mariadb")


class SessionLocks:
    """Topic locks that die with their connection, held on one dedicated autocommit
    connection per worker: PostgreSQL session advisory locks (``pg_try_advisory_lock``) and
    MySQL/MariaDB named locks (``GET_LOCK``). When the worker dies (even SIGKILLed) the
    database closes its connection and frees its locks at once, so another worker takes its
    topics over in a poll interval rather than after ``lock_timeout``. The lease columns of
    ``kafka_topic_info`` are still written (who holds what, and the fallback for SQLite)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._conn: sa.Connection | None = None
        self._mutex = threading.Lock()
        #: where the outbox tables are (PostgreSQL: the schema; MySQL/MariaDB: the database):
        #: advisory locks are per database and named locks per server, so two services whose
        #: outboxes share a server must not lock each other's topics
        self._scope = ""

    def _connection(self) -> sa.Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._scope = str(self._conn.execute(sa.text(
                "SELECT current_schema()" if self.postgres else "SELECT DATABASE()")).scalar())
        return self._conn

    def _args(self, name: str) -> dict[str, Any]:
        scope = f"{self._scope}/{name}".encode()
        if self.postgres:
            digest = hashlib.blake2b(scope, digest_size=4).digest()
            return {"c": _PG_LOCK_CLASS, "k": int.from_bytes(digest, "big", signed=True)}
        # 64 characters at most
        return {"n": f"deimos_db:{hashlib.blake2b(scope, digest_size=16).hexdigest()}"}

    def acquire(self, name: str) -> bool:
        """Take ``name``'s lock without waiting; False when another connection holds it."""
        sql = ("SELECT pg_try_advisory_lock(:c, :k)" if self.postgres
               else "SELECT GET_LOCK(:n, 0)")
        with self._mutex:
            try:
                got = self._connection().execute(sa.text(sql), self._args(name)).scalar()
            except Exception:
                self._drop()
                raise
        return bool(got)

    def release(self, name: str) -> None:
        sql = ("SELECT pg_advisory_unlock(:c, :k)" if self.postgres
               else "SELECT RELEASE_LOCK(:n)")
        with self._mutex:
            if self._conn is None:
                return  # the connection went, and its locks with it
            try:
                self._conn.execute(sa.text(sql), self._args(name))
            except Exception:
                log.warning("could not release the session lock of %s; dropping its "
                            "connection (which frees it)", name, exc_info=True)
                self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()

    def close(self) -> None:
        """Close the connection for good (not back to the pool, where a lock still held
        would outlive the worker), freeing every lock it held."""
        with self._mutex:
            self._drop()


def supports_skip_locked(engine: sa.Engine) -> bool:
    """PostgreSQL 9.5+, MySQL 8+, MariaDB 10.6+."""
    dialect = engine.dialect
    if dialect.name == "postgresql":
        return True
    if dialect.name in ("mysql", "mariadb"):
        if dialect.server_version_info is None:
            with engine.connect():
                pass
        version = dialect.server_version_info or (0,)
        return version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0))
    return False


# ---------------------------------------------------------------------------------------------
# companions: pending metrics and PostgreSQL wake-ups
# ---------------------------------------------------------------------------------------------


@dataclass
class Pending:
    count: int
    max_wait: float


def pending_messages(engine: sa.Engine) -> dict[str, Pending]:
    """Per topic: rows waiting and the age in seconds of the oldest (monitor the backlog)."""
    now = utcnow()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_M.topic, sa.func.count(), sa.func.min(_M.created_at))
                            .group_by(_M.topic)).all()
    out = {}
    for topic, count, oldest in rows:
        if isinstance(oldest, str):  # SQLite may hand back text
            oldest = _dt.datetime.fromisoformat(oldest)
        out[topic] = Pending(int(count), max(0.0, (now - oldest).total_seconds()))
    return out


class PendingMetrics:
    """Reports ``pending_db_messages_count`` and ``pending_db_messages_max_wait`` per topic
    every ``metrics_interval`` seconds (0 for topics with nothing waiting)."""

    def __init__(self, settings: Settings | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.settings = settings or get_settings()
        db: DbSettings = self.settings.section("db")
        self.engine = get_engine(db.url, db.engine_options)
        self.interval = db.producer.metrics_interval
        self.telemetry = telemetry or get_runtime().telemetry
        self._stop = threading.Event()

    def report(self) -> dict[str, Pending]:
        pending = pending_messages(self.engine)
        with self.engine.connect() as conn:
            known = {topic_of(r[0]) for r in conn.execute(sa.select(_T.topic))}
        for topic in sorted(known | set(pending)):
            p = pending.get(topic, Pending(0, 0.0))
            tags = {"topic": topic}
            self.telemetry.gauge("pending_db_messages_count", p.count, tags)
            self.telemetry.gauge("pending_db_messages_max_wait", p.max_wait, tags)
        return pending

    def run(self) -> None:
        while True:
            try:
                self.report()
            except Exception:
                log.warning("could not report pending DB messages", exc_info=True)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()


class NotifyListener:
    """PostgreSQL: ``LISTEN`` for the backend's ``NOTIFY`` and wake idle workers at once."""

    def __init__(self, engine: sa.Engine, waker: Waker) -> None:
        self.engine = engine
        self.waker = waker
        self._stop = threading.Event()

    def run(self) -> None:
        raw = self.engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.waker.wake()  # rows inserted before we listened
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self.waker.wake()
        finally:
            raw.invalidate()  # never hand a LISTENing connection back to the pool

    def stop(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def factories(settings: Settings | None = None, workers: int | None = None
              ) -> list[Callable[[], Runnable]]:
    """Runnables of one DB producer process: the workers, the pending metrics reporter and,
    on PostgreSQL, the NOTIFY listener."""
    settings = settings or get_settings()
    db: DbSettings = settings.section("db")
    n = workers or db.producer.workers
    waker = Waker()
    out: list[Callable[[], Runnable]] = [
        lambda: DbProducer(settings, waker=waker) for _ in range(n)]
    out.append(lambda: PendingMetrics(settings))
    engine = get_engine(db.url, db.engine_options)
    if db.producer.listen and engine.dialect.name == "postgresql":
        out.append(lambda: NotifyListener(engine, waker))
    return out


class DbProducerGroup(ExecutorGroup):
    """``workers`` DB producer threads plus their companions, restarted if they crash.

    ``start()``/``stop()``/``join()`` for embedding in your process; :func:`run_db_producer`
    for a process of its own.
    """

    def __init__(self, workers: int | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.executor = Executor(factories(self.settings, workers),
                                 restart_delay=min(self.settings.runner.restart_delay, 1.0),
                                 name="deimos-db-producer")


def run_db_producer(workers: int | None = None, *, install_signals: bool = True,
                    until: threading.Event | None = None,
                    health_port: int | None = None) -> bool:
    """Run the DB producer until SIGINT/SIGTERM (or ``until``); True on a clean stop.
    ``health_port``: serve the health endpoints there (else ``health.port``)."""
    group = DbProducerGroup(workers, get_settings())
    return run_until_stopped(group.executor, install_signals=install_signals, until=until,
                             health_port=health_port)


def iter_rows(engine: sa.Engine, topic: str | None = None) -> Iterable[Any]:
    """Rows waiting in ``kafka_messages`` (operations, tests)."""
    query = sa.select(kafka_messages).order_by(_M.id)
    if topic is not None:
        query = query.where(_M.topic == topic)
    with engine.connect() as conn:
        return conn.execute(query).all()


def wait_until_empty(engine: sa.Engine, timeout: float = 60.0) -> bool:
    """True once ``kafka_messages`` is empty (within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if not conn.execute(sa.select(sa.func.count()).select_from(kafka_messages)
                                ).scalar():
                return True
        time.sleep(0.05)
    return False
