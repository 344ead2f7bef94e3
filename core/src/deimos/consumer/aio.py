"""Where an asyncio consumer's coroutines run, seen from its (synchronous) consumer thread.

The broker loop stays the synchronous one of :mod:`deimos.consumer.loop`: librdkafka is
polled, paused, sought and committed from the consumer's own thread, never from an event
loop. Each handler call (a message range, a batch) is one coroutine handed to
:class:`HandlerLoop`, which blocks the consumer thread until it finished:

* under ``deimos run`` the consumer thread owns an event loop and runs the coroutine on it
  (``run_until_complete``): no thread hop, the fastest of the ways measured
  (``benchmarks/asyncio_engine_choice.py``);
* inside an application's event loop (:func:`deimos.aio.running`, a FastAPI lifespan) the
  coroutine is scheduled on that loop (``run_coroutine_threadsafe``), so handlers share the
  application's clients, and the loop thread never makes a blocking librdkafka call.

A stop request cancels the coroutine still running after a grace period
(``runner.cancel_handlers_after``): it ends with ``CancelledError``, which no error policy
treats as handled, so its message's offset is not stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from deimos.errors import DeimosError

log = logging.getLogger("deimos.consumer")

T = TypeVar("T")


class HandlerLoop:
    """Runs one consumer thread's handler coroutines: on an event loop of its own, or on
    ``loop`` (an application's, running in another thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.own = loop is None
        self.loop = asyncio.new_event_loop() if loop is None else loop
        self._lock = threading.Lock()
        #: what is running now: the task on the own loop, or the cross-thread future
        self._running: asyncio.Task[Any] | concurrent.futures.Future[Any] | None = None
        #: ``time.monotonic()`` after which running coroutines are cancelled (stopping)
        self._deadline: float | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end and return its result (or raise its error)."""
        running: asyncio.Task[Any] | concurrent.futures.Future[Any]
        if self.own:
            running = self.loop.create_task(coro)
        else:
            running = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._lock:
            self._running = running
            deadline = self._deadline
        if deadline is not None:
            self._cancel_at(running, deadline)
        try:
            if isinstance(running, asyncio.Task):
                return self.loop.run_until_complete(running)
            try:
                return running.result()
            except concurrent.futures.CancelledError:
                raise asyncio.CancelledError() from None
        except asyncio.CancelledError:
            with self._lock:
                stopping = self._deadline is not None
            if stopping:
                raise  # our cancellation at shutdown: the consumer loop ends quietly
            # cancelled by something else (a task of the application's): not a handler
            # error the policy could retry, so the consumer restarts from its commit
            raise DeimosError("an asyncio handler was cancelled, not by the consumer's "
                              "shutdown; the consumer restarts from its last committed "
                              "offset") from None
        finally:
            with self._lock:
                self._running = None

    def cancel_after(self, seconds: float) -> None:
        """The consumer is stopping: cancel what still runs ``seconds`` from now (and what
        starts later, at that same time). Thread-safe."""
        deadline = time.monotonic() + seconds
        with self._lock:
            self._deadline = deadline
            running = self._running
        if running is not None:
            self._cancel_at(running, deadline)

    def _cancel_at(self, running: asyncio.Task[Any] | concurrent.futures.Future[Any],
                   deadline: float) -> None:
        # scheduled on the event loop, the only thread that may cancel its tasks (an own
        # loop that is not running yet runs the callback as soon as run() starts it)
        def arm() -> None:
            self.loop.call_later(max(0.0, deadline - time.monotonic()), cancel)

        def cancel() -> None:
            if not running.done():
                log.warning("cancelling an asyncio handler still running at the end of "
                            "runner.cancel_handlers_after: its messages are not committed")
                running.cancel()

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(arm)

    def close(self) -> None:
        """Close an own loop (cancelling tasks its handlers left behind); an application's
        loop is the application's to close."""
        if not self.own or self.loop.is_closed():
            return
        try:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
