"""Who serves the asynchronous producer's delivery reports: the publishing thread every
``SERVE_EVERY`` messages (as a raw confluent-kafka loop does with ``poll(0)``), the poll
thread otherwise, and never a thread from inside a callback it is already serving.

The broker is one that is not there, with a short ``message.timeout.ms``: every message
fails, so each delivery report reaches ``delivery_failed``, which records who served it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka_helpers import wait_for

import deimos
from deimos.config import get_settings
from deimos.kafka import producers
from deimos.kafka.producers import SERVE_EVERY, SharedProducer
from deimos.testing.broker import _free_port


@pytest.fixture
def unreachable(deimos_reset: None) -> None:
    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     producers={"backend": "kafka_async",
                                "config": {"message.timeout.ms": 100}})


def _async_producer() -> SharedProducer:
    (sp,) = [sp for sp in producers._pool.values() if not sp.reports]
    return sp


def _without_poll_thread() -> SharedProducer:
    """The asynchronous producer the pipelines will use, made now, its poll thread stopped
    before anything is queued: only a publishing thread can serve its reports."""
    sp = producers.shared_producer(get_settings())
    sp._stop.set()
    sp._thread.join(5)
    assert not sp._thread.is_alive()
    return sp


def _publish_until_served(publish: Callable[[], Any], served: list[Any]) -> None:
    """Publish ``SERVE_EVERY`` messages at a time until a report was served: the first
    message times out within about a second (librdkafka scans for timeouts once a second)."""
    deadline = time.monotonic() + 20
    while not served and time.monotonic() < deadline:
        publish()
        time.sleep(0.1)


def test_a_publishing_thread_serves_the_delivery_reports_of_what_it_queued(unreachable):
    served_by: list[threading.Thread] = []

    class P(deimos.Producer):
        topic = "unreachable"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            served_by.append(threading.current_thread())

    def one_by_one() -> None:
        for i in range(SERVE_EVERY):
            P.publish(f"m-{i}")

    sp = _without_poll_thread()
    P.publish("first")
    assert _async_producer() is sp
    _publish_until_served(one_by_one, served_by)
    assert served_by, "no delivery report was served by the publishing thread"
    assert set(served_by) == {threading.current_thread()}


def test_the_poll_thread_serves_again_once_publishers_stop(unreachable):
    served_by: list[str] = []

    class P(deimos.Producer):
        topic = "unreachable"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            served_by.append(threading.current_thread().name)

    # this thread serves once at the end of the list, before any message could time out
    P.publish_list([f"m-{i}" for i in range(SERVE_EVERY)])
    # nothing more is published: the reports of those messages come through the poll thread
    wait_for(lambda: len(served_by) == SERVE_EVERY, timeout=20, what="delivery failures")
    assert "deimos-producer-poll" in served_by


def test_a_delivery_failed_that_publishes_again_loses_nothing_and_serves_nothing_nested(
        unreachable, caplog):
    """confluent-kafka keeps one callback state per thread: a ``poll`` inside a callback
    would end the outer ``poll``'s. Each failure of an original message publishes
    ``SERVE_EVERY`` messages as a list and as many one by one, so both serving counters
    reach their threshold inside the callback."""
    caplog.set_level(logging.ERROR, logger="deimos.kafka")
    originals = 3
    again: list[bytes] = []
    lock = threading.Lock()

    class P(deimos.Producer):
        topic = "unreachable"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            value = message.encoded_payload
            if value.startswith(b"orig-"):
                name = value.decode()
                P.publish_list([f"again-{name}-list-{i}" for i in range(SERVE_EVERY)])
                for i in range(SERVE_EVERY):
                    P.publish(f"again-{name}-one-{i}")
            else:
                with lock:
                    again.append(value)

    for i in range(originals):
        P.publish(f"orig-{i}")
    expected = originals * 2 * SERVE_EVERY
    wait_for(lambda: len(again) == expected, timeout=60,
             what=f"{expected} failures of the messages published from delivery_failed")
    assert len(set(again)) == expected  # each reported once
    assert "error while serving producer callbacks" not in caplog.text


def test_a_delivery_failed_that_raises_on_a_publishing_thread_is_logged_not_raised(
        unreachable, caplog):
    calls: list[str] = []

    class P(deimos.Producer):
        topic = "unreachable"

        @classmethod
        def delivery_failed(cls, message: Any, error: BaseException) -> None:
            calls.append(threading.current_thread().name)
            raise RuntimeError("a bug in delivery_failed")

    sp = _without_poll_thread()
    P.publish("first")
    assert _async_producer() is sp
    # publish_list never raises here
    _publish_until_served(lambda: P.publish_list([f"m-{i}" for i in range(SERVE_EVERY)]),
                          calls)
    assert calls and set(calls) == {threading.current_thread().name}
    assert "on_error callback failed" in caplog.text
