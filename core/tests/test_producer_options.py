"""Producer options: a per-call ``topic=``, per-message headers in one ``publish_list``, the
per-class ``disabled`` flag and ``payload_log``; the pipeline on a recording backend, topic
and headers also on the real broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import deimos
from deimos.errors import DeimosError
from deimos.hookspecs import hookimpl
from deimos.message import Message, ProduceContext
from deimos.plugins import get_registry


class RecordingBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Message]]] = []

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        self.calls.append((context.topic, list(messages)))


@pytest.fixture
def recording(deimos_reset: None) -> Iterator[RecordingBackend]:
    backend = RecordingBackend()
    with get_registry().registered("producer_backend", "recording", backend):
        deimos.configure(producers={"backend": "recording", "topic_prefix": "p."},
                         schema={"backend": "mock"})
        yield backend
    deimos.configure()


class Orders(deimos.Producer):
    topic = "orders"
    key_config = {"field": "id"}


def test_a_per_call_topic_keeps_the_class_settings_and_the_prefix(recording):
    Orders.publish({"id": 1})
    Orders.publish({"id": 2}, topic="orders-eu")
    Orders.publish_list([{"id": 3}, {"id": 4}], topic="orders-us")
    Orders.publish({"id": 5}, topic="orders")  # the class's own topic: its pipeline
    Orders.publish_list([{"id": 6}])
    assert [(t, [m.key for m in ms]) for t, ms in recording.calls] == [
        ("p.orders", [1]), ("p.orders-eu", [2]), ("p.orders-us", [3, 4]), ("p.orders", [5]),
        ("p.orders", [6])]
    assert all(m.topic == t for t, ms in recording.calls for m in ms)
    with pytest.raises(deimos.MissingKeyError, match=r"'p\.orders-eu'"):  # same key_config
        Orders.publish({"name": "no id"}, topic="orders-eu")


def test_per_message_headers_follow_the_call_wide_ones(recording):
    Orders.publish_list([{"id": 1}, {"id": 2}, {"id": 3}], headers={"source": "api"},
                        message_headers=[{"trace": "t1"}, None, [("trace", b"t3")]])
    assert [m.headers for _, ms in recording.calls for m in ms] == [
        [("source", b"api"), ("trace", b"t1")], [("source", b"api")],
        [("source", b"api"), ("trace", b"t3")]]
    with pytest.raises(DeimosError, match="message_headers has 1 entries for 2 payloads"):
        Orders.publish_list([{"id": 1}, {"id": 2}], message_headers=[{"a": "b"}])
    assert len(recording.calls) == 1  # nothing sent by the refused call


def test_the_disabled_flag_silences_a_class_and_its_subclasses(recording):
    class Quiet(Orders):
        disabled = True

    class Quieter(Quiet):
        pass

    assert Quiet.publish({"id": 1}) == [] and Quieter.publish_list([{"id": 2}]) == []
    assert Quiet.publish({"id": 3}, topic="elsewhere") == []
    assert deimos.producers_disabled(Quiet) and not deimos.producers_disabled(Orders)
    assert recording.calls == []
    Quiet.disabled = False  # takes effect on the next publish
    assert [m.key for m in Quiet.publish({"id": 4})] == [4]
    assert len(recording.calls) == 1


def test_payload_log_logs_each_mode_and_nothing_when_unset(recording, caplog):
    caplog.set_level(logging.DEBUG, logger="deimos.producer")  # (the prefix "p." stays)

    def logged(**settings: Any) -> list[str]:
        caplog.clear()
        deimos.configure(producers={"backend": "recording", **settings},
                         schema={"backend": "mock"})
        Orders.publish({"id": 1, "n": "x"}, headers={"h": "v"})
        Orders.publish_list([{"id": 2, "n": "y"}])
        return [r.getMessage() for r in caplog.records if r.name == "deimos.producer"]

    assert logged() == []
    assert logged(payload_log="full") == [
        "Orders: publishing to p.orders: [(1, {'id': 1, 'n': 'x'})]",
        "Orders: publishing to p.orders: [(2, {'id': 2, 'n': 'y'})]"]
    assert logged(payload_log="keys") == ["Orders: publishing to p.orders: keys [1]",
                                          "Orders: publishing to p.orders: keys [2]"]
    assert logged(payload_log="count")[0] == "Orders: publishing 1 message(s) to p.orders"
    assert logged(payload_log="headers")[0] == (
        "Orders: publishing to p.orders: keys [1] headers [[('h', b'v')]]")

    class Chatty(Orders):
        payload_log = "count"

    caplog.clear()
    Chatty.publish({"id": 3})
    assert [r.getMessage() for r in caplog.records] == [
        "Chatty: publishing 1 message(s) to p.orders"]
    assert len(recording.calls) == 11  # five rounds of two, and Chatty: logging sends all


@pytest.mark.kafka
def test_topic_and_per_message_headers_on_the_broker(deimos_kafka, deimos_reset, deimos_topic):
    from kafka_helpers import read_all

    deimos.configure(kafka={"bootstrap_servers": deimos_kafka})
    main, other = deimos_topic(), deimos_topic()

    class P(deimos.Producer):
        key_config = "plain"

    P.topic = main
    P.publish_list(["a", "b"], keys=["k1", "k2"], topic=other, sync=True,
                   message_headers=[{"n": "1"}, {"n": "2"}])
    P.publish("c", key="k3", sync=True)
    got = read_all(deimos_kafka, other, 2)
    assert sorted((m.key(), m.value(), m.headers()) for m in got) == [
        (b"k1", b"a", [("n", b"1")]), (b"k2", b"b", [("n", b"2")])]
    assert [m.value() for m in read_all(deimos_kafka, main, 1)] == [b"c"]
