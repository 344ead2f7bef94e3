"""Handling one topic-partition's messages: decode, call the handler, apply the policy.

:class:`MessageProcessor` does no I/O of its own but writing dead letters; the broker loop
(:mod:`deimos.consumer.loop`) and the test helpers (:mod:`deimos.testing.helpers`) both hand
it messages and act on the :class:`~deimos.consumer.policy.Outcome` it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deimos.config import ConsumerSettings
from deimos.consumer.aio import HandlerLoop
from deimos.consumer.api import (
    _RAW,
    AsyncBatchConsumer,
    BatchConsumer,
    BatchError,
    BatchMetadata,
    Metadata,
    _Base,
    _key,
)
from deimos.consumer.calls import HandlerCalls, link_headers, span_attrs
from deimos.consumer.dead_letters import DeadLetters
from deimos.consumer.decoding import Decoder
from deimos.consumer.inbox import inbox_for
from deimos.consumer.policy import _ALL_HANDLED, Outcome, RetryPolicy, Stop, all_handled
from deimos.consumer.retry_topics import dead_letters_for
from deimos.errors import ConfigError, TransientError
from deimos.runtime import Runtime, SchemaBackend

log = logging.getLogger("deimos.consumer")


class MessageProcessor(HandlerCalls):
    """Decoding, handler calls and the error policy for one consumer class."""

    def __init__(self, handler: _Base, settings: ConsumerSettings, runtime: Runtime,
                 event_loop: Any = None) -> None:
        self.handler = handler
        self.settings = settings
        self.runtime = runtime
        self.batch = isinstance(handler, (BatchConsumer, AsyncBatchConsumer))
        #: an asyncio handler's coroutines run here: an event loop of the calling thread,
        #: or ``event_loop`` (an application's, running in another thread)
        self.handlers: HandlerLoop | None = (HandlerLoop(event_loop) if handler._is_async
                                             else None)
        self.max_concurrency = settings.max_concurrency
        if self.batch and self.max_concurrency > 1:
            raise ConfigError([(
                f"consumers.{settings.name}.max_concurrency",
                f"{self.max_concurrency} applies to per-message consumers (Consumer, "
                "AsyncConsumer), which it runs concurrently by key; a batch consumer gets "
                "each partition's batch whole (use concurrency for more partitions at once)")])
        self._pool: ThreadPoolExecutor | None = None
        #: the handler's methods as the calls make them: wrapped by the inbox's transaction
        #: with ``inbox = true``, the handler's own otherwise
        self.inbox = inbox_for(handler, settings, runtime.registry)
        self._consume: Any = getattr(handler, "consume", None)
        self._consume_batch_fn: Any = getattr(handler, "consume_batch", None)
        if self.inbox is not None:
            if self.batch:
                self._consume_batch_fn = self.inbox.wrap_consume_batch(
                    handler.consume_batch)  # type: ignore[attr-defined]
            else:
                self._consume = self.inbox.wrap_consume(
                    handler.consume)  # type: ignore[attr-defined]
        self.telemetry = runtime.telemetry
        self.group = settings.group_id or ""
        #: dead letters and decoding (with ``on_error = "retry_topics"`` forwards to the retry
        #: ladder, and its topics decoded as their original topics)
        self.dead_letters: DeadLetters
        self.decoder: Decoder
        self.dead_letters, self.decoder = dead_letters_for(
            handler, settings, runtime, self._count_dead_letter, self.group)
        self.key_config = self.decoder.key_config
        self.policy = RetryPolicy(settings)
        self._tagsets: dict[tuple[str, int], dict[str, dict[str, str]]] = {}
        #: messages skipped by this processor (also counted in telemetry)
        self.skipped = 0
        #: ``transactional = true``: a failed handler call ends the pass (its transaction is
        #: aborted), even when the message is given up on
        self.transactional = settings.transactional
        #: (topic, partition, offset) -> (error, attempts): messages given up on in an
        #: aborted transaction, to which ``on_error`` applies when they are read again
        self.doomed: dict[tuple[str, int, int], tuple[BaseException, int]] = {}

    def close(self) -> None:
        """Release the worker threads and the own event loop, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.handlers is not None:
            self.handlers.close()

    def cancel_after(self, seconds: float) -> None:
        """Stopping: asyncio handlers still running ``seconds`` from now are cancelled."""
        if self.handlers is not None:
            self.handlers.cancel_after(seconds)

    @property
    def dead_lettered(self) -> int:
        """Messages this processor wrote to the dead-letter topic."""
        return self.dead_letters.written

    def schema_for(self, topic: str) -> SchemaBackend:
        return self.decoder.schema_for(topic)

    _STATUSES = ("received", "success", "error", "batch_received", "batch_success",
                 "batch_error")
    _TIMES = ("consume", "consume_batch", "time_delayed")

    def tagset(self, topic: str, partition: int) -> dict[str, dict[str, str]]:
        """Metric tags per topic-partition, built once: ``base`` plus one dict per
        ``status:`` and ``time:`` value (no dict building per batch)."""
        key = (topic, partition)
        ts = self._tagsets.get(key)
        if ts is None:
            base = {"topic": topic, "consumer_group": self.group, "partition": str(partition)}
            ts = {"base": base}
            ts.update({st: {**base, "status": st} for st in self._STATUSES})
            ts.update({t: {**base, "time": t} for t in self._TIMES})
            self._tagsets[key] = ts
        return ts

    def _count_dead_letter(self, msg: Any) -> None:
        self.telemetry.increment("dead_lettered", 1,
                                 self.tagset(msg.topic(), msg.partition())["base"])

    def give_up(self, msg: Any, exc: BaseException, attempts: int, payload: Any = None,
                metadata: Any = None) -> None:
        """Apply ``on_error`` to a message whose retries are used up (or undecodable): a dead
        letter (or a retry-topic forward) is queued (written with the group's others by
        :meth:`process`), a skip is counted, anything else raises."""
        policy = self.settings.on_error
        if policy == "dead_letter" or policy == "retry_topics":
            self.dead_letters.add(msg, exc, attempts)
            return
        if policy == "skip":
            self.skipped += 1
            self.telemetry.increment("skipped", 1, self.tagset(msg.topic(),
                                                               msg.partition())["base"])
            log.error("message %s[%s]@%s skipped after %d attempt(s): %r", msg.topic(),
                      msg.partition(), msg.offset(), attempts, exc)
            return
        raise exc

    def process(self, msgs: list[Any]) -> Outcome:
        """Handle messages of one topic-partition, in order; what it came to."""
        dead = self.dead_letters
        if dead.queued:  # only a caller's own give_up() leaves any: no call per batch
            dead.clear()
        try:
            try:
                outcome = self._process(msgs)
            except Stop as stop:
                # what was dead-lettered before the stop is written before its offsets count
                if stop.handled < len(msgs):
                    dead.keep_before(msgs[stop.handled].offset())
                dead.flush(msgs)
                return Outcome(stop.handled, stop=stop.error)
            if dead.queued:
                dead.flush(msgs)
        except Stop as failed_write:
            return Outcome(failed_write.handled, stop=failed_write.error)
        except BaseException:
            dead.clear()
            raise
        return outcome

    def _process(self, msgs: list[Any]) -> Outcome:
        first = msgs[0]
        topic = first.topic()
        partition = first.partition()
        try:
            payloads, keys, decode_errors = self.decoder.decode(topic, msgs)
        except TransientError as waiting:
            return Outcome(0, waiting, first.offset())
        if self.doomed:
            decode_errors = self._with_doomed(topic, partition, msgs, decode_errors)
        tags = self.tagset(topic, partition)
        tel = self.telemetry
        if log.isEnabledFor(logging.DEBUG):  # tested here: no call per batch without DEBUG
            self._log_payloads(topic, partition, msgs, payloads, keys)
        if tel.metrics_enabled:
            ts = msgs[-1].timestamp()
            if ts and ts[1] > 0:
                tel.timing("handler", max(0.0, time.time() - ts[1] / 1000.0),
                           tags["time_delayed"])
        if self.batch:
            return self._process_batch(msgs, payloads, keys, decode_errors, topic, partition,
                                       tags)
        return self._process_messages(msgs, payloads, keys, decode_errors, topic, partition,
                                      tags)

    def _with_doomed(self, topic: str, partition: int, msgs: list[Any],
                     decode_errors: dict[int, BaseException]) -> dict[int, BaseException]:
        """``decode_errors`` plus the messages given up on in an aborted transaction: both
        go to ``on_error`` without a handler call."""
        doomed = self.doomed
        merged = dict(decode_errors)
        for i, m in enumerate(msgs):
            hit = doomed.get((topic, partition, m.offset()))
            if hit is not None:
                merged[i] = hit[0]
        return merged

    def attempts_of(self, msg: Any) -> int:
        """The attempts made at a message given up on without a handler call (1 for one
        that could not be decoded)."""
        hit = self.doomed.get((msg.topic(), msg.partition(), msg.offset())) if self.doomed \
            else None
        return hit[1] if hit is not None else 1

    def forget_doomed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Committed up to ``offsets``: the doomed messages before them are done."""
        for key in [k for k in self.doomed if (k[0], k[1]) in offsets
                    and k[2] < offsets[(k[0], k[1])]]:
            del self.doomed[key]

    def _process_messages(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                          decode_errors: dict[int, BaseException], topic: str, partition: int,
                          tags: dict[str, dict[str, str]]) -> Outcome:
        tel = self.telemetry
        n = len(msgs)
        tel.increment("handler", n, tags["received"])
        ok = 0  # messages before this index are done (handled or given up)
        succeeded = 0
        try:
            while ok < n:
                end = n
                if decode_errors:
                    bad = [i for i in decode_errors if i >= ok]
                    if bad and min(bad) == ok:
                        try:
                            self.give_up(msgs[ok], decode_errors[ok],
                                         self.attempts_of(msgs[ok]))
                        except Exception as raised:
                            raise Stop(ok, raised) from raised
                        ok += 1
                        continue
                    end = min(bad) if bad else n
                i, exc = self._run_messages(msgs, payloads, keys, ok, end, topic, partition,
                                            tags)
                succeeded += i - ok
                if exc is None:
                    ok = end
                    continue
                tel.increment("handler", 1, tags["error"])
                m = msgs[i]
                if isinstance(exc, TransientError):  # a service down, not the message
                    return Outcome(i, exc, m.offset())
                md = Metadata(m, _RAW if keys is None else keys[i], topic, partition)
                if self.handler.fatal_error(exc, payloads[i], md):
                    raise Stop(i, exc)
                attempt = self.policy.attempt(topic, partition, m.offset())
                if not self.policy.exhausted(attempt):
                    return Outcome(i, exc, m.offset())
                if self.transactional:
                    return Outcome(i, exc, m.offset(), give_up=attempt)
                try:
                    self.give_up(m, exc, attempt, payloads[i], md)
                except Exception as raised:
                    raise Stop(i, raised) from raised
                ok = i + 1
            return _ALL_HANDLED.get(n) or all_handled(n)
        finally:
            if succeeded:
                tel.increment("handler", succeeded, tags["success"])

    def _process_batch(self, msgs: list[Any], payloads: list[Any], keys: list[Any] | None,
                       decode_errors: dict[int, BaseException], topic: str, partition: int,
                       tags: dict[str, dict[str, str]]) -> Outcome:
        tel = self.telemetry
        if decode_errors:
            # hand the decodable runs to the handler and give up on the bad ones, in order
            done = 0
            try:
                for bad in sorted(decode_errors):
                    if bad > done:
                        part = self._process_batch(
                            msgs[done:bad], payloads[done:bad],
                            None if keys is None else keys[done:bad], {}, topic, partition, tags)
                        if part.retry is not None:
                            return dataclasses.replace(part, handled=done + part.handled)
                    try:
                        self.give_up(msgs[bad], decode_errors[bad],
                                     self.attempts_of(msgs[bad]))
                    except Exception as stop:
                        raise Stop(bad - done, stop) from stop
                    done = bad + 1
                if done < len(msgs):
                    part = self._process_batch(
                        msgs[done:], payloads[done:], None if keys is None else keys[done:],
                        {}, topic, partition, tags)
                    return dataclasses.replace(part, handled=done + part.handled)
            except Stop as stop:
                raise Stop(done + stop.handled, stop.error) from stop.error
            return all_handled(len(msgs))
        n = len(msgs)
        md = BatchMetadata(msgs, keys, topic, partition)
        if tel.metrics_enabled:
            tel.increment("handler", 1, tags["batch_received"])
            tel.increment("handler", n, tags["received"])
        start = time.perf_counter()
        try:
            if tel.tracing_enabled or self.handlers is not None:
                self._consume_batch(payloads, md, (
                    f"process {topic}", span_attrs(topic, self.group, partition,
                                                    msgs[0].offset(), n),
                    None, link_headers(msgs)) if tel.tracing_enabled else None)
            else:  # a plain call, as _consume_batch would make it: one frame less a batch
                self._consume_batch_fn(payloads, md)
        except Exception as exc:
            tel.increment("handler", 1, tags["batch_error"])
            index = exc.index if isinstance(exc, BatchError) else 0
            cause = exc.cause if isinstance(exc, BatchError) and isinstance(
                exc.cause, BaseException) else exc
            index = min(max(index, 0), n - 1)
            failed = msgs[index]
            if isinstance(cause, TransientError):  # a service down, not the message
                return Outcome(index, cause, failed.offset())
            if self.handler.fatal_error(cause, payloads[index], md.slice(index)):
                raise Stop(index, cause) from cause
            attempt = self.policy.attempt(topic, partition, failed.offset())
            if not self.policy.exhausted(attempt):
                return Outcome(index, cause, failed.offset())
            if self.transactional:
                # nothing of the failed call may commit: the message it names (the first
                # without a BatchError) is given up on when the batch is read again
                return Outcome(index, cause, failed.offset(), give_up=attempt)
            # retries used up: find the bad message(s) one at a time so the rest get through
            for j in range(index, n):
                one = md.slice(j, j + 1)
                try:
                    self._consume_batch([payloads[j]], one, None)
                except Exception as one_exc:
                    c = one_exc.cause if isinstance(one_exc, BatchError) and isinstance(
                        one_exc.cause, BaseException) else one_exc
                    if self.handler.fatal_error(c, payloads[j], one):
                        raise Stop(j, c) from c
                    try:
                        self.give_up(msgs[j], c, attempt, payloads[j], one)
                    except Exception as stop:
                        raise Stop(j, stop) from stop
            return all_handled(n)
        if tel.metrics_enabled:
            tel.timing("handler", time.perf_counter() - start,
                       tags["consume_batch"])
            tel.increment("handler", 1, tags["batch_success"])
            tel.increment("handler", n, tags["success"])
        return _ALL_HANDLED.get(n) or all_handled(n)

    def _log_payloads(self, topic: str, partition: int, msgs: list[Any], payloads: list[Any],
                      keys: list[Any] | None) -> None:
        """``payload_log`` at DEBUG; the caller tests the level (a frame less per batch)."""
        mode = self.settings.payload_log
        if mode == "count":
            log.debug("received %d message(s) from %s[%d]", len(msgs), topic, partition)
        elif mode == "keys":
            log.debug("received from %s[%d]: keys %r", topic, partition, keys)
        elif mode == "headers":
            log.debug("received from %s[%d]: keys %r headers %r", topic, partition, keys,
                      [m.headers() for m in msgs])
        else:
            log.debug("received from %s[%d]: %r", topic, partition,
                      list(zip(keys if keys is not None else map(_key, msgs), payloads)))
