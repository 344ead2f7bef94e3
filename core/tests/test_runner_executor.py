"""The executor restarts crashed runnables; consumers run with several threads and patterns."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from kafka_helpers import wait_for

import deimos
from deimos.consumer import BatchConsumer
from deimos.runner import Executor, consumer_factories, run
from deimos.testing.broker import GROUP_TIMEOUTS


class Flaky:
    """Crashes on its first run, then runs until stopped."""

    runs = 0

    def __init__(self) -> None:
        self._stop = threading.Event()

    def run(self) -> None:
        type(self).runs += 1
        if type(self).runs == 1:
            raise RuntimeError("first run crashes")
        self._stop.wait(30)

    def stop(self) -> None:
        self._stop.set()


def test_a_crashed_runnable_is_logged_and_restarted_after_the_delay(caplog):
    Flaky.runs = 0
    executor = Executor([Flaky], restart_delay=0.2)
    started = time.monotonic()
    executor.start()
    try:
        wait_for(lambda: Flaky.runs == 2, timeout=10, what="the restart")
        assert time.monotonic() - started >= 0.2
    finally:
        executor.stop()
        assert executor.join(10)
    assert executor.crashes == 1
    # named (issue 16: "runnable 0 crashed" did not say which consumer it was)
    assert "runnable 0 (Flaky) crashed; restarting in 0.2s" in caplog.text


class _CrashingConsumer:
    def __repr__(self) -> str:
        return "consumer OrderConsumer"

    def run(self) -> None:
        raise RuntimeError("boom")

    def stop(self) -> None:
        pass


def test_a_crash_is_logged_with_the_runnables_own_name(caplog):
    executor = Executor([_CrashingConsumer], restart_delay=5)
    executor.start()
    try:
        wait_for(lambda: executor.crashes == 1, timeout=10, what="the crash")
    finally:
        executor.stop()
        assert executor.join(10)
    assert "consumer OrderConsumer crashed; restarting in 5.0s" in caplog.text


seen: list[tuple[str, int, str]] = []
threads: set[str] = set()
lock = threading.Lock()


class Recording(BatchConsumer):
    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        with lock:
            seen.extend((metadata.topic, metadata.partition, p) for p in payloads)
            threads.add(threading.current_thread().name)




@pytest.mark.kafka
def test_run_starts_configured_consumers_with_concurrency_and_a_topic_pattern(
        deimos_kafka, deimos_topic, deimos_reset):
    stem = f"pat-{uuid.uuid4().hex[:6]}"
    t1, t2 = deimos_topic(f"{stem}.a", partitions=2), deimos_topic(f"{stem}.b", partitions=2)
    deimos.configure(
        kafka={"bootstrap_servers": deimos_kafka},
        consumers=[{"class": f"{__name__}:Recording", "topic_pattern": rf"^{stem}\..*",
                    "group_id": f"g-{stem}", "concurrency": 2, "max_wait_time": 0.2,
                    "config": dict(GROUP_TIMEOUTS)}],
        runner={"shutdown_timeout": 20},
    )

    class P(deimos.Producer):
        key_config = "plain"

    for topic in (t1, t2):
        P.topic = topic
        P.publish_list([f"{topic}-{i}" for i in range(20)], keys=[str(i) for i in range(20)],
                       sync=True)
    seen.clear()
    threads.clear()
    until = threading.Event()
    done = threading.Thread(target=lambda: run(install_signals=False, until=until))
    done.start()
    try:
        wait_for(lambda: len(seen) >= 40, timeout=60, what="both topics")
    finally:
        until.set()
        done.join(30)
    assert {p for _, _, p in seen} == {f"{t}-{i}" for t in (t1, t2) for i in range(20)}
    assert {t for t, _, _ in seen} == {t1, t2}
    assert len(consumer_factories()) == 2  # concurrency: two consumers (threads) in the group
