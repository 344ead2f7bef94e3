"""The DB producer: sends the rows of ``kafka_messages`` to Kafka and deletes them once acked.

Each worker (a thread; run several, in as many processes as you like) repeats:

1. find the topics with pending rows; a topic in ``split_topics`` becomes ``n`` shards
   (``topic#i/n``), each holding the keys whose ``key_hash % n == i``;
2. claim the least recently processed topic (or shard) nobody holds: a conditional
   ``UPDATE kafka_topic_info SET locked_by = me`` that succeeds for exactly one worker.
   Candidates are read ``FOR UPDATE SKIP LOCKED`` where the database has it, so workers do
   not queue behind each other. A lock whose holder stopped renewing it for ``lock_timeout``
   seconds is taken over (a killed worker's topic is not stuck); a heartbeat thread renews
   the held lock every ``heartbeat_interval`` seconds, however long a batch takes;
3. drain it in id order, ``batch_size`` rows at a time: send (compacted to the last message
   per key for ``compact_topics``), wait for the broker's acknowledgements, then delete
   exactly the rows whose delivery was acknowledged, and keep the ones behind a failed
   message of the same key so that a key's messages are never reordered;
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
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as KafkaProducer

from deimos.backends.kafka import producer_config
from deimos.config import Settings, get_settings
from deimos.errors import PublishError
from deimos.health import Heartbeat
from deimos.kafka.connection import instrument
from deimos.partitioner import murmur2_partition
from deimos.runner import Executor, Runnable, run_until_stopped
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


class KafkaSender:
    """The librdkafka producer the workers of a process share (one per configuration).

    Unlike core's shared producer it is replaced after a fatal error: an idempotent producer
    turns fatal when, say, a restarted broker lost its producer state, and a DB producer must
    carry on with a new one rather than fail every batch until it is restarted.
    """

    _lock = threading.Lock()
    _senders: dict[str, KafkaSender] = {}

    def __init__(self, conf: dict[str, Any]) -> None:
        # deimos's logger, error and statistics callbacks: connection failures logged once,
        # the broker's reachability known to the health endpoint
        self.conf = instrument(conf)
        self.producer = KafkaProducer(self.conf)
        self._partitions: dict[str, tuple[int, float]] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> KafkaSender:
        conf = producer_config(settings)
        # a report per message: with errors-only reports librdkafka's flush() notices the
        # batch is done only at its 100 ms wake-ups, which would cap a worker's throughput
        conf["delivery.report.only.error"] = False
        key = repr(sorted(conf.items()))
        with cls._lock:
            sender = cls._senders.get(key)
            if sender is None:
                sender = cls._senders[key] = KafkaSender(conf)
            return sender

    def partition_count(self, topic: str) -> int:
        cached = self._partitions.get(topic)
        now = time.monotonic()
        if cached and now - cached[1] < 60:
            return cached[0]
        md = self.producer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise PublishError(f"cannot read the partitions of topic {topic!r}: "
                               f"{md.error if md is not None else 'unknown topic'}")
        self._partitions[topic] = (len(md.partitions), now)
        return len(md.partitions)

    def replace(self, broken: Any) -> None:
        """Swap in a new producer after a fatal error (once, however many workers saw it)."""
        with self._lock:
            if self.producer is not broken:
                return
            log.warning("the DB producer's Kafka producer hit a fatal error; making a new one")
            self.producer = KafkaProducer(self.conf)
            self._partitions.clear()
        with contextlib.suppress(Exception):  # the old producer is dead anyway
            broken.flush(0)

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            senders = list(cls._senders.values())
            cls._senders.clear()
        for sender in senders:
            sender.producer.flush(5)


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
        self._known: set[str] = set()
        self._held: str | None = None
        self._held_lock = threading.Lock()
        self._lost = threading.Event()
        self._heartbeat: threading.Thread | None = None
        #: the loop's last completed pass or batch (liveness), failed passes in a row
        self.beat = Heartbeat()
        self.failures = 0

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
                    self._stop.wait(min(self.ps.max_retry_backoff,
                                        self.ps.retry_backoff * 2 ** min(self.failures, 10)))
                self.beat.beat()
                if not done and not self._stop.is_set():
                    # serve the Kafka client's callbacks while idle (broker reachability)
                    KafkaSender.for_settings(self._kafka_settings).producer.poll(0)
                    self.waker.wait(self.ps.poll_interval, generation)
        finally:
            self._stop.set()
            self._heartbeat.join(5)
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
        return sa.and_(
            sa.or_(_T.locked_by.is_(None), _T.locked_by == self.id, _T.locked_at < expired),
            sa.or_(_T.retry_at.is_(None), _T.retry_at <= now),
        )

    def _claim(self, names: Sequence[str]) -> str | None:
        """Lock the least recently processed free unit among ``names``; its name or None."""
        if not names:
            return None
        now = utcnow()
        query = (sa.select(_T.topic)
                 .where(_T.topic.in_(names), self._claimable(now))
                 .order_by(sa.func.coalesce(_T.last_processed_at, _EPOCH), _T.id))
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
        with self.engine.begin() as conn:
            conn.execute(
                kafka_topic_info.update()
                .where(_T.topic == name, _T.locked_by == self.id)
                .values(locked_by=None, locked_at=None, error=None, retries=0, retry_at=None,
                        last_processed_at=utcnow()))

    def _register_error(self, name: str, error: BaseException) -> None:
        """Record the error and back off: this topic waits, the others keep flowing."""
        with self._held_lock:
            self._held = None
        text = f"{type(error).__name__}: {error}"[:4000]
        with self.engine.begin() as conn:
            conn.execute(kafka_topic_info.update()
                         .where(_T.topic == name, _T.locked_by == self.id)
                         .values(retries=_T.retries + 1, error=text))
            retries = conn.execute(
                sa.select(_T.retries).where(_T.topic == name)).scalar() or 1
            delay = min(self.ps.max_retry_backoff,
                        self.ps.retry_backoff * 2 ** min(retries - 1, 20))
            delay *= 0.8 + 0.4 * random.random()  # workers of many topics do not retry in step
            conn.execute(kafka_topic_info.update()
                         .where(_T.topic == name, _T.locked_by == self.id)
                         .values(locked_by=None, locked_at=None,
                                 retry_at=utcnow() + _dt.timedelta(seconds=delay)))
        log.error("DB producer %s: topic %s failed (retry %d in %.1fs): %s", self.id, name,
                  retries, delay, text)
        self.telemetry.increment("db_producer.error", 1, {"topic": topic_of(name)})

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
                    rows = conn.execute(
                        sa.select(_M.id, _M.key, _M.message, _M.partition_key, _M.headers)
                        .where(unit.where()).order_by(_M.id).limit(self.ps.batch_size)
                    ).all()
                if not rows:
                    break
                result = self.send(unit.topic, rows)
                self._finish(unit.topic, result)
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
                    "error": errors[r.id][:4000],
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

    def send(self, topic: str, rows: Sequence[Any]) -> BatchResult:
        """Send ``rows`` (id order) and sort them into delivered / dead / to retry."""
        result = BatchResult()
        to_send = compact(rows) if self.ps.compacts(topic) else list(rows)
        sp = KafkaSender.for_settings(self._kafka_settings)
        producer = sp.producer
        produce = producer.produce
        failed: dict[int, Any] = {}
        # One callback for the whole batch (a closure per message cost more than the send):
        # a failure names its message by content, mapped back to rows after the flush.
        undelivered: list[tuple[Any, Any, KafkaError]] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                undelivered.append((msg.key(), msg.value(), err))

        count: int | None = None
        for i, (_id, key, message, partition_key, raw_headers) in enumerate(to_send):
            partition = -1
            if partition_key is not None:
                if count is None:
                    count = sp.partition_count(topic)
                partition = murmur2_partition(partition_key, count)
            while True:
                try:
                    if raw_headers:
                        produce(topic, message, key, partition, on_delivery,
                                headers=decode_headers(raw_headers))  # type: ignore[arg-type]
                    else:
                        produce(topic, message, key, partition, on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:  # refused locally, e.g. larger than allowed
                    failed[i] = exc.args[0] if exc.args else exc
                    break
        remaining = producer.flush(self.ps.delivery_timeout + 5)
        if undelivered:
            # Every row with a failed message's key and bytes counts as failed: identical
            # messages cannot be told apart, and sending one again is at-least-once as usual.
            by_content = {(k, v): err for k, v, err in undelivered}
            for i, r in enumerate(to_send):
                err = by_content.get((r.key, r.message))
                if err is not None:
                    failed.setdefault(i, err)
        if any(_code(e) == KafkaError._FATAL for e in failed.values()):
            sp.replace(producer)
        if remaining:
            result.error = PublishError(
                f"{remaining} message(s) to {topic!r} were not acknowledged within "
                f"{self.ps.delivery_timeout}s")
            return result  # nothing is known to be delivered: keep every row
        if not failed:  # the usual case: every row goes (compacted-away ones with their key)
            result.delete_ids = [r.id for r in rows]
            result.sent = len(to_send)
            return result
        # Sort rows out in id order. A row behind a failed row of the same key stays (it
        # goes again after its predecessor), so a key's messages are never reordered.
        blocked: set[bytes] = set()
        survivor_done: dict[bytes, bool] = {}
        for i, r in enumerate(to_send):
            k = r.partition_key if r.partition_key is not None else r.key
            err = failed.get(i)
            if err is not None:
                fatal = _code(err) in FATAL_CODES
                if fatal and self.ps.dead_letter:
                    result.dead.append((r, f"{_describe(err)}"))
                    ok = True
                else:
                    if result.error is None:
                        result.error = PublishError(
                            f"could not deliver message {r.id} to {topic!r}: {_describe(err)}")
                    if k is not None:
                        blocked.add(k)
                    ok = False
            elif k is not None and k in blocked:
                ok = False
            else:
                result.delete_ids.append(r.id)
                result.sent += 1
                ok = True
            if k is not None:
                survivor_done[k] = ok
        if len(to_send) != len(rows):  # compacted-away rows go with their key's survivor
            sent_ids = {r.id for r in to_send}
            for r in rows:
                if r.id not in sent_ids:
                    k = r.partition_key if r.partition_key is not None else r.key
                    if survivor_done.get(k, False):
                        result.delete_ids.append(r.id)
        return result


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


class DbProducerGroup:
    """``workers`` DB producer threads plus their companions, restarted if they crash.

    ``start()``/``stop()``/``join()`` for embedding in your process; :func:`run_db_producer`
    for a process of its own.
    """

    def __init__(self, workers: int | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.executor = Executor(factories(self.settings, workers),
                                 restart_delay=min(self.settings.runner.restart_delay, 1.0),
                                 name="deimos-db-producer")

    def start(self) -> DbProducerGroup:
        self.executor.start()
        return self

    def stop(self) -> None:
        self.executor.stop()

    def join(self, timeout: float | None = None) -> bool:
        return self.executor.join(timeout)

    def __enter__(self) -> DbProducerGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(self.settings.runner.shutdown_timeout)


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
