"""Running a transaction again when the database says it may succeed the second time (Ruby
Deimos's ``Deimos::Utils::DeadlockRetry``).

A deadlock, a serialization failure or a lock wait timeout is contention on the database, not
a fault of the data written: the same transaction, run again a moment later, usually commits.
:func:`retry_transaction` is that loop for a function that opens its own transaction (the
record consumer's batches run through it); :func:`deadlock_retry` is the same for application
code that wants a session. The waits come from :class:`deimos.retry.Backoff`, the one backoff
of the project. A lost connection is tried once more on a new one, then reported as a
:class:`deimos.errors.TransientError` (the database, not a record, is at fault, so a consumer
retries the batch with its own backoff instead of dead-lettering it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from deimos.config import get_settings
from deimos.errors import TransientError
from deimos.retry import Backoff

from .engine import get_engine

log = logging.getLogger("deimos_db.deadlock")

T = TypeVar("T")

#: PostgreSQL SQLSTATEs and MySQL/MariaDB error numbers worth retrying the transaction for
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
RETRYABLE_MYSQL_CODES = frozenset({1213, 1205})
#: the connection is gone: PostgreSQL's class 08 and server shutdowns, MySQL/MariaDB's "server
#: has gone away", "lost connection", "can't connect", "connection was killed"
DISCONNECT_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")
DISCONNECT_MYSQL_CODES = frozenset({2002, 2003, 2006, 2013, 1927, 4031})

#: the record consumer's defaults (its ``deadlock_retries``/``deadlock_backoff``)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.05


def describe(exc: BaseException) -> str:
    """An error in one line: a database error without its SQL and parameters (which would
    repeat the whole batch in the log)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, sa.exc.DBAPIError) else None
    inner = orig if orig is not None else exc
    return f"{type(exc).__name__}: {str(inner).splitlines()[0] if str(inner) else ''}"


def is_retryable(exc: BaseException) -> bool:
    """A deadlock, serialization failure or lock timeout: the same transaction may succeed
    when run again."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in RETRYABLE_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in RETRYABLE_MYSQL_CODES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "deadlock" in text


def is_disconnect(exc: BaseException) -> bool:
    """The database connection was lost or could not be made: the batch is not at fault."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(code, str) and code.startswith(DISCONNECT_SQLSTATE_PREFIXES):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in DISCONNECT_MYSQL_CODES


def retry_transaction(fn: Callable[[], T], *, retries: int = DEFAULT_RETRIES,
                      backoff: float = DEFAULT_BACKOFF, name: str = "transaction") -> T:
    """``fn()`` (which opens and commits its own transaction), run again after a deadlock or
    lock timeout, up to ``retries`` times with backoff from ``backoff`` seconds; once more on
    a new connection after a lost one. A connection still lost is a :class:`TransientError`;
    anything else is raised as it is. ``name`` says whose transaction in the log."""
    attempt = 0
    reconnected = False
    waits = Backoff(backoff, max_backoff=max(1.0, backoff), jitter=0.2)
    while True:
        try:
            return fn()
        except Exception as exc:
            if is_disconnect(exc):
                if not reconnected:
                    reconnected = True
                    log.warning("%s: the database connection was lost (%s); running the "
                                "transaction again on a new connection", name, describe(exc))
                    continue
                raise TransientError(
                    f"{name}: the database is unreachable ({describe(exc)}); the batch is "
                    "retried with the consumer's backoff") from exc
            if attempt >= retries or not is_retryable(exc):
                raise
            attempt += 1
            delay = waits.delay(attempt)
            log.warning("%s: %s; retrying the transaction in %.2fs (attempt %d of %d)",
                        name, describe(exc), delay, attempt, retries)
            time.sleep(delay)


def deadlock_retry(session_fn: Callable[[Session], T], *, engine: sa.Engine | None = None,
                   retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
                   name: str | None = None) -> T:
    """``session_fn(session)`` in a transaction of its own, committed when it returns, run
    again in a new one after a deadlock or lock timeout (see :func:`retry_transaction`).

    ``session_fn`` must be safe to run twice: a retried run starts from a rolled-back
    database, but anything it did outside the database (a message published, a counter
    bumped) happens again. ``engine``: the database (default: ``db.url``).
    """
    if engine is None:
        db = get_settings().section("db")
        engine = get_engine(db.url, db.engine_options)

    def run() -> T:
        with Session(engine) as session, session.begin():
            return session_fn(session)

    label: str = name or getattr(session_fn, "__qualname__", None) or "transaction"
    return retry_transaction(run, retries=retries, backoff=backoff, name=label)
