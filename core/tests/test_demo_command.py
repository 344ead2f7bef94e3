"""``deimos demo`` (the README's first command) completes and says every message arrived."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_runs_end_to_end_on_the_embedded_broker_or_configured_cluster(deimos_kafka):
    env = {**os.environ}
    if os.environ.get("DEIMOS_TEST_BOOTSTRAP_SERVERS"):
        env["DEIMOS_KAFKA__BOOTSTRAP_SERVERS"] = os.environ["DEIMOS_TEST_BOOTSTRAP_SERVERS"]
    out = subprocess.run([sys.executable, "-m", "deimos", "demo", "--messages", "2000"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every message consumed: yes" in out.stdout
    assert "per-key order preserved: yes" in out.stdout


def test_flush_at_exit_delivers_async_messages_of_a_script_that_just_ends(
        deimos_kafka, deimos_topic):
    topic = deimos_topic()
    script = f"""
import deimos
deimos.configure(kafka={{"bootstrap_servers": "{deimos_kafka}"}})
class P(deimos.Producer):
    topic = "{topic}"
P.publish_list([str(i) for i in range(1000)])
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    from kafka_helpers import read_all

    assert len(read_all(deimos_kafka, topic, 1000)) == 1000
