"""What the tool commands say when the cluster is not what they expect: ``deimos tail`` with
unreachable brokers prints one error naming ``kafka.bootstrap_servers`` (not librdkafka's
``FAIL`` lines and a traceback), and ``deimos lag`` says when the broker's high watermark is
below a committed offset instead of printing a silent lag of 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition

import deimos
import deimos.commands  # registers the commands on cli
from deimos.cli import cli
from deimos.testing.broker import _free_port


def test_tail_with_unreachable_brokers_prints_one_error_naming_the_setting() -> None:
    servers = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIMOS_")}
    env["DEIMOS_KAFKA__BOOTSTRAP_SERVERS"] = servers
    done = subprocess.run([sys.executable, "-m", "deimos", "tail", "orders", "--timeout", "1"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert f"cannot reach Kafka at kafka.bootstrap_servers = {servers}" in output, output
    assert "Traceback" not in output and "FAIL" not in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_lag_with_unreachable_brokers_prints_one_error_naming_the_setting(
        deimos_reset: None) -> None:
    servers = f"127.0.0.1:{_free_port()}"
    deimos.configure(kafka={"bootstrap_servers": servers})
    out = CliRunner().invoke(cli, ["lag", "some-group", "--topic", "t", "--timeout", "1"])
    assert out.exit_code == 1
    assert (f"Error: measuring the lag of group some-group: cannot reach Kafka at "
            f"kafka.bootstrap_servers = {servers}") in out.output, out.output
    assert "Traceback" not in out.output


@pytest.mark.kafka
def test_lag_says_when_the_brokers_high_watermark_is_below_the_committed_offset(
        deimos_kafka: str, deimos_reset: None, deimos_topic: Any) -> None:
    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:10]}"
    p = RawProducer({"bootstrap.servers": deimos_kafka})
    p.produce(topic, b"one")
    assert p.flush(10) == 0
    # a committed offset past the log end: what a broker reporting a wrong high watermark
    # (or a topic recreated under a live group) shows
    c = RawConsumer({"bootstrap.servers": deimos_kafka, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
    c.close()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    runner = CliRunner()
    out = runner.invoke(cli, ["lag", group, "--topic", topic])
    assert out.exit_code == 0, out.output
    assert "1 (!)" not in out.output and "0 (!)" in out.output
    assert (f"warning: {topic}[0]: the broker reports high watermark 1, below group {group}'s "
            "committed offset 5; the broker's figure is inconsistent") in out.output
    [row] = json.loads(runner.invoke(cli, ["lag", group, "--topic", topic, "--json"]).output)
    assert row["inconsistent"] is True and row["lag"] == 0


@pytest.mark.kafka
def test_the_lag_reporter_warns_once_about_an_inconsistent_partition(
        deimos_kafka: str, deimos_reset: None, deimos_topic: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    from deimos.lag import LagReporter

    topic, group = deimos_topic(), f"g-{uuid.uuid4().hex[:10]}"
    c = RawConsumer({"bootstrap.servers": deimos_kafka, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)  # empty topic
    c.close()
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    reporter = LagReporter(groups={group: [topic]})
    with caplog.at_level("WARNING", logger="deimos.lag"):
        reporter.report()
        reporter.report()
    warned = [r for r in caplog.records if "inconsistent" in r.getMessage()]
    assert len(warned) == 1 and f"{topic}[0]" in warned[0].getMessage()
