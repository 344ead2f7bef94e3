"""``deimos dlq replay`` on the real broker: a consumer fails, its message is dead-lettered,
replay republishes it to the original topic and the consumer handles it; a message that
keeps failing is refused once it was replayed ``--max-replays`` times; filters and the dry run.

Tansu (the embedded test broker) reports, after a produce request carrying several records,
a high watermark of that batch's base offset + 1 instead of the log end, and replay reads a
dead-letter topic up to its watermarks: every dead letter here is produced by a request of its
own (one failing message per consumer batch; the hand-made dead letters flushed one by one).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer as RawProducer
from kafka_helpers import LoopThread, group_settings, read_all, wait_for

import deimos
import deimos.commands  # registers the commands on cli
from deimos import dlq
from deimos.cli import cli
from deimos.consumer import Consumer

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka(deimos_kafka: str, deimos_reset: None) -> str:
    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    return deimos_kafka


def test_round_trip_consumer_fails_dead_letter_replay_consumer_handles_it(
        kafka: str, deimos_topic: Any) -> None:
    topic, dead = deimos_topic(), deimos_topic()
    healed = threading.Event()
    handled: list[tuple[str, dict[str, bytes]]] = []

    class C(Consumer):
        key_config = "plain"

        def consume(self, payload: Any, metadata: Any) -> None:
            if payload == "poison" and not healed.is_set():
                raise ValueError("cannot handle poison yet")
            handled.append((payload, metadata.headers))

    class P(deimos.Producer):
        key_config = "plain"

    C.topic = P.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dead,
                              retry={"attempts": 1})
    loop = LoopThread(C, settings).start()
    try:
        P.publish_list(["ok", "poison"], keys=["k1", "k2"], headers={"origin": "test"},
                       sync=True)
        wait_for(lambda: len(read_all(kafka, dead, 1, timeout=0.5)) == 1, what="dead letter")
        assert [p for p, _ in handled] == ["ok"]

        runner = CliRunner()
        dry = runner.invoke(cli, ["dlq", "replay", dead, "--dry-run", "--json"])
        assert dry.exit_code == 0, dry.output
        [row] = json.loads(dry.output)
        assert row == {"partition": 0, "offset": 0, "key": "k2",
                       "error_class": "builtins.ValueError", "original_topic": topic,
                       "replays": 0, "outcome": "would replay", "reason": f"to {topic}"}
        assert [p for p, _ in handled] == ["ok"]

        healed.set()
        out = runner.invoke(cli, ["dlq", "replay", dead])
        assert out.exit_code == 0, out.output
        assert "1 replayed, 0 refused, 0 skipped" in out.output
        wait_for(lambda: len(handled) == 2, what="the replayed message handled")
    finally:
        loop.stop()
    payload, headers = handled[1]
    assert payload == "poison"
    assert headers["origin"] == b"test" and headers["deimos-replay-count"] == b"1"
    assert not [h for h in headers if h.startswith("deimos-error")]
    [replayed] = read_all(kafka, topic, 3)[2:]
    assert replayed.key() == b"k2"


def test_a_message_that_keeps_failing_is_refused_at_the_limit(kafka: str, deimos_topic: Any
                                                              ) -> None:
    topic, dead = deimos_topic(), deimos_topic()

    class C(Consumer):
        def consume(self, payload: Any, metadata: Any) -> None:
            raise ValueError("still broken")

    class P(deimos.Producer):
        key_config = "plain"

    C.topic = P.topic = topic
    settings = group_settings(C, on_error="dead_letter", dead_letter_topic=dead,
                              retry={"attempts": 1})
    loop = LoopThread(C, settings).start()
    runner = CliRunner()
    try:
        P.publish("poison", key="k", sync=True)
        wait_for(lambda: len(read_all(kafka, dead, 1, timeout=0.5)) == 1, what="dead letter")
        first = runner.invoke(cli, ["dlq", "replay", dead, "--max-replays", "1"])
        assert first.exit_code == 0 and "1 replayed" in first.output, first.output
        wait_for(lambda: len(read_all(kafka, dead, 2, timeout=0.5)) == 2,
                 what="the second dead letter")
    finally:
        loop.stop()
    again = dict(read_all(kafka, dead, 2)[1].headers())
    assert again["deimos-replay-count"] == b"1"
    assert again["deimos-error-message"] == b"still broken"
    # the second dead letter (offset 1) has been replayed once: the limit refuses it
    refused = runner.invoke(cli, ["dlq", "replay", dead, "--from-offset", "1",
                                  "--max-replays", "1"])
    assert refused.exit_code == 3, refused.output
    assert "0 replayed, 1 refused" in refused.output
    assert len(read_all(kafka, topic, 3, timeout=1)) == 2  # nothing republished


def test_filters_select_by_offsets_error_class_and_key(kafka: str, deimos_topic: Any) -> None:
    original, dead = deimos_topic(), deimos_topic()
    letters = [("a", "app.errors.Invalid"), ("b", "builtins.ValueError"),
               ("c", "builtins.ValueError"), ("d", "app.errors.Invalid")]
    p = RawProducer({"bootstrap.servers": kafka, "linger.ms": 0})
    for i, (key, error) in enumerate(letters):
        p.produce(dead, f"v{i}".encode(), key.encode(), headers=[
            ("trace", b"t"), ("deimos-error-class", error.encode()),
            ("deimos-error-message", b"x"), ("deimos-original-topic", original.encode())])
        assert p.flush(10) == 0  # one record per request (see the module doc)
    p.produce(dead, b"stray", b"e")  # not a deimos dead letter
    assert p.flush(10) == 0
    settings = deimos.get_settings()

    def selected(**criteria: Any) -> list[str]:
        result = dlq.replay(settings, dead, dlq.ReplayFilter(**criteria), dry_run=True)
        return [d.key.decode() for d in result.selected if d.outcome == "would replay"]

    assert selected() == ["a", "b", "c", "d"]
    assert selected(error_class="ValueError") == ["b", "c"]
    assert selected(error_class="app.errors.Invalid") == ["a", "d"]
    assert selected(key="c") == ["c"]
    assert selected(from_offset=1, to_offset=2) == ["b", "c"]
    assert selected(from_offset=2, error_class="Invalid") == ["d"]
    skipped = dlq.replay(settings, dead, dlq.ReplayFilter(key="e"), dry_run=True).selected
    assert [d.outcome for d in skipped] == ["skipped"]

    result = dlq.replay(settings, dead, dlq.ReplayFilter(error_class="Invalid"))
    assert result.count("replayed") == 2
    got = read_all(kafka, original, 2)
    assert sorted((m.key(), m.value()) for m in got) == [(b"a", b"v0"), (b"d", b"v3")]
    assert all(dict(m.headers()) == {"trace": b"t", "deimos-replay-count": b"1"} for m in got)


def test_unreachable_brokers_give_one_error_naming_the_setting(deimos_reset: None) -> None:
    from deimos.testing.broker import _free_port

    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"})
    started = time.monotonic()
    out = CliRunner().invoke(cli, ["dlq", "replay", f"dlq-{uuid.uuid4().hex}",
                                   "--timeout", "1"])
    assert out.exit_code == 1 and time.monotonic() - started < 10
    assert "cannot reach Kafka at kafka.bootstrap_servers = 127.0.0.1:" in out.output, out.output
