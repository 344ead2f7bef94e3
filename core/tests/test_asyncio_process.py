"""An asyncio consumer under ``deimos run`` as a real process: SIGTERM while coroutines are
in flight (cancelled within the bounded shutdown, nothing unfinished committed) and SIGKILL
(nothing lost after a restart)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka_helpers import committed, wait_for
from test_runner_process import _lines, _produce, _start

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _config(tmp_path: Path, bootstrap: str, topic: str, group: str, batch: int,
            concurrency: int) -> Path:
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"

[runner]
shutdown_timeout = 15
cancel_handlers_after = 1
restart_delay = 1

[[consumers]]
class = "deimos_testapp:AsyncRecordingConsumer"
topics = ["{topic}"]
group_id = "{group}"
max_batch_size = {batch}
max_concurrency = {concurrency}
max_wait_time = 0.2
config = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 1000 }}
""")
    return cfg


def test_sigterm_with_coroutines_in_flight_cancels_them_and_commits_only_what_finished(
        deimos_kafka, deimos_topic, tmp_path):
    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:8]}"
    _produce(deimos_kafka, topic, 60)
    out, gate = tmp_path / "out.txt", tmp_path / "gate-never-opened"
    # after 20 messages every later one awaits a gate that never opens: 5 stuck in flight
    proc = _start(_config(tmp_path, deimos_kafka, topic, group, 30, 5), out, gate=gate,
                  hold_after=20)
    try:
        wait_for(lambda: len(_lines(out.with_suffix(".started"))) >= 5, timeout=60,
                 what="coroutines held in flight")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0, output
    assert took < 15, f"took {took:.1f}s"
    assert "were cancelled; their messages were not committed" in output
    handled = {int(p) for p in _lines(out)}
    stuck = {int(p) for p in _lines(out.with_suffix(".started"))}
    assert not handled & stuck
    done = committed(deimos_kafka, group, topic)
    # every committed message was handled, and the commit stops below the first one stuck
    assert set(range(done)) <= handled
    assert done == min(stuck) >= 20


def test_sigkilled_asyncio_consumer_loses_nothing_after_restart(deimos_kafka, deimos_topic,
                                                                 tmp_path):
    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:8]}"
    n = 400
    _produce(deimos_kafka, topic, n)
    out, gate = tmp_path / "out.txt", tmp_path / "gate-never-opened"
    cfg = _config(tmp_path, deimos_kafka, topic, group, 50, 8)
    proc = _start(cfg, out, gate=gate, hold_after=100)
    try:
        wait_for(lambda: _lines(out.with_suffix(".started")), timeout=60,
                 what="the consumer to be held mid-run")
        proc.kill()  # SIGKILL: no chance to commit
        proc.wait(10)
        before = len(_lines(out))
        assert 100 <= before < n, "killed mid-run"
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
