"""Issue 15 through the real (embedded) broker and a registry over real HTTP
(:class:`deimos.testing.registry_server.RegistryServer`):

- a registry outage dead-letters nothing: the consumer pauses and retries the same messages,
  uncounted, and handles every one of them once the registry is back;
- no password (in the URL or in the settings) reaches any log record of any logger at DEBUG,
  any exception text or a dead-letter header during a produce/consume round.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition

import deimos
from deimos.consumer import Consumer, ConsumerLoop, resolve_settings
from deimos.schema.registry import RegistryUnavailableError, reset_clients
from deimos.testing.broker import GROUP_TIMEOUTS
from deimos.testing.consumers import consumer_thread
from deimos.testing.registry_server import RegistryServer
from deimos_avro import clear_cache

pytestmark = pytest.mark.kafka

SCHEMAS = Path(__file__).parents[1] / "plugins" / "avro" / "tests" / "schemas"
PASSWORD = "pw-" + uuid.uuid4().hex  # unique: any occurrence anywhere is a leak
#: no client-side retries: the consumer's own pause/backoff is what is tested
FAST = {"max.retries": 0, "timeout": 2}


class Widgets(deimos.Producer):
    schema = "Widget"
    namespace = "com.example"
    key_config = {"field": "id"}


class Collect(Consumer):
    schema = "Widget"
    namespace = "com.example"
    key_config = {"field": "id"}
    seen: list[tuple[Any, Any]] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        type(self).seen.append((metadata.key, payload["name"]))


class Records(logging.Handler):
    """Every record of every logger, rendered with its arguments and traceback; an event per
    transient retry the consumer logs (the test's gate: no sleeps)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.retries = 0
        self.retried = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.getMessage()} {record.args!r}"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.texts.append(text)
        if "not counted against retry.attempts" in text:
            with self.retried:
                self.retries += 1
                self.retried.notify_all()

    def wait_retries(self, n: int, timeout: float = 60) -> None:
        with self.retried:
            assert self.retried.wait_for(lambda: self.retries >= n, timeout), \
                f"the consumer retried {self.retries} time(s), expected {n}"


@pytest.fixture
def records() -> Iterator[Records]:
    """A DEBUG handler on the root logger and on every logger that does not propagate."""
    handler = Records()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    extra = [lg for lg in logging.Logger.manager.loggerDict.values()
             if isinstance(lg, logging.Logger) and not lg.propagate]
    for lg in extra:
        lg.addHandler(handler)
    yield handler
    for lg in extra:
        lg.removeHandler(handler)
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def server(tmp_path: Path, deimos_reset: None) -> Iterator[RegistryServer]:
    srv = RegistryServer(tmp_path / "registry.json", user="svc", password=PASSWORD).start()
    yield srv
    srv.stop()
    reset_clients()
    clear_cache()
    Collect.seen = []


def _configure(bootstrap: str, url: str, **schema: Any) -> None:
    deimos.configure(kafka={"bootstrap_servers": bootstrap},
                     schema={"backend": "avro_schema_registry", "path": str(SCHEMAS),
                             "registry_url": url, **schema},
                     avro={"registry_config": FAST})


def _run(settings: Any, until: Callable[[], bool], during: Callable[[], None] = lambda: None
         ) -> ConsumerLoop:
    with consumer_thread(Collect, settings) as running:
        during()
        running.wait(until, what="every message handled")
    return running.loop


def _settings(topic: str, dlq: str) -> Any:
    Collect.topic = topic
    return resolve_settings(Collect, group_id=f"g-{uuid.uuid4().hex[:8]}",
                            config=dict(GROUP_TIMEOUTS), max_wait_time=0.2,
                            on_error="dead_letter", dead_letter_topic=dlq,
                            retry={"attempts": 2, "backoff": 0.05, "max_backoff": 0.2})


def _high_watermark(bootstrap: str, topic: str) -> int:
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "wm-" + uuid.uuid4().hex})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        c.close()


