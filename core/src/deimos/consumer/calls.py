"""Calling a consumer's handler: message by message, concurrently by key
(``max_concurrency``), or a batch at once; on the handler loop for an asyncio handler; with
spans and timings when telemetry is on.

A mixin of :class:`deimos.consumer.processor.MessageProcessor`, which decides what the
results mean (the error policy); this module only makes the calls and says which one failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from deimos.consumer import concurrency
from deimos.consumer.api import _RAW, BatchMetadata, Metadata, _raw_headers
from deimos.consumer.policy import RetryPolicy, Stop

if TYPE_CHECKING:
    from deimos.config import ConsumerSettings
    from deimos.consumer.aio import HandlerLoop
    from deimos.consumer.api import _Base
    from deimos.telemetry import Telemetry


class HandlerCalls:
    """The handler calls of a :class:`~deimos.consumer.processor.MessageProcessor`."""

    handler: _Base
    settings: ConsumerSettings
    telemetry: Telemetry
    policy: RetryPolicy
    handlers: HandlerLoop | None
    max_concurrency: int
    group: str
    _pool: ThreadPoolExecutor | None
    #: the handler's ``consume``/``consume_batch`` as called (an inbox's wrappers, or the
    #: handler's own methods)
    _consume: Any
    _consume_batch_fn: Any

    def _await(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.handlers is not None
        return self.handlers.run(coro)

    def _run_messages(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                      start: int, stop: int, topic: str, partition: int,
                      tags: dict[str, dict[str, str]]) -> tuple[int, BaseException | None]:
        """Call the handler for ``msgs[start:stop]``; the index and error of the first
        failure (the lowest, under ``max_concurrency``), or ``(stop, None)``."""
        tel = self.telemetry
        if self.max_concurrency > 1 and stop - start > 1:
            return self._run_concurrently(msgs, payloads, keys, start, stop, topic, partition,
                                          tags)
        consume = self._consume
        if self.handlers is not None:
            if tel.tracing_enabled or tel.metrics_enabled:
                return self._await(self._run_in_order(
                    self._message_call(msgs, payloads, keys, topic, partition, tags), start,
                    stop))
            return self._await(_consume_in_order(consume, msgs, payloads, keys, start, stop,
                                                 topic, partition))
        if tel.tracing_enabled or tel.metrics_enabled:
            i = start
            try:
                call = self._message_call(msgs, payloads, keys, topic, partition, tags)
                for i in range(start, stop):
                    call(i)
            except Exception as exc:
                return i, exc
            return stop, None
        # the hot path: zip, not indexes (an index past 256 is an int allocated and freed per
        # message; callgrind: 30 instructions a message); a failure's index is found after
        whole = start == 0 and stop == len(msgs)
        ms = msgs if whole else msgs[start:stop]
        ps = payloads if whole else payloads[start:stop]
        m = None
        try:
            if keys is None:
                for p, m in zip(ps, ms):
                    consume(p, Metadata(m, _RAW, topic, partition))
            else:
                for p, m, k in zip(ps, ms, keys if whole else keys[start:stop]):
                    consume(p, Metadata(m, k, topic, partition))
        except Exception as exc:
            # the first position of the failed message object (a batch holds each once)
            return start + next(j for j, x in enumerate(ms) if x is m), exc
        return stop, None

    def _run_concurrently(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                          start: int, stop: int, topic: str, partition: int,
                          tags: dict[str, dict[str, str]]) -> tuple[int, BaseException | None]:
        """``max_concurrency``: the messages by key on coroutines or worker threads; what
        finished above a failure is remembered, so its retry does not run them again."""
        ahead = self.policy.ahead(topic, partition)
        finished = ({j for j in range(start, stop) if msgs[j].offset() in ahead} if ahead
                    else set())
        chains = concurrency.key_chains(msgs, start, stop, finished)
        call = self._message_call(msgs, payloads, keys, topic, partition, tags)
        if self.handlers is not None:
            i, exc = self._await(concurrency.run_coroutines(
                self.max_concurrency, chains, call, start, stop, finished))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency,
                                                f"deimos-{self.settings.name}")
            i, exc = concurrency.run_threads(self._pool, self.max_concurrency, chains, call,
                                             stop, finished)
        if exc is not None:
            later = {msgs[j].offset() for j in finished if j > i}
            if later:
                self.policy.finished_ahead(topic, partition, later)
        return i, exc

    @staticmethod
    async def _run_in_order(call: Callable[[int], Any], start: int, stop: int
                            ) -> tuple[int, BaseException | None]:
        i = start
        try:
            for i in range(start, stop):
                await call(i)
        except Exception as exc:
            return i, exc
        except asyncio.CancelledError as cancelled:
            raise Stop(i, cancelled) from None  # the shutdown: store what finished before
        return stop, None

    def _message_call(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                      topic: str, partition: int, tags: dict[str, dict[str, str]]
                      ) -> Callable[[int], Any]:
        """``call(i)``: the handler for message ``i`` with its span and timing (a coroutine
        function for an asyncio handler: the span is entered inside the coroutine, in the
        task's context, wherever its event loop runs)."""
        consume = self._consume
        tel = self.telemetry
        group = self.group
        traced = tel.tracing_enabled
        timed = traced or tel.metrics_enabled
        consume_tags = tags["consume"]

        def md(i: int) -> Metadata:
            return Metadata(msgs[i], _RAW if keys is None else keys[i], topic, partition)

        if self.handlers is not None:
            async def acall(i: int) -> None:
                if not timed:
                    await consume(payloads[i], md(i))
                    return
                meta = md(i)
                t0 = time.perf_counter()
                if traced:
                    with tel.span(f"process {topic}", span_attrs(
                            topic, group, partition, msgs[i].offset(), 1), meta.headers):
                        await consume(payloads[i], meta)
                else:
                    await consume(payloads[i], meta)
                tel.timing("handler", time.perf_counter() - t0, consume_tags)

            return acall

        def call(i: int) -> None:
            if not timed:
                consume(payloads[i], md(i))
                return
            meta = md(i)
            t0 = time.perf_counter()
            if traced:
                with tel.span(f"process {topic}", span_attrs(
                        topic, group, partition, msgs[i].offset(), 1), meta.headers):
                    consume(payloads[i], meta)
            else:
                consume(payloads[i], meta)
            tel.timing("handler", time.perf_counter() - t0, consume_tags)

        return call

    def _consume_batch(self, payloads: list[Any], md: BatchMetadata,
                       span: tuple[Any, ...] | None) -> None:
        """One ``consume_batch`` call (awaited on the handler loop for an asyncio handler),
        inside the span ``span`` names when given."""
        if self.handlers is not None:
            self._await(self._aconsume_batch(payloads, md, span))
        elif span is not None:
            with self.telemetry.span(*span):
                self._consume_batch_fn(payloads, md)
        else:
            self._consume_batch_fn(payloads, md)

    async def _aconsume_batch(self, payloads: list[Any], md: BatchMetadata,
                              span: tuple[Any, ...] | None) -> None:
        if span is not None:
            with self.telemetry.span(*span):
                await self._consume_batch_fn(payloads, md)
        else:
            await self._consume_batch_fn(payloads, md)


async def _consume_in_order(consume: Any, msgs: list[Any], payloads: list[Any],
                            keys: list[Any] | None, start: int, stop: int, topic: str,
                            partition: int) -> tuple[int, BaseException | None]:
    """An asyncio handler over ``msgs[start:stop]`` without telemetry: the per-message hot
    path (one coroutine per message, awaited in place: the event loop is entered only when
    the handler suspends)."""
    i = start
    try:
        if keys is None:
            for i in range(start, stop):
                await consume(payloads[i], Metadata(msgs[i], _RAW, topic, partition))
        else:
            for i in range(start, stop):
                await consume(payloads[i], Metadata(msgs[i], keys[i], topic, partition))
    except Exception as exc:
        return i, exc
    except asyncio.CancelledError as cancelled:
        raise Stop(i, cancelled) from None  # the shutdown: store what finished before
    return stop, None


def link_headers(msgs: list[Any]) -> list[dict[str, bytes]]:
    """The distinct header sets of a batch, for span links: messages published in one chunk
    share a trace context, so a batch usually links to a handful of traces, not N."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for h in map(_raw_headers, msgs):
        if h:
            t = tuple(h)
            if t not in seen:
                seen.add(t)
                out.append(dict(h))
    return out


def span_attrs(topic: str, group: str, partition: int, offset: int, n: int) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.batch.message_count": n,
    }
