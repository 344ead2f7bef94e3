"""A shared producer whose every delivery timed out while the broker answers is stuck (an
idempotent producer a restarted broker does not know raises no fatal error) and is
replaced; a replacement keeps librdkafka's logs in Python logging."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from confluent_kafka import KafkaError

import deimos
from deimos.config import get_settings
from deimos.kafka.producers import shared_producer

TIMED_OUT = [(None, KafkaError(KafkaError._MSG_TIMED_OUT))]


@pytest.mark.kafka
def test_every_delivery_timed_out_while_the_broker_answers_replaces_the_producer(
        deimos_kafka: str, deimos_reset: None) -> None:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    sp = shared_producer(get_settings(), reports=True)
    assert not sp.note_deliveries(1, TIMED_OUT)  # something was acknowledged: not stuck
    assert not sp.note_deliveries(0, [(None, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))])
    assert shared_producer(get_settings(), reports=True) is sp
    assert sp.note_deliveries(0, TIMED_OUT)
    assert sp.fatal is not None
    replacement = shared_producer(get_settings(), reports=True)
    assert replacement is not sp and replacement.fatal is None


def test_an_unreachable_broker_is_no_reason_to_replace_and_a_replacement_still_logs(
        deimos_reset: None, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
    sp = shared_producer(get_settings(), reports=True)
    assert not sp.note_deliveries(0, TIMED_OUT)  # the broker is away: a new one fares no better
    sp.fatal = KafkaError(KafkaError._FATAL)  # as librdkafka's error callback would
    replacement = shared_producer(get_settings(), reports=True)
    assert replacement is not sp
    # connect failures are logged once by deimos.kafka and reach deimos.librdkafka at DEBUG
    caplog.set_level(logging.DEBUG, "deimos.librdkafka")
    caplog.clear()
    replacement.producer.produce("t", b"v")  # makes it connect (and fail to)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            r.name == "deimos.librdkafka" for r in caplog.records):
        time.sleep(0.05)
    assert any(r.name == "deimos.librdkafka" for r in caplog.records), \
        "the replacement's librdkafka logs bypass Python logging"
    replacement.producer.purge()
