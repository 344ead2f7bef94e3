"""A consumer used by the process-level tests (``deimos run`` in a subprocess).

It appends every payload to the file in ``$TESTAPP_OUT`` and fsyncs before returning, so the
file is a witness of what was handled before offsets were stored.

The tests control the race with the process through a gate instead of sleeps: once the
consumer has handled ``$TESTAPP_HOLD_AFTER`` messages, each later batch first notes its first
payload in ``$TESTAPP_STARTED`` and then waits until the file ``$TESTAPP_GATE`` exists (a gate
that is never opened holds the consumer inside a batch for as long as the test needs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from deimos.consumer import AsyncConsumer, BatchConsumer, Consumer


def _append(path: str, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


class RecordingConsumer(BatchConsumer):
    handled = 0

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        gate = os.environ.get("TESTAPP_GATE")
        if gate and self.handled >= int(os.environ.get("TESTAPP_HOLD_AFTER", "0")):
            _append(os.environ["TESTAPP_STARTED"], f"{payloads[0]}\n")
            while not os.path.exists(gate):
                time.sleep(0.01)
        time.sleep(float(os.environ.get("TESTAPP_SLEEP", "0")))
        _append(os.environ["TESTAPP_OUT"], "".join(f"{p}\n" for p in payloads))
        self.handled += len(payloads)


class AsyncRecordingConsumer(AsyncConsumer):
    """``RecordingConsumer`` as an asyncio consumer (run with ``max_concurrency``): once
    ``$TESTAPP_HOLD_AFTER`` messages are handled, each later message notes its payload in
    ``$TESTAPP_STARTED`` and awaits the gate file (a gate never opened holds the coroutines
    in flight until they are cancelled)."""

    handled = 0

    async def consume(self, payload: Any, metadata: Any) -> None:
        gate = os.environ.get("TESTAPP_GATE")
        if gate and self.handled >= int(os.environ.get("TESTAPP_HOLD_AFTER", "0")):
            _append(os.environ["TESTAPP_STARTED"], f"{payload}\n")
            while not os.path.exists(gate):
                await asyncio.sleep(0.01)
        await asyncio.sleep(float(os.environ.get("TESTAPP_SLEEP", "0")))
        _append(os.environ["TESTAPP_OUT"], f"{payload}\n")
        self.handled += 1


def setup() -> None:
    """The application hook of the process tests (``app = "deimos_testapp:setup"``).

    Notes each call (the process id) in ``$TESTAPP_SETUP``; with ``$TESTAPP_PUBLISH_TOPIC``
    it also publishes ``$TESTAPP_PUBLISH_N`` messages there, one synchronous publish each,
    so the process's own metrics count publishes before its consumers start.
    """
    path = os.environ.get("TESTAPP_SETUP")
    if path:
        _append(path, f"{os.getpid()}\n")
    topic = os.environ.get("TESTAPP_PUBLISH_TOPIC")
    if topic:
        import deimos

        producer = type("SetupProducer", (deimos.Producer,), {"topic": topic})
        for i in range(int(os.environ.get("TESTAPP_PUBLISH_N", "1"))):
            producer.publish(f"setup-{i}", sync=True)


class TransformConsumer(Consumer):
    """A transactional pass-through for the Kafka transaction fault tests: each payload is
    published to ``$TESTAPP_OUTPUT_TOPIC`` with its key, in the batch's transaction.

    The kill point is the process's own, so no timing decides it: once ``$TESTAPP_KILL_AFTER``
    messages were handled and the open transaction holds ``$TESTAPP_KILL_QUEUED`` outputs
    (the middle of a batch), the process SIGKILLs itself, first sending the outputs to the
    broker with ``$TESTAPP_KILL_FLUSH`` (else they die queued in the client). With
    ``$TESTAPP_GATE``, once ``$TESTAPP_HOLD_AFTER`` messages were handled, the next
    transaction waits for the gate file before its first output (noted in
    ``$TESTAPP_STARTED``)."""

    handled = 0

    def consume(self, payload: Any, metadata: Any) -> None:
        from deimos.kafka import transactions

        tx = transactions.current()
        assert tx is not None, "not in a transaction"
        gate = os.environ.get("TESTAPP_GATE")
        if gate and tx.queued == 0 and self.handled >= int(os.environ["TESTAPP_HOLD_AFTER"]):
            _append(os.environ["TESTAPP_STARTED"], f"{payload}\n")
            while not os.path.exists(gate):
                time.sleep(0.01)
        _output().publish(payload, key=metadata.raw_key.decode())
        self.handled += 1
        kill_after = int(os.environ.get("TESTAPP_KILL_AFTER", "0"))
        if kill_after and self.handled >= kill_after and tx.queued >= int(
                os.environ.get("TESTAPP_KILL_QUEUED", "100")):
            if os.environ.get("TESTAPP_KILL_FLUSH"):
                assert tx.producer.sp.producer.flush(10) == 0
            os.kill(os.getpid(), signal.SIGKILL)


_output_class: Any = None


def _output() -> Any:
    global _output_class
    if _output_class is None:
        import deimos

        _output_class = type("TransformOutput", (deimos.Producer,), {
            "topic": os.environ["TESTAPP_OUTPUT_TOPIC"], "key_config": {"plain": True}})
    return _output_class
