"""``deimos run`` as a service, through real processes: health endpoints that follow the
broker and the group assignment, ``/metrics`` of the prometheus provider, the application
hook, and a quiet log while the broker is down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as RawProducer
from kafka_helpers import wait_for

from deimos.testing.broker import GROUP_TIMEOUTS, EmbeddedBroker, create_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP_DIR = Path(__file__).parent / "app"
DEIMOS = str(Path(sys.executable).with_name("deimos"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` with ``labels`` on a Prometheus text page."""
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    return sum(v for k, v in samples.items() if k.split("{")[0] == name
               and all(f'{a}="{b}"' in k for a, b in labels.items()))


def get(port: int, path: str) -> tuple[int | None, Any]:
    """``(status, body)`` of ``GET path``; ``(None, error)`` while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except OSError as exc:
        return None, str(exc)
    if path == "/metrics":
        return status, body.decode()
    return status, json.loads(body)


def _config(tmp_path: Path, bootstrap: str, topic: str, extra: str = "",
            **consumer_config: int) -> Path:
    timeouts = ", ".join(f'"{k}" = {v}' for k, v in {**GROUP_TIMEOUTS,
                                                       **consumer_config}.items())
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
app = "deimos_testapp:setup"
{extra}
[kafka]
bootstrap_servers = "{bootstrap}"
error_summary_interval = 4

[runner]
shutdown_timeout = 15
restart_delay = 1

[[consumers]]
class = "deimos_testapp:RecordingConsumer"
topics = ["{topic}"]
group_id = "g-{uuid.uuid4().hex[:8]}"
max_wait_time = 0.2
config = {{ {timeouts}, "topic.metadata.refresh.interval.ms" = 1000 }}
""")
    return cfg


