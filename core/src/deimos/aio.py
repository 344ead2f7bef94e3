"""deimos inside an asyncio application (FastAPI, Starlette, aiohttp): the configured
consumers run while a block runs, their ``async def`` handlers on the application's event
loop, and stopping them and flushing producers never blocks that loop.

Each consumer still polls librdkafka in a thread of its own (the loop thread never makes a
blocking librdkafka call); only the handler coroutines are scheduled on the loop, so they can
share the application's clients (an HTTP session, an async database engine). Synchronous
consumers configured beside them run in their threads as under ``deimos run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from deimos import config as _config
from deimos.runner import Executor, consumer_factories
from deimos.runtime import get_runtime

log = logging.getLogger("deimos.runner")

__all__ = ["running"]


@asynccontextmanager
async def running(consumers: Sequence[str] | None = None) -> AsyncIterator[Executor]:
    """Run the configured consumers (those named; none with ``[]``) for the block, asyncio
    handlers on the running event loop; on exit stop them within
    ``runner.shutdown_timeout`` (asyncio handlers still running are cancelled after
    ``runner.cancel_handlers_after``, uncommitted) and flush producers in what is left.
    Crashed consumers restart after ``runner.restart_delay``, as under ``deimos run``.

    Yields the :class:`~deimos.runner.Executor` (``executor.current()`` lists the running
    consumers, e.g. for a health route)."""
    loop = asyncio.get_running_loop()
    runtime = get_runtime()
    settings = runtime.settings
    factories = consumer_factories(consumers, event_loop=loop)
    if consumers is None and not factories:
        # the commonest set-up mistake (the settings file was not the one read): say so
        # rather than serve an application that silently consumes nothing
        log.warning("deimos.aio.running(): no consumers are configured, nothing is consumed "
                    "(settings file: %s; [[consumers]] there, DEIMOS_CONFIG or "
                    "deimos.configure(file=...) name it; ./%s is read when it exists)",
                    _config.current().file or "none", _config.DEFAULT_FILE)
    executor = Executor(factories, restart_delay=settings.runner.restart_delay,
                        name="deimos-aio")
    executor.start()
    try:
        yield executor
    finally:
        executor.stop()
        timeout = settings.runner.shutdown_timeout
        deadline = time.monotonic() + timeout
        # joined in a worker thread: the handlers finishing meanwhile need this loop
        if not await asyncio.to_thread(executor.join, timeout):
            log.error("consumers did not stop within runner.shutdown_timeout (%gs)", timeout)
        undelivered = await asyncio.to_thread(runtime.flush,
                                              max(0.0, deadline - time.monotonic()))
        if undelivered:
            log.error("%d message(s) were not delivered before shutdown", undelivered)
