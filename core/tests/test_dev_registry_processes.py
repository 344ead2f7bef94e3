"""The development registry on embedded defaults: what one process wrote with Avro, ``deimos
tail`` and ``deimos run`` in other processes decode, with no ``schema.registry_url`` set and
no registry server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_helpers import wait_for

import deimos
from deimos.schema import devregistry
from deimos.schema.registry import reset_clients

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP_DIR = Path(__file__).parent / "app"
SCHEMAS = Path(__file__).parents[2] / "plugins" / "avro" / "tests" / "schemas"
WIDGETS = [{"id": i, "name": f"w{i}", "tags": [], "color": "RED", "part": None, "shape": None}
           for i in range(3)]


class Widgets(deimos.Producer):
    schema = "Widget"
    namespace = "com.example"
    key_config = {"field": "id"}


@pytest.fixture
def env(tmp_path: Path, deimos_kafka: str, deimos_reset: None,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment of a developer's shell: a broker, the Avro backend, no registry URL."""
    monkeypatch.setenv("DEIMOS_DEV_REGISTRY", str(tmp_path / "dev-registry.json"))
    for name in list(os.environ):
        if name.startswith("DEIMOS_") and name not in ("DEIMOS_DEV_REGISTRY",) \
                and not name.startswith("DEIMOS_TEST_"):
            monkeypatch.delenv(name)
    yield {**os.environ, "DEIMOS_KAFKA__BOOTSTRAP_SERVERS": deimos_kafka,
           "DEIMOS_SCHEMA__BACKEND": "avro_schema_registry",
           "DEIMOS_SCHEMA__PATH": str(SCHEMAS)}
    reset_clients()


def _publish(bootstrap: str, topic: str) -> None:
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     schema={"backend": "avro_schema_registry", "path": str(SCHEMAS),
                             "registry_url": devregistry.default_url()})
    Widgets.topic = topic
    for w in WIDGETS:  # one record per request: tail reads watermarks, which Tansu gets
        Widgets.publish(w, sync=True)  # wrong after a multi-record request


def test_tail_in_another_process_decodes_what_this_one_wrote(
        env: dict[str, str], deimos_kafka: str, deimos_topic) -> None:
    topic = deimos_topic()
    _publish(deimos_kafka, topic)
    out = subprocess.run([sys.executable, "-m", "deimos", "tail", topic, "--json",
                          "--key-config", "field:id"], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["payload"] for r in rows] == WIDGETS
    assert [r["key"] for r in rows] == ["0", "1", "2"]


def test_run_in_another_process_decodes_what_this_one_wrote(
        env: dict[str, str], deimos_kafka: str, deimos_topic, tmp_path: Path) -> None:
    topic = deimos_topic()
    _publish(deimos_kafka, topic)
    cfg = tmp_path / "deimos.toml"
    cfg.write_text(f"""
[[consumers]]
class = "deimos_testapp:RecordingConsumer"
topics = ["{topic}"]
group_id = "g-{uuid.uuid4().hex[:8]}"
schema = "Widget"
namespace = "com.example"
key_config = {{ field = "id" }}
start_from_beginning = true
max_wait_time = 0.2
config = {{ "session.timeout.ms" = 6000, "heartbeat.interval.ms" = 1000 }}
""")
    out = tmp_path / "out.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deimos", "--config", str(cfg), "run"],
        env={**env, "TESTAPP_OUT": str(out),
             "PYTHONPATH": f"{APP_DIR}{os.pathsep}{env.get('PYTHONPATH', '')}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3,
                 timeout=90, what="the consumer of deimos run")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    logs = proc.stdout.read().decode() if proc.stdout else ""
    assert out.read_text().splitlines() == [str(w) for w in WIDGETS], logs
    assert "using the development registry" in logs
