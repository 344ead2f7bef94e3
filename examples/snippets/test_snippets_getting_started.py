"""docs/getting-started.md's service run as the page says: ``deimos run`` with its
``deimos.toml``, a consumer class of the service's own module, messages published from
Python, a graceful stop."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import deimos
from deimos.testing.broker import GROUP_TIMEOUTS, create_topic

pytestmark = pytest.mark.kafka

HERE = Path(__file__).parent / "greetings"


def test_getting_started_service_consumes_what_it_publishes(deimos_kafka, deimos_reset,
                                                            tmp_path):
    service = tmp_path / "greetings-service"
    shutil.copytree(HERE, service)
    config = service / "deimos.toml"
    # the page's file, pointed at the test broker; the embedded broker joins groups slowly
    # at librdkafka's default session timeout
    text = config.read_text().replace('"localhost:9092"', f'"{deimos_kafka}"')
    config.write_text(text + f"session_timeout_ms = {GROUP_TIMEOUTS['session.timeout.ms']}\n")
    create_topic(deimos_kafka, "greetings")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deimos", "--config", str(config), "run"], cwd=service,
        env={**os.environ, "PYTHONPATH": str(service), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        sys.path.insert(0, str(service))
        try:
            from greetings import GreetingProducer
        finally:
            sys.path.remove(str(service))
        deimos.configure(file=str(config))
        GreetingProducer.publish("hello", key="world")
        GreetingProducer.publish_list(["hi", "hey"], keys=["a", "b"])
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout],  # type: ignore
                         daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if ": h" in line and "INFO" not in line:
                seen.append(line.strip())
        assert seen == ["world: hello", "a: hi", "b: hey"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
