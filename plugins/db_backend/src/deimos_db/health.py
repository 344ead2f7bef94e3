"""What the DB producer's workers and the DB pollers tell the health endpoint
(:mod:`deimos.health`).

* **DB producer worker**: live while its loop completes a pass (or a batch) within
  ``delivery_timeout + retry.max_backoff + poll_interval`` plus a minute of slack (a batch
  waits at most ``delivery_timeout`` for the broker, a failed pass backs off at most
  ``retry.max_backoff``); ready when its last pass reached the database and it holds a topic
  lock, or is idle with the brokers reachable.
* **DB poller**: live while it completes a poll (or a batch) within twice ``run_every`` plus
  two minutes; ready once a poll completed and the database answers.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from deimos.kafka.config import producer_config
from deimos.kafka.connection import connection

if TYPE_CHECKING:
    from .poller import DbPoller
    from .producer import DbProducer

#: seconds a database check is reused (probes of several runnables, frequent scrapes)
DB_CHECK_TTL = 5.0

_checks: dict[int, tuple[float, str | None]] = {}
_checks_lock = threading.Lock()


def database_error(engine: sa.Engine) -> str | None:
    """``SELECT 1`` on ``engine`` (cached for :data:`DB_CHECK_TTL`); the error, or None."""
    now = time.monotonic()
    with _checks_lock:
        hit = _checks.get(id(engine))
        if hit is not None and now - hit[0] < DB_CHECK_TTL:
            return hit[1]
    error: str | None = None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    with _checks_lock:
        _checks[id(engine)] = (time.monotonic(), error)
    return error


def producer_health(worker: DbProducer) -> dict[str, Any]:
    ps = worker.ps
    bound = ps.delivery_timeout + 5 + ps.retry.max_backoff + ps.poll_interval + 60
    age = worker.beat.age()
    live = age < bound
    with worker._held_lock:
        held = worker._held
    conn = connection(str(producer_config(worker._kafka_settings)["bootstrap.servers"]))
    db_error = database_error(worker.engine)
    if db_error is not None or worker.failures:
        state, ready = "database unreachable or failing", False
    elif held is not None:
        state, ready = f"holding the lock on {held}", True
    elif conn.down or not conn.ever_up:
        state, ready = "idle, brokers unreachable", False
    else:
        state, ready = "idle, connected", True
    return {"name": repr(worker), "kind": "db_producer", "state": state,
            "live": live, "ready": ready and live, "topic_lock": held,
            "failed_passes": worker.failures, "database_error": db_error,
            "last_iteration_seconds_ago": round(age, 3), "live_bound_seconds": bound}


def poller_health(poller: DbPoller) -> dict[str, Any]:
    bound = 2 * poller.config.run_every + 120
    age = poller.beat.age()
    live = age < bound
    db_error = database_error(poller.engine)
    ready = live and db_error is None and poller.polls > 0
    state = ("database unreachable" if db_error else
             "polling" if poller.polls else "first poll running")
    return {"name": repr(poller), "kind": "db_poller", "state": state, "live": live,
            "ready": ready, "polls": poller.polls, "database_error": db_error,
            "last_iteration_seconds_ago": round(age, 3), "live_bound_seconds": bound}