def _start(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """``deimos run --health-port PORT`` from ``tmp_path`` (its deimos.toml read by default:
    no --config), output in ``tmp_path/run.log``."""
    full = {**os.environ, "TESTAPP_OUT": str(tmp_path / "out.txt"),
            "TESTAPP_SETUP": str(tmp_path / "setup.txt"),
            "PYTHONPATH": f"{APP_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env}
    full.pop("DEIMOS_CONFIG", None)
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - the process writes to it
    return subprocess.Popen([DEIMOS, "run", "--health-port", str(port)], cwd=tmp_path,
                            env=full, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_health_follows_assignment_and_the_broker_and_the_log_stays_quiet(tmp_path: Path
                                                                         ) -> None:
    broker = EmbeddedBroker().start()  # a broker of its own: this test stops it
    topic = f"health-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    _config(tmp_path, broker.bootstrap_servers, topic)
    proc = _start(tmp_path, port)
    try:
        # the topic does not exist yet: the consumer runs but has no partitions, so the
        # process is live and not ready, however long it waits
        wait_for(lambda: get(port, "/livez")[0] == 200, timeout=60, what="liveness")
        status, body = get(port, "/readyz")
        assert status == 503, body
        (consumer,) = body["runnables"]
        assert consumer["live"] and not consumer["ready"]
        assert consumer["state"] in ("waiting for partitions", "starting")
        create_topic(broker.bootstrap_servers, topic)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60, what="readiness")
        assert get(port, "/readyz")[1]["runnables"][0]["partitions"] == 1

        log = tmp_path / "run.log"
        before = len(_lines(log))
        broker.stop()
        stopped = time.monotonic()
        wait_for(lambda: get(port, "/readyz")[0] == 503, timeout=30, what="not ready")
        status, body = get(port, "/health")
        assert status == 503 and not body["ready"]
        assert body["runnables"][0]["state"] == "brokers unreachable"
        assert body["kafka"][0]["reachable"] is False
        assert get(port, "/livez")[0] == 200, "the loop keeps turning: no restart needed"
        # what the log says while the broker stays down for 10 s (measured, not raced)
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        down = _lines(log)[before:]
        # the summary is due 4 s (kafka.error_summary_interval) after the first line, at the
        # next failure or statistics report (every 2 s); waited for, not raced against the
        # 10 s above: a loaded machine may serve the consumer's callbacks late
        wait_for(lambda: any("still cannot reach" in line and "failure(s)" in line
                             for line in _lines(log)[before:]), timeout=30, what="a summary")

        broker.start()
        create_topic(broker.bootstrap_servers, topic)  # memory storage: the topic is gone
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60, what="ready again")
        wait_for(lambda: any("reachable again" in line for line in _lines(log)),
                 timeout=30, what="the all-clear in the log")
    finally:
        code = _stop(proc)
        broker.stop()
    output = "\n".join(_lines(tmp_path / "run.log"))
    assert code == 0, output
    assert _lines(tmp_path / "setup.txt") == [str(proc.pid)], "the app hook ran once"
    # a handful of lines for 10 s down (hundreds of FAIL / _TRANSPORT lines before)
    assert 1 <= len(down) <= 8, "\n".join(down)
    assert not any("FAIL" in line or "_TRANSPORT" in line for line in down), "\n".join(down)
    assert sum("deimos.kafka: cannot reach the Kafka brokers of kafka.bootstrap_servers" in line
               for line in down) == 1
    assert sum("reachable again" in line for line in output.splitlines()) == 1
    print(f"\nlog lines during 10 s without the broker: {len(down)}\n" + "\n".join(down))


def test_metrics_after_a_produce_and_a_consume_and_liveness_of_a_stuck_handler(
        deimos_kafka: str, deimos_topic: Any, tmp_path: Path) -> None:
    topic = deimos_topic()
    port = _free_port()
    _config(tmp_path, deimos_kafka, topic, extra='[metrics]\nproviders = ["prometheus"]',
            **{"max.poll.interval.ms": 6000})
    gate = tmp_path / "gate"
    # the app hook publishes 5 messages from this process; its consumer then handles them
    # and holds the next batch at the gate
    proc = _start(tmp_path, port, TESTAPP_PUBLISH_TOPIC=topic, TESTAPP_PUBLISH_N="5",
                  TESTAPP_GATE=str(gate), TESTAPP_HOLD_AFTER="5",
                  TESTAPP_STARTED=str(tmp_path / "started.txt"))
    try:
        wait_for(lambda: len(_lines(tmp_path / "out.txt")) == 5, timeout=60,
                 what="the 5 messages handled")
        # the handler writes out.txt before it returns, and success is counted after it
        # returned: wait for the count of the 5th success, then read the whole page once
        wait_for(lambda: _sample(get(port, "/metrics")[1], "deimos_handler_total",
                                 topic=topic, status="success") == 5,
                 timeout=30, what="the 5 successes counted")
        status, text = get(port, "/metrics")
        assert get(port, "/livez")[0] == 200

        # a handler stuck past max.poll.interval.ms (6 s here): the process is not live
        p = RawProducer({"bootstrap.servers": deimos_kafka})
        p.produce(topic, b"stuck")
        assert p.flush(30) == 0
        wait_for(lambda: _lines(tmp_path / "started.txt"), timeout=30, what="a held batch")
        wait_for(lambda: get(port, "/livez")[0] == 503, timeout=30, what="not live")
        (consumer,) = [r for r in get(port, "/livez")[1]["runnables"]
                       if r.get("kind") == "consumer"]  # the lag reporter runs too
        assert not consumer["live"] and consumer["last_iteration_seconds_ago"] > 6
        gate.touch()
        wait_for(lambda: get(port, "/livez")[0] == 200, timeout=30, what="live again")
    finally:
        gate.touch()
        code = _stop(proc)
    assert code == 0, (tmp_path / "run.log").read_text()
    assert status == 200

    def value(name: str, **labels: str) -> float:
        return _sample(text, name, **labels)

    assert value("deimos_publish_total", topic=topic) == 5
    assert value("deimos_handler_total", topic=topic, status="batch_received") >= 1
    assert value("deimos_handler_total", topic=topic, status="received") == 5
    assert value("deimos_handler_total", topic=topic, status="success") == 5
    assert value("deimos_handler_seconds_count", topic=topic, time="consume_batch") >= 1
    assert "# TYPE deimos_handler_total counter" in text