def _read(bootstrap: str, topic: str, n: int) -> list[Any]:
    c = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": "r-" + uuid.uuid4().hex,
                       "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[Any] = []
    for _ in range(60):
        out += [m for m in c.consume(10, 0.5) if m.error() is None]
        if len(out) >= n:
            break
    c.close()
    return out


@pytest.mark.parametrize("outage", ["connection refused", "HTTP 503"])
def test_registry_outage_dead_letters_nothing_and_every_message_is_handled_once_it_is_back(
        deimos_kafka: str, deimos_topic: Callable[..., str], server: RegistryServer,
        records: Records, outage: str) -> None:
    topic, dlq = deimos_topic(), deimos_topic()
    _configure(deimos_kafka, server.url, user="svc", password=PASSWORD)
    Widgets.topic = topic
    Widgets.publish_list([{"id": i, "name": f"w{i}"} for i in range(20)], sync=True)
    reset_clients()  # the consumer is another process: it has cached no schema id
    if outage == "HTTP 503":
        server.fail_with(503)
    else:
        server.stop()

    def outage_then_recovery() -> None:
        # more uncounted retries than retry.attempts allows, then the registry comes back
        records.wait_retries(5)
        if outage == "HTTP 503":
            server.fail_with(None)
        else:
            server.start()  # the same port, the same store

    loop = _run(_settings(topic, dlq), lambda: len(Collect.seen) >= 20, outage_then_recovery)
    assert sorted(Collect.seen) == sorted((i, f"w{i}") for i in range(20))  # each once
    assert loop.processor.dead_lettered == 0 and loop.processor.skipped == 0
    assert _high_watermark(deimos_kafka, dlq) == 0


def test_no_password_in_any_log_record_exception_or_dead_letter(
        deimos_kafka: str, deimos_topic: Callable[..., str], server: RegistryServer,
        records: Records) -> None:
    texts: list[str] = []
    for url, creds in [
            (server.url.replace("http://", f"http://svc:{PASSWORD}@"), {}),
            (server.url, {"user": "svc", "password": PASSWORD})]:
        topic, dlq, other = deimos_topic(), deimos_topic(), deimos_topic()
        _configure(deimos_kafka, url, **creds)
        texts += [repr(deimos.get_settings()), str(deimos.get_settings())]
        Widgets.topic = topic
        Widgets.publish_list([{"id": i, "name": f"w{i}"} for i in range(3)], sync=True)
        raw = RawProducer({"bootstrap.servers": deimos_kafka})
        raw.produce(topic, b"\x00\x00\x00\x03\xe7\x02", b"\x00\x00\x00\x03\xe7\x02")  # id 999
        raw.flush(10)
        server.fail_with(503)  # a new subject while the registry is overloaded
        Widgets.topic = other
        with pytest.raises(RegistryUnavailableError) as info:
            Widgets.publish({"id": 9, "name": "x"}, sync=True)
        texts += [str(info.value), repr(info.value),
                  "".join(traceback.format_exception(info.value))]
        reset_clients()

        before = records.retries

        def overloaded_then_back(before: int = before) -> None:
            records.wait_retries(before + 1)
            server.fail_with(None)

        Collect.seen = []
        loop = _run(_settings(topic, dlq), lambda: len(Collect.seen) >= 3,
                    overloaded_then_back)
        [dead] = _read(deimos_kafka, dlq, 1)  # id 999: permanent, dead-lettered
        assert loop.processor.dead_lettered == 1
        texts += [repr(dead.headers())]
        assert b"HTTP 404" in dict(dead.headers())["deimos-error-message"]
        reset_clients()
    texts += records.texts
    assert any("HTTP Request" in t for t in records.texts)  # the HTTP client did log URLs
    assert any("retriable" in t for t in records.texts)
    leaks = [t for t in texts if PASSWORD in t]
    assert not leaks, leaks[:3]
