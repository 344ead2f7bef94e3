"""A script that publishes asynchronously and just ends still delivers everything."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kafka


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
