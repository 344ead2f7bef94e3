"""``deimos run`` as a real process: graceful SIGTERM and loss-free SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer as RawProducer
from kafka_helpers import committed, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP_DIR = Path(__file__).parent / "app"


def _config(tmp_path: Path, bootstrap: str, topic: str, group: str, batch: int) -> Path:
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"

[runner]
shutdown_timeout = 15
restart_delay = 1

[[consumers]]
class = "deimos_testapp:RecordingConsumer"
topics = ["{topic}"]
group_id = "{group}"
max_batch_size = {batch}
max_wait_time = 0.2
config = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 1000 }}
""")
    return cfg


def _start(cfg: Path, out: Path, sleep: float = 0.0, gate: Path | None = None,
           hold_after: int = 0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TESTAPP_OUT": str(out), "TESTAPP_SLEEP": str(sleep),
           "PYTHONPATH": f"{APP_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if gate is not None:
        env.update(TESTAPP_GATE=str(gate), TESTAPP_HOLD_AFTER=str(hold_after),
                   TESTAPP_STARTED=str(out.with_suffix(".started")))
    return subprocess.Popen(
        [sys.executable, "-m", "deimos", "--config", str(cfg), "run"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    p = RawProducer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, str(i).encode())
    assert p.flush(30) == 0


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigterm_during_a_batch_finishes_it_commits_and_exits_in_time(
        deimos_kafka, deimos_topic, tmp_path):
    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:8]}"
    _produce(deimos_kafka, topic, 200)
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    # after the first 20 messages, the next batch waits inside the handler at the gate
    proc = _start(_config(tmp_path, deimos_kafka, topic, group, 20), out, gate=gate,
                  hold_after=20)
    try:
        wait_for(lambda: _lines(out.with_suffix(".started")), timeout=60,
                 what="a batch inside the handler")
        [in_flight] = _lines(out.with_suffix(".started"))
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        gate.touch()  # the in-flight batch may now finish: the stop must wait for it
        code = proc.wait(30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert took < 15, f"took {took:.1f}s"
    handled = _lines(out)
    assert in_flight in handled, "the in-flight batch finished"
    assert committed(deimos_kafka, group, topic) == len(handled)


def test_sigkilled_consumer_loses_nothing_after_restart(deimos_kafka, deimos_topic, tmp_path):
    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:8]}"
    n = 2000
    _produce(deimos_kafka, topic, n)
    out, gate = tmp_path / "out.txt", tmp_path / "gate-never-opened"
    cfg = _config(tmp_path, deimos_kafka, topic, group, 100)
    # held inside a batch once 300 are handled: killed mid-run, whatever the machine's speed
    proc = _start(cfg, out, gate=gate, hold_after=300)
    try:
        wait_for(lambda: _lines(out.with_suffix(".started")), timeout=60,
                 what="the consumer to be held mid-run")
        proc.kill()  # SIGKILL: no chance to commit
        proc.wait(10)
        before = len(_lines(out))
        assert 300 <= before < n, "killed mid-run"
        proc = _start(cfg, out)
        wait_for(lambda: set(_lines(out)) >= {str(i) for i in range(n)}, timeout=90,
                 what="every message")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert set(_lines(out)) == {str(i) for i in range(n)}
