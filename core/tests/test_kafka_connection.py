"""Connection failures are logged once per condition (with a summary and its end) and name
``kafka.bootstrap_servers``; a script whose messages cannot be delivered gives up at exit
after ``producers.flush_timeout``, says how many were lost and exits 1. No broker: the
bootstrap address is a closed loopback port."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest

import deimos
from deimos.errors import PublishError
from deimos.kafka.connection import BrokerConnection


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_condition_is_logged_once_summarised_and_cleared_once(
        caplog: pytest.LogCaptureFixture) -> None:
    conn = BrokerConnection("k1:9092,k2:9092", summary_interval=0.2)
    with caplog.at_level(logging.INFO, logger="deimos.kafka"):
        for _ in range(50):
            conn.failed("k1:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed: "
                        "Connection refused")
        conn.failed("2/2 brokers are down", all_down=True)
        assert conn.down and conn.failing
        time.sleep(0.25)  # the summary interval passing, not a race: nothing else runs
        conn.failed("k1:9092/bootstrap: Connect to ipv4#10.0.0.1:9092 failed: "
                    "Connection refused")
        conn.reachable()
        conn.reachable()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0].startswith("cannot reach the Kafka brokers of kafka.bootstrap_servers "
                                  "'k1:9092,k2:9092': k1:9092/bootstrap")
    assert "51 more failure(s)" in messages[1]
    assert "reachable again" in messages[2] and "52 connection failure(s)" in messages[2]
    assert not conn.down and not conn.failing


def test_a_lasting_condition_is_summarised_on_time_by_statistics_without_new_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    # librdkafka backs off reconnecting up to reconnect.backoff.max.ms (10 s): failures can
    # come seconds apart, statistics come every statistics.interval.ms regardless
    conn = BrokerConnection("k:9092", summary_interval=0.2)
    down = '{"brokers": {"k:9092/1": {"state": "DOWN", "source": "learned"}}}'
    with caplog.at_level(logging.INFO, logger="deimos.kafka"):
        conn.stats(down)  # no condition open: nothing to summarise
        conn.failed("1/1 brokers are down", all_down=True)
        conn.failed("k:9092/1: Connect to ipv4#10.0.0.1:9092 failed: Connection refused")
        conn.stats(down)  # open, but the interval has not passed
        time.sleep(0.25)  # the summary interval passing, not a race: nothing else runs
        conn.stats(down)
        conn.stats(down)  # one summary per interval
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[1].startswith("still cannot reach the Kafka brokers of "
                                  "kafka.bootstrap_servers 'k:9092' after 0s: 1 more "
                                  "failure(s)"), messages[1]
    assert messages[1].endswith("last: k:9092/1: Connect to ipv4#10.0.0.1:9092 failed: "
                                "Connection refused")


def test_statistics_clear_the_condition_only_when_no_broker_is_still_failing() -> None:
    conn = BrokerConnection("k:9092")
    conn.failed("1/1 brokers are down", all_down=True)
    conn.stats('{"brokers": {"k:9092/1": {"state": "UP", "source": "learned"},'
               ' "k:9092/2": {"state": "CONNECT", "source": "learned"},'
               ' ":0/internal": {"state": "UP", "source": "internal"}}}')
    assert not conn.down and conn.failing, "ready again, but the condition lasts"
    conn.stats('{"brokers": {"k:9092/1": {"state": "UP", "source": "learned"},'
               ' "k:9092/2": {"state": "UP", "source": "learned"}}}')
    assert not conn.failing


def test_a_synchronous_publish_that_times_out_names_the_address_and_the_last_error(
        deimos_reset: None) -> None:
    bootstrap = _closed_port()
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     producers={"backend": "kafka", "sync_timeout": 1.5, "flush_timeout": 0.5})

    class P(deimos.Producer):
        topic = "nowhere"

    with pytest.raises(PublishError) as info:
        P.publish("x")
    text = str(info.value)
    assert f"kafka.bootstrap_servers {bootstrap!r}" in text
    assert "Connection refused" in text


def test_a_script_that_cannot_deliver_gives_up_at_exit_says_what_was_lost_and_exits_1(
        ) -> None:
    bootstrap = _closed_port()
    script = f"""
import logging
import deimos
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
deimos.configure(kafka={{"bootstrap_servers": "{bootstrap}"}},
                 producers={{"flush_timeout": 2}})
class P(deimos.Producer):
    topic = "nowhere"
for i in range(50):
    P.publish(str(i))
"""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    took = time.monotonic() - started
    lines = out.stderr.splitlines()
    assert out.returncode == 1, out.stderr
    assert took < 15, f"took {took:.1f}s"
    assert any("gave up at exit after producers.flush_timeout (2s): 50 message(s) were not "
               f"delivered and are lost (kafka.bootstrap_servers '{bootstrap}'" in line
               for line in lines), out.stderr
    # the connection failure once, the loss once: not one line per reconnect attempt
    assert len(lines) <= 3, out.stderr
    assert sum("kafka.bootstrap_servers" in line for line in lines) == 2, out.stderr
