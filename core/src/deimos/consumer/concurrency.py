"""Handling one partition's messages concurrently (``max_concurrency``), per key in order.

Messages with the same key form a *chain*, handled one after another in offset order;
different chains run at once on up to ``max_concurrency`` workers (coroutines for an
asyncio consumer, threads for a synchronous one), each taking the next chain in order of
its first offset. A keyless message is a chain of its own (Kafka orders nothing for it).

Handling stops at the first failure in offset order: the result is ``(index, error)`` of
the *lowest* failed message, so the consumer stores offsets only below it, the lowest offset
not successfully finished, whatever finished after it. No chain starts a message above a
failure already seen; messages below it are always finished (each could fail lower still).
Messages above the failure that did finish are remembered (``RetryPolicy.finished_ahead``)
and not handled again when the failed one is retried; only a restart (or a rebalance) before
the commit passes them hands them out again: at-least-once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deimos.consumer.api import _key
from deimos.consumer.policy import Stop


def key_chains(msgs: list[Any], start: int, stop: int, skip: set[int] | None = None
               ) -> list[list[int]]:
    """The indexes ``start..stop-1`` (but those in ``skip``: finished already) grouped by raw
    key, in offset order; the chains in the order of their first message."""
    by_key: dict[bytes, list[int]] = {}
    chains: list[list[int]] = []
    keys = list(map(_key, msgs[start:stop]))
    for i, k in enumerate(keys, start):
        if skip and i in skip:
            continue
        if k is None:
            chains.append([i])
            continue
        chain = by_key.get(k)
        if chain is None:
            chain = by_key[k] = [i]
            chains.append(chain)
        else:
            chain.append(i)
    return chains


class _Lowest:
    """The lowest failed index so far and its error (``stop``: none yet)."""

    __slots__ = ("error", "index", "lock")

    def __init__(self, stop: int) -> None:
        self.index = stop
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def fail(self, i: int, exc: BaseException) -> None:
        with self.lock:
            if i < self.index:
                self.index, self.error = i, exc


def run_threads(pool: ThreadPoolExecutor, workers: int, chains: list[list[int]],
                call: Callable[[int], Any], stop: int, finished: set[int]
                ) -> tuple[int, BaseException | None]:
    """Handle ``chains`` on up to ``workers`` threads of ``pool``, adding each index that
    succeeded to ``finished``; ``(lowest failed index, its error)``, or ``(stop, None)``."""
    lowest = _Lowest(stop)
    todo = iter(chains)
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                chain = next(todo, None)
            if chain is None:
                return
            for i in chain:
                if i > lowest.index:
                    break  # above a failure: handled again with its retry
                try:
                    call(i)
                except Exception as exc:
                    lowest.fail(i, exc)
                    break
                with lowest.lock:
                    finished.add(i)

    futures = [pool.submit(worker) for _ in range(min(workers, len(chains)))]
    for f in futures:
        f.result()  # re-raises what is not a handler error (KeyboardInterrupt, SystemExit)
    return lowest.index, lowest.error


async def run_coroutines(workers: int, chains: list[list[int]],
                         call: Callable[[int], Awaitable[Any]], start: int, stop: int,
                         finished: set[int]) -> tuple[int, BaseException | None]:
    """Handle ``chains`` (the indexes ``start..stop-1`` not in ``finished`` already) with up
    to ``workers`` coroutines; as :func:`run_threads`. Cancelled (the consumer's shutdown),
    every worker is cancelled and :class:`~deimos.consumer.policy.Stop` names the lowest
    message not finished: the offsets below it are stored, that message and the rest are
    not."""
    lowest = _Lowest(stop)
    todo = iter(chains)

    async def worker() -> None:
        for chain in todo:  # one event loop thread: the shared iterator needs no lock
            for i in chain:
                if i > lowest.index:
                    break
                try:
                    await call(i)
                except Exception as exc:
                    lowest.fail(i, exc)
                    break
                finished.add(i)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(chains)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(exc, asyncio.CancelledError):
            unfinished = next(i for i in range(start, stop + 1) if i not in finished)
            raise Stop(unfinished, exc) from None
        raise
    return lowest.index, lowest.error
