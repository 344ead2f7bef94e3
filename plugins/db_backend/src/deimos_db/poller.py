"""The DB poller: publishes rows of a table through record producers, on a schedule.

One :class:`DbPoller` per ``[[db.pollers]]`` entry, each a runnable of
:class:`deimos.runner.Executor` (``deimos db-poller``, :func:`run_db_pollers`,
:class:`DbPollerGroup`), with its state in ``deimos_poll_info``.

**Time-based** (default): every ``run_every`` seconds, publish the rows whose
``timestamp_column`` lies after the last ``(timestamp, id)`` sent and at most ``delay_time``
seconds ago, in batches ordered by ``(timestamp, id)``. The ``(timestamp, id)`` of a batch's
last row is saved after the batch was published, so rows sharing a timestamp across a batch
boundary are neither skipped nor sent twice, and a restarted poller resumes at the row after
the last one it saved. ``delay_time`` keeps the poll behind transactions still in flight (a
row committed late with an earlier timestamp would otherwise be passed by).

**State-based**: publish the rows the first producer's ``state_query`` returns (by default
``state_column IS NULL``), then set ``state_column`` to ``published_state`` (``failed_state``
for rows that could not be published) and ``publish_timestamp_column`` to now.

**Errors**: a batch that fails is sent ``retry.attempts`` times with backoff, then its rows are
published one at a time; the rows that still fail are skipped, logged with their ids, counted
(``db_poller.batches_errored``) and recorded in ``deimos_poll_info`` (``error``,
``batches_errored``), never silently. A row whose message the broker refuses as too large is
skipped at once with ``skip_too_large_messages`` (the default), otherwise the poller stops at
it (the runner restarts it; the error is recorded).

Delivery is at least once: a poller killed after publishing a batch but before saving its
state publishes that batch again.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy.orm import Session

from deimos.config import Settings, get_settings
from deimos.consumer import import_class
from deimos.errors import DeimosError
from deimos.health import Heartbeat
from deimos.retry import Backoff
from deimos.runner import Executor, ExecutorGroup, Runnable, run_until_stopped
from deimos.runtime import get_runtime
from deimos.telemetry import Telemetry

from .engine import get_engine, utcnow
from .models import deimos_poll_info
from .producer import FATAL_CODES
from .record_producer import RecordProducer
from .records import column_attrs, plain_columns, primary_key_names, table_of
from .settings import DbPollerSettings, DbSettings

log = logging.getLogger("deimos_db.poller")

_P = deimos_poll_info.c
EPOCH = _dt.datetime(1970, 1, 1)
#: before any row's timestamp, so ``ts > it`` holds for every row (full_table)
_BEFORE_EVERYTHING = _dt.datetime(1900, 1, 1)
_TOO_LARGE_NAMES = tuple(KafkaError(c).name() for c in FATAL_CODES)


def is_too_large(exc: BaseException) -> bool:
    """Did the broker (or the client) refuse a message as too large?"""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, KafkaError):
            if e.code() in FATAL_CODES:
                return True
            continue
        if isinstance(e, KafkaException) and e.args:
            todo.append(e.args[0])
        if isinstance(e, BaseException):
            todo.extend([e.__cause__, e.__context__])
            for arg in e.args:
                if isinstance(arg, (list, tuple)):
                    for item in arg:
                        todo.extend(item if isinstance(item, tuple) else [item])
    return any(n in str(exc) for n in _TOO_LARGE_NAMES)


class PollStatus:
    """What one run did (logged at its end, returned by :meth:`DbPoller.process_updates`)."""

    __slots__ = ("batches_errored", "batches_processed", "messages_processed", "skipped_ids")

    def __init__(self) -> None:
        self.batches_processed = 0
        self.batches_errored = 0
        self.messages_processed = 0
        self.skipped_ids: list[Any] = []

    def __repr__(self) -> str:
        return (f"PollStatus(batches_processed={self.batches_processed}, "
                f"batches_errored={self.batches_errored}, "
                f"messages_processed={self.messages_processed}, skipped={self.skipped_ids})")


class DbPoller:
    """One poller: a runnable (``run``/``stop``); :meth:`process_updates` runs one poll.

    Subclass it and name the subclass in ``poller_class`` (Ruby's ``poller_class``) to change
    how rows are read or published: override :meth:`publish_batch`, :meth:`process_updates`,
    or set :attr:`producer_classes` so the configuration needs no ``producer_class``.
    """

    #: record producers fed besides the configured ``producer_class``/``producer_classes``
    producer_classes: ClassVar[Sequence[type[RecordProducer]]] = ()

    def __init__(self, config: DbPollerSettings, settings: Settings | None = None, *,
                 telemetry: Telemetry | None = None) -> None:
        self.config = config
        self._backoff = Backoff.from_settings(config.retry)
        self.settings = settings or get_settings()
        db: DbSettings = self.settings.section("db")
        self.engine = get_engine(db.url, db.engine_options)
        self.name = config.poller_name
        self.producers: list[type[RecordProducer]] = []
        for path in config.classes:
            cls = import_class(path)
            if not (isinstance(cls, type) and issubclass(cls, RecordProducer)):
                raise DeimosError(f"DB poller {self.name}: {path} is not a RecordProducer")
            self.producers.append(cls)
        self.producers += [p for p in self.producer_classes if p not in self.producers]
        if not self.producers:
            raise DeimosError(f"DB poller {self.name}: no producers (set producer_class in "
                              f"the configuration or producer_classes on "
                              f"{type(self).__qualname__})")
        self.first = self.producers[0]
        self.model = self.first.model
        self.table = table_of(self.model)
        pk = primary_key_names(self.model)
        self.id_column = config.id_column or pk[0]
        #: the columns to read rows as dicts with, when every producer publishes the same
        #: from a dict of column values as from the instance (see :meth:`_fetch`)
        self._columns = plain_columns(self.model) if all(
            p._takes_column_values() for p in self.producers) else None
        self.telemetry = telemetry or get_runtime().telemetry
        self.tags = {"poller": self.name}
        self._stop = threading.Event()
        #: the last completed poll or batch (liveness); polls completed (readiness)
        self.beat = Heartbeat()
        self.polls = 0
        if config.mode == "time_based":
            ts = self.table.c[config.timestamp_column]
            self._aware = bool(getattr(ts.type, "timezone", False))

    def __repr__(self) -> str:
        return f"DbPoller({self.name})"

    def health(self) -> dict[str, Any]:
        """Liveness and readiness for the health endpoint (:mod:`deimos_db.health`)."""
        from .health import poller_health

        return poller_health(self)

    # -- runnable ---------------------------------------------------------------------------

    def run(self) -> None:
        log.info("DB poller %s started (%s, every %ss)", self.name, self.config.mode,
                 self.config.run_every)
        self.beat.beat()
        while not self._stop.is_set():
            started = time.monotonic()
            self.process_updates()
            self.polls += 1
            self.beat.beat()
            self._stop.wait(max(0.0, self.config.run_every - (time.monotonic() - started)))
        log.info("DB poller %s stopped", self.name)

    def stop(self) -> None:
        self._stop.set()

    # -- state ------------------------------------------------------------------------------

    def poll_info(self) -> Any:
        """This poller's ``deimos_poll_info`` row, made on first use: a new poller starts at
        the beginning of time with ``start_from_beginning``, else at now."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deimos_poll_info).where(_P.poller == self.name)).first()
        if row is not None:
            return row
        start = EPOCH if self.config.start_from_beginning else utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(deimos_poll_info.insert().values(
                    poller=self.name, last_sent=start, last_sent_id=0, batches_errored=0))
        except sa.exc.IntegrityError:
            pass  # another process made it first
        with self.engine.connect() as conn:
            return conn.execute(sa.select(deimos_poll_info).where(_P.poller == self.name)).one()

    def _save(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(deimos_poll_info.update().where(_P.poller == self.name).values(**values))

    def _record_skipped(self, failed: list[tuple[Any, BaseException]]) -> None:
        ids = [self._id_of(r) for r, _ in failed]
        error = f"skipped rows {ids}: {type(failed[0][1]).__name__}: {failed[0][1]}"[:4000]
        log.error("DB poller %s: %s", self.name, error)
        self.telemetry.increment("db_poller.batches_errored", 1, self.tags)
        with self.engine.begin() as conn:
            conn.execute(deimos_poll_info.update().where(_P.poller == self.name).values(
                batches_errored=_P.batches_errored + 1, error=error))

    @property
    def _id_attr(self) -> str:
        return column_attrs(self.model).get(self.id_column, self.id_column)

    def _id_of(self, record: Any) -> Any:
        return record[self.id_column] if type(record) is dict else getattr(record, self._id_attr)

    def _fetch(self, session: Session, query: sa.Select[Any]) -> list[Any]:
        """The rows of ``query`` (a select of the model): dicts of column values when no
        producer is handed the record by a hook it overrides (reading the columns costs a
        fraction of loading ORM instances, and the messages are the same), else instances.
        """
        if self._columns is not None:
            described = query.column_descriptions
            if len(described) == 1 and described[0]["expr"] is self.model:
                names, attrs = self._columns
                result = session.execute(query.with_only_columns(*attrs))
                return [dict(zip(names, row)) for row in result]
        return list(session.scalars(query))

    # -- polling ----------------------------------------------------------------------------

    def process_updates(self) -> PollStatus:
        """Publish everything due now, batch by batch; what was done."""
        status = PollStatus()
        with self.telemetry.span(f"db_poller {self.name}", {
                "deimos.poller": self.name, "deimos.poller.mode": self.config.mode}):
            if self.config.mode == "state_based":
                self._poll_state_based(status)
            else:
                self._poll_time_based(status)
        if status.batches_processed or status.batches_errored:
            log.info("DB poller %s: %r", self.name, status)
        return status

    def _utc(self, t: _dt.datetime) -> _dt.datetime:
        """Our naive UTC as the timestamp column compares it."""
        return t.replace(tzinfo=_dt.timezone.utc) if self._aware else t

    def _naive(self, t: Any) -> _dt.datetime:
        if isinstance(t, str):
            t = _dt.datetime.fromisoformat(t)
        if t.tzinfo is not None:
            t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        result: _dt.datetime = t
        return result

    def _poll_time_based(self, status: PollStatus) -> None:
        cfg = self.config
        info = self.poll_info()
        if cfg.full_table:
            time_from, min_id = _BEFORE_EVERYTHING, 0
        else:
            time_from, min_id = self._naive(info.last_sent), int(info.last_sent_id)
        time_to = utcnow() - _dt.timedelta(seconds=cfg.delay_time)
        t = self.table
        ts_col = cfg.timestamp_column
        ts_key = column_attrs(self.model).get(ts_col, ts_col)
        order = (t.c[cfg.timestamp_column], t.c[self.id_column])
        while not self._stop.is_set():
            query = self.first.poll_query(
                time_from=self._utc(time_from), time_to=self._utc(time_to),
                column_name=cfg.timestamp_column, min_id=min_id, id_column=self.id_column)
            with Session(self.engine, expire_on_commit=False) as session:
                batch = self._fetch(session, query.order_by(*order).limit(cfg.batch_size))
                if not batch:
                    break
                self._publish(batch, status)
                last = batch[-1]
                time_from = self._naive(last[ts_col] if type(last) is dict
                                        else getattr(last, ts_key))
                min_id = int(self._id_of(last))
            if not cfg.full_table:
                self._save(last_sent=time_from, last_sent_id=min_id, last_run_at=utcnow())
            if len(batch) < cfg.batch_size:
                break
        self._save(last_run_at=utcnow())

    def _poll_state_based(self, status: PollStatus) -> None:
        cfg = self.config
        self.poll_info()
        t = self.table
        while not self._stop.is_set():
            query = self.first.state_query(
                state_column=cfg.state_column, published_state=cfg.published_state,
                failed_state=cfg.failed_state,
                publish_timestamp_column=cfg.publish_timestamp_column)
            with Session(self.engine, expire_on_commit=False) as session:
                batch = self._fetch(session, query.order_by(t.c[self.id_column])
                                    .limit(cfg.batch_size))
            if not batch:
                break
            failed = self._publish(batch, status)
            failed_ids = {self._id_of(r) for r, _ in failed}
            ok_ids = [i for i in map(self._id_of, batch) if i not in failed_ids]
            now = utcnow()
            with self.engine.begin() as conn:
                for ids, state, published in ((ok_ids, cfg.published_state, True),
                                              (sorted(failed_ids), cfg.failed_state, False)):
                    values: dict[str, Any] = {}
                    if cfg.state_column and state is not None:
                        values[cfg.state_column] = state
                    if cfg.publish_timestamp_column and published:
                        values[cfg.publish_timestamp_column] = now
                    if not values:
                        continue
                    for start in range(0, len(ids), 1000):
                        conn.execute(t.update().where(
                            t.c[self.id_column].in_(ids[start:start + 1000])).values(**values))
            if failed and cfg.failed_state is None:
                break  # unmarked failures would come straight back: try again next run
            if len(batch) < cfg.batch_size:
                break
        self._save(last_sent=utcnow(), last_run_at=utcnow())

    def publish_batch(self, records: Sequence[Any]) -> None:
        """Publish one batch of rows (dicts of column values, or instances when a producer
        needs them), synchronously: raising fails the batch (retried, then row by row).
        Default: ``send_events`` of every producer."""
        for p in self.producers:
            p.send_events(records, sync=True)

    def _publish(self, batch: list[Any], status: PollStatus) -> list[tuple[Any, BaseException]]:
        """Publish ``batch`` through every producer; the rows given up on, with their error."""
        cfg = self.config
        attempt = 0
        while True:
            try:
                self.publish_batch(batch)
            except Exception as exc:
                too_large = is_too_large(exc)
                if too_large and not cfg.skip_too_large_messages:
                    self._save(error=f"{type(exc).__name__}: {exc}"[:4000])
                    raise
                if too_large or attempt + 1 >= cfg.retry.attempts or self._stop.is_set():
                    log.warning("DB poller %s: batch failed (%r); publishing its rows one by "
                                "one", self.name, exc)
                    break
                attempt += 1
                log.warning("DB poller %s: batch failed (attempt %d of %d): %r", self.name,
                            attempt, cfg.retry.attempts, exc)
                self._stop.wait(self._backoff.delay(attempt))
                continue
            self._done(len(batch), status)
            return []
        failed: list[tuple[Any, BaseException]] = []
        for record in batch:
            try:
                self.publish_batch([record])
            except Exception as exc:
                if is_too_large(exc) and not cfg.skip_too_large_messages:
                    self._save(error=f"{type(exc).__name__}: {exc}"[:4000])
                    raise
                failed.append((record, exc))
        self._done(len(batch) - len(failed), status)
        if failed:
            status.batches_errored += 1
            status.skipped_ids.extend(self._id_of(r) for r, _ in failed)
            self._record_skipped(failed)
        return failed

    def _done(self, n: int, status: PollStatus) -> None:
        self.beat.beat()
        status.batches_processed += 1
        status.messages_processed += n
        self.telemetry.increment("db_poller.batches_processed", 1, self.tags)
        if n:
            self.telemetry.increment("db_poller.messages_processed", n, self.tags)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def poller_settings(settings: Settings | None = None, names: Sequence[str] | None = None
                    ) -> list[DbPollerSettings]:
    settings = settings or get_settings()
    db: DbSettings = settings.section("db")
    configs = [p for p in db.pollers if not names or p.poller_name in names]
    if names:
        missing = set(names) - {p.poller_name for p in configs}
        if missing:
            raise DeimosError(f"no DB poller named {', '.join(sorted(missing))} is configured "
                              f"(configured: {[p.poller_name for p in db.pollers]})")
    return configs


def poller_class(config: DbPollerSettings) -> type[DbPoller]:
    """The class a poller runs as: its ``poller_class``, else :class:`DbPoller`."""
    if not config.poller_class:
        return DbPoller
    cls = import_class(config.poller_class)
    if not (isinstance(cls, type) and issubclass(cls, DbPoller)):
        raise DeimosError(f"DB poller {config.poller_name}: poller_class "
                          f"{config.poller_class} is not a subclass of deimos_db.DbPoller")
    return cls


def poller_factories(settings: Settings | None = None, names: Sequence[str] | None = None
                     ) -> list[Callable[[], Runnable]]:
    """One runnable factory per configured poller (``names``: only those)."""
    resolved = settings or get_settings()

    def factory(config: DbPollerSettings) -> Callable[[], Runnable]:
        cls = poller_class(config)
        return lambda: cls(config, resolved)

    return [factory(c) for c in poller_settings(resolved, names)]


class DbPollerGroup(ExecutorGroup):
    """The configured pollers in threads, restarted if they crash; ``start``/``stop``/``join``
    or a ``with`` block to embed them in your process."""

    def __init__(self, names: Sequence[str] | None = None,
                 settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        factories = poller_factories(self.settings, names)
        if not factories:
            raise DeimosError("no DB pollers are configured (add [[db.pollers]] entries)")
        self.executor = Executor(factories, restart_delay=self.settings.runner.restart_delay,
                                 name="deimos-db-poller")


def run_db_pollers(names: Sequence[str] | None = None, *, install_signals: bool = True,
                   until: threading.Event | None = None,
                   health_port: int | None = None) -> bool:
    """Run the configured pollers until SIGINT/SIGTERM (or ``until``); True on a clean stop.
    ``health_port``: serve the health endpoints there (else ``health.port``)."""
    group = DbPollerGroup(names, get_settings())
    return run_until_stopped(group.executor, install_signals=install_signals, until=until,
                             health_port=health_port)
