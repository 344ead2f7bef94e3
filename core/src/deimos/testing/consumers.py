"""A :class:`~deimos.consumer.ConsumerLoop` in a thread, for integration tests on a real
broker: start it, do what the test does while it runs, wait for a condition, stop it, and fail
with whatever ended the loop early."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from deimos.consumer import ConsumerLoop


class ConsumerThread:
    def __init__(self, cls: type, settings: Any) -> None:
        self.loop = ConsumerLoop(cls, settings)
        #: what ended :meth:`ConsumerLoop.run` early (an empty list while it runs)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.errors.append(exc)

    def wait(self, until: Callable[[], bool], timeout: float = 60, what: str = "condition"
             ) -> None:
        """Until ``until()`` holds; an :class:`AssertionError` when the loop died first or
        ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while not until():
            assert not self.errors, f"the consumer stopped: {self.errors[0]!r}"
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
            time.sleep(0.05)
        assert not self.errors, f"the consumer stopped: {self.errors[0]!r}"


@contextmanager
def consumer_thread(cls: type, settings: Any) -> Iterator[ConsumerThread]:
    """``with consumer_thread(MyConsumer, settings) as running: running.wait(...)``; the loop
    is stopped (offsets committed) when the block ends."""
    running = ConsumerThread(cls, settings)
    running.thread.start()
    try:
        yield running
    finally:
        running.loop.stop()
        running.thread.join(30)
        assert not running.thread.is_alive(), "the consumer loop did not stop"
