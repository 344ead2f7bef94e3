"""Kafka transactions through real ``deimos run`` processes: a transactional consumer
SIGKILLed in the middle of a batch and restarted, and one fenced by a second instance with
its transactional.id; a ``read_committed`` reader of the output sees every input's output
exactly once, in order per key.

The process chooses its own kill point (after so many messages, with so many outputs in the
open transaction), so no timing decides what the test sees. Aborted records that reached the
broker are shown to read_committed readers by the embedded Tansu (its Fetch responses list no
aborted transactions): that variant is expected to fail there and proves the guarantee
against a real cluster (``DEIMOS_TEST_BOOTSTRAP_SERVERS``); its twin's aborted outputs die
queued in the client (a linger longer than the test) and it holds on both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as RawProducer
from kafka_helpers import (
    ON_TANSU,
    aborted_records_visible_on_tansu,
    committed,
    read_values,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP_DIR = Path(__file__).parent / "app"
MESSAGES, KEYS, PARTITIONS = 5000, 50, 2
#: a restarted consumer waits for its killed predecessor's session to time out: short on
#: the embedded broker (which allows it), Kafka's minimum elsewhere
SESSION = ('"session.timeout.ms" = 2000, "heartbeat.interval.ms" = 400' if ON_TANSU else
           '"session.timeout.ms" = 6000, "heartbeat.interval.ms" = 1000')


def _config(tmp_path: Path, bootstrap: str, source: str, group: str, prefix: str,
            linger_ms: int) -> Path:
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"

[producers]
config = {{ "linger.ms" = {linger_ms} }}

[runner]
shutdown_timeout = 15
restart_delay = 0.2

[[consumers]]
class = "deimos_testapp:TransformConsumer"
topics = ["{source}"]
group_id = "{group}"
transactional = true
transactional_id = "{prefix}"
# a transaction per polled batch: the process's kill and hold points count per transaction
# (test_kafka_transactions.py rewinds a transaction of several batches)
transaction_interval = 0
max_batch_size = 500
max_wait_time = 0.2
config = {{ {SESSION} }}
""")
    return cfg


def _start(cfg: Path, out_topic: str, **env: Any) -> subprocess.Popen[bytes]:
    full = {**os.environ, "TESTAPP_OUTPUT_TOPIC": out_topic,
            "PYTHONPATH": f"{APP_DIR}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **{f"TESTAPP_{k.upper()}": str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-m", "deimos", "--config", str(cfg), "run"],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _inputs(bootstrap: str, topic: str, n: int = MESSAGES) -> None:
    """``k<n>:<seq>`` for seq 0.. of each of the keys, interleaved, keyed ``k<n>``."""
    p = RawProducer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        key = f"k{i % KEYS}"
        p.produce(topic, f"{key}:{i // KEYS}".encode(), key.encode(),
                  partition=(i % KEYS) % PARTITIONS)
    assert p.flush(30) == 0


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    return sum(max(0, committed(bootstrap, group, topic, p)) for p in range(PARTITIONS))


def _finish_and_check(bootstrap: str, cfg: Path, source: str, out: str, group: str,
                      n: int = MESSAGES) -> None:
    """A restarted consumer handles the rest; the output holds each input once, in order
    per key."""
    proc = _start(cfg, out)
    try:
        wait_for(lambda: _committed_total(bootstrap, group, source) == n, timeout=60,
                 what="every input committed after the restart")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    seen = read_values(bootstrap, out, "read_committed", until=n)
    per_key: dict[str, list[int]] = defaultdict(list)
    for v in seen:
        key, seq = v.split(":")
        per_key[key].append(int(seq))
    assert len(seen) == n
    assert len(per_key) == KEYS
    assert all(seqs == list(range(n // KEYS)) for seqs in per_key.values()), {
        k: s[:10] for k, s in per_key.items() if s != list(range(n // KEYS))}


def _killed_mid_batch(bootstrap: str, deimos_topic: Any, tmp_path: Path,
                      flush: bool) -> None:
    source, out = deimos_topic(partitions=PARTITIONS), deimos_topic(partitions=PARTITIONS)
    group, prefix = f"g-{uuid.uuid4().hex[:8]}", f"tx-{uuid.uuid4().hex[:8]}"
    _inputs(bootstrap, source)
    cfg = _config(tmp_path, bootstrap, source, group, prefix, 20000)
    killed = _start(cfg, out, kill_after=2250, kill_queued=150,
                    **({"kill_flush": 1} if flush else {}))
    output = killed.communicate(timeout=60)[0].decode(errors="replace")
    assert killed.returncode == -9, output[-3000:]
    done = _committed_total(bootstrap, group, source)
    assert 0 < done < MESSAGES  # committed batches before the kill, the rest after
    _finish_and_check(bootstrap, cfg, source, out, group)


def test_a_transactional_consumer_sigkilled_mid_batch_with_its_outputs_queued_outputs_each_input_once(  # noqa: E501
        deimos_kafka: str, deimos_topic: Any, tmp_path: Path) -> None:
    _killed_mid_batch(deimos_kafka, deimos_topic, tmp_path, flush=False)


@aborted_records_visible_on_tansu
def test_a_transactional_consumer_sigkilled_mid_batch_with_its_outputs_sent_outputs_each_input_once(
        deimos_kafka: str, deimos_topic: Any, tmp_path: Path) -> None:
    _killed_mid_batch(deimos_kafka, deimos_topic, tmp_path, flush=True)


def test_a_fenced_transactional_consumer_exits_non_zero_naming_its_transactional_id(
        deimos_kafka: str, deimos_topic: Any, tmp_path: Path) -> None:
    source, out = deimos_topic(partitions=PARTITIONS), deimos_topic(partitions=PARTITIONS)
    group, prefix = f"g-{uuid.uuid4().hex[:8]}", f"tx-{uuid.uuid4().hex[:8]}"
    _inputs(deimos_kafka, source, 1000)
    cfg = _config(tmp_path, deimos_kafka, source, group, prefix, 5)
    started, gate = tmp_path / "started", tmp_path / "gate"
    first = _start(cfg, out, gate=gate, hold_after=500, started=started)
    try:
        wait_for(started.exists, timeout=60, what="a transaction held at the gate")
        full_id = f"{prefix}-TransformConsumer-0"
        newer = RawProducer({"bootstrap.servers": deimos_kafka, "transactional.id": full_id})
        newer.init_transactions(10)  # the second instance: fences the first
        gate.touch()
        output = first.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, output[-3000:]
    assert f"'{full_id}'" in output and "fenced by another instance" in output, output[-3000:]
    held = _committed_total(deimos_kafka, group, source)
    assert 500 <= held < 1000
    _finish_and_check(deimos_kafka, cfg, source, out, group, 1000)
