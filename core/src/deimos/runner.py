"""Runnables, the executor that keeps them running, and graceful signal handling.

A runnable is anything with ``run()`` (blocking until stopped) and ``stop()``. The executor
runs each in a thread; one that crashes is logged and restarted after
``runner.restart_delay`` seconds. SIGINT/SIGTERM ask every runnable to stop: the batch in
flight finishes, offsets are committed, producers flush; if that takes longer than
``runner.shutdown_timeout`` the process exits anyway (``deimos run`` exits with code 1).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from deimos.errors import FatalError
from deimos.runtime import get_runtime

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

    from deimos.config import Settings

log = logging.getLogger("deimos.runner")


class Runnable(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


class Executor:
    """Runs runnables in threads, restarting crashed ones until :meth:`stop`."""

    def __init__(self, factories: Sequence[Callable[[], Runnable]], *,
                 restart_delay: float = 5.0, name: str = "deimos") -> None:
        self.factories = list(factories)
        self.restart_delay = restart_delay
        self.name = name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current: dict[int, Runnable] = {}
        self._lock = threading.Lock()
        self.crashes = 0
        #: the :class:`~deimos.errors.FatalError` that stopped every runnable, if one did
        self.fatal: FatalError | None = None

    def start(self) -> None:
        for i, factory in enumerate(self.factories):
            t = threading.Thread(target=self._supervise, args=(i, factory),
                                 name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _supervise(self, index: int, factory: Callable[[], Runnable]) -> None:
        while not self._stop.is_set():
            try:
                runnable = factory()
                with self._lock:
                    self._current[index] = runnable
                if self._stop.is_set():
                    return
                runnable.run()
                if self._stop.is_set():
                    return
                log.warning("runnable %s returned without being stopped; restarting", runnable)
            except FatalError as fatal:
                # not restarted: stop everything, the process must end
                with self._lock:
                    crashed = self._current.get(index)
                log.error("%s cannot go on, stopping: %s", _name(crashed, index), fatal)
                self.fatal = self.fatal or fatal
                self._current.pop(index, None)
                self.stop()
                return
            except Exception:
                self.crashes += 1
                with self._lock:
                    crashed = self._current.get(index)
                log.exception("%s crashed; restarting in %.1fs", _name(crashed, index),
                              self.restart_delay)
            finally:
                with self._lock:
                    self._current.pop(index, None)
            self._stop.wait(self.restart_delay)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            current = list(self._current.values())
        for r in current:
            try:
                r.stop()
            except Exception:
                log.exception("stopping %s failed", r)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every thread; True when all ended within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            t.join(remaining)
        return not any(t.is_alive() for t in self._threads)

    def current(self) -> dict[int, Runnable]:
        """The runnable running in each slot now (a crashed one's slot is empty until its
        restart)."""
        with self._lock:
            return dict(self._current)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stop.wait(timeout)

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(get_runtime().settings.runner.shutdown_timeout)


class ExecutorGroup:
    """Runnables of one kind on an :class:`Executor` of their own, for embedding in an
    application (the DB producer's and the DB poller's groups): ``start()``/``stop()``/
    ``join()``, and a ``with`` block that stops and joins within
    ``runner.shutdown_timeout``. Subclasses set :attr:`settings` and :attr:`executor`."""

    settings: Settings
    executor: Executor

    def start(self) -> Self:
        self.executor.start()
        return self

    def stop(self) -> None:
        self.executor.stop()

    def join(self, timeout: float | None = None) -> bool:
        return self.executor.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(self.settings.runner.shutdown_timeout)


def _name(runnable: Any, index: int) -> str:
    """What a log line calls a runnable: its own ``repr`` where it has one (``consumer
    OrderConsumer``, ``DbProducer(<id>)``), else its index and class."""
    if runnable is None:
        return f"runnable {index}"
    if type(runnable).__repr__ is not object.__repr__:
        return repr(runnable)
    return f"runnable {index} ({type(runnable).__qualname__})"


class SignalHandler:
    """Stops an executor on SIGINT/SIGTERM (main thread only)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._previous: dict[int, Any] = {}
        self.received: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.received = signum
        self.executor.stop()


def consumer_factories(names: Sequence[str] | None = None, *, event_loop: Any = None
                       ) -> list[Callable[[], Runnable]]:
    """One factory per consumer thread of every configured consumer (asyncio handlers on
    ``event_loop`` when given, else on an event loop of their consumer thread), and as many
    for the retry consumer of each ``on_error = "retry_topics"`` consumer."""
    from deimos.consumer import ConsumerLoop, consumer_settings_for
    from deimos.consumer.retry_loop import RetryTopicsLoop

    runtime = get_runtime()
    factories: list[Callable[[], Runnable]] = []
    if names is not None and not names:
        return factories
    for cls, cs in consumer_settings_for(runtime, names):
        def make(cls: type = cls, cs: Any = cs, index: int = 0) -> Runnable:
            return ConsumerLoop(cls, cs, get_runtime(), event_loop=event_loop, index=index)

        factories.extend(functools.partial(make, index=i) for i in range(cs.concurrency))
        if cs.on_error == "retry_topics":
            def make_retry(cls: type = cls, cs: Any = cs, index: int = 0) -> Runnable:
                return RetryTopicsLoop(cls, cs, get_runtime(), event_loop=event_loop,
                                       index=index)

            factories.extend(functools.partial(make_retry, index=i)
                             for i in range(cs.concurrency))
    return factories


def run_until_stopped(executor: Executor, *, install_signals: bool = True,
                      until: threading.Event | None = None,
                      health_port: int | None = None) -> bool:
    """Start ``executor`` and block until SIGINT/SIGTERM (or ``until``); then stop it within
    ``runner.shutdown_timeout`` and flush producers in what is left of it.

    With ``health_port`` (or ``health.port`` set) the health endpoints
    (:mod:`deimos.health`) serve the executor's state meanwhile.

    :returns: True when every runnable stopped and every message was delivered in time.
    :raises FatalError: after the shutdown, when a runnable raised one (the executor stopped
        every runnable for it).
    """
    from deimos import health

    runtime = get_runtime()
    timeout = runtime.settings.runner.shutdown_timeout
    handler = SignalHandler(executor)
    if install_signals and threading.current_thread() is threading.main_thread():
        handler.install()
    server = health.serve(executor, health_port)
    executor.start()
    try:
        while not executor.wait(0.2):
            if until is not None and until.is_set():
                executor.stop()
    finally:
        executor.stop()
        deadline = time.monotonic() + timeout
        clean = executor.join(timeout)
        undelivered = runtime.flush(max(0.0, deadline - time.monotonic()))
        if undelivered:
            log.error("%d message(s) were not delivered before shutdown", undelivered)
        handler.uninstall()
        if server is not None:
            server.stop()
    if executor.fatal is not None:
        raise executor.fatal
    return clean and not undelivered


def run(consumers: Sequence[str] | None = None, *,
        extra: Sequence[Callable[[], Runnable]] = (),
        install_signals: bool = True,
        until: threading.Event | None = None,
        health_port: int | None = None) -> bool:
    """Run the configured consumers (those named; none with ``[]``) plus ``extra`` runnables
    until a signal (or ``until``) stops them. True when everything stopped within the
    timeout. ``health_port``: serve the health endpoints there (else ``health.port``)."""
    settings = get_runtime().settings
    factories = consumer_factories(consumers) + list(extra)
    if not factories:
        log.warning("nothing to run: no consumers are configured")
        return True
    executor = Executor(factories, restart_delay=settings.runner.restart_delay)
    return run_until_stopped(executor, install_signals=install_signals, until=until,
                             health_port=health_port)
