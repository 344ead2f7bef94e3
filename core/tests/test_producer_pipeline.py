"""The producer pipeline, without a broker: keys, tombstones, fields filled, headers, prefixes,
chunking, disabling, configured topics and validation before sending."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import deimos
from deimos.backends import test as test_backend
from deimos.errors import DeimosError, MissingKeyError, SchemaValidationError
from deimos.hookspecs import hookimpl
from deimos.message import Message, ProduceContext
from deimos.plugins import get_registry
from deimos.schema.base import SchemaContext, SchemaField
from deimos.schema.plain import MockSchemaBackend


class RecordingBackend:
    """A producer backend that records each execute call (batch and sync flag)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Message], bool]] = []

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        self.calls.append((context.topic, list(messages), sync))


class FieldsBackend(MockSchemaBackend):
    """JSON encoding plus a schema with message_id and timestamp fields."""

    @hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        return [SchemaField("message_id", "string"), SchemaField("timestamp", "long"),
                SchemaField("name", "string")]


@pytest.fixture
def recording(deimos_reset: None) -> Iterator[RecordingBackend]:
    backend = RecordingBackend()
    registry = get_registry()
    with registry.registered("producer_backend", "recording", backend), \
            registry.registered("schema_backend", "fields", FieldsBackend()):
        deimos.configure(producers={"backend": "recording"})
        yield backend
    deimos.configure()


def sent(backend: RecordingBackend) -> list[Message]:
    return [m for _, batch, _ in backend.calls for m in batch]


class Widgets(deimos.Producer):
    topic = "widgets"
    key_config = {"field": "widget.id"}


def test_key_comes_from_explicit_key_then_payload_key_then_key_config_field(recording):
    deimos.configure(producers={"backend": "recording"}, schema={"backend": "mock"})
    Widgets.publish({"widget": {"id": 1}}, key="explicit")
    Widgets.publish({"widget": {"id": 2}, "payload_key": "from-payload"})
    Widgets.publish({"widget": {"id": 3}})
    keys = [(m.key, m.encoded_key) for m in sent(recording)]
    assert keys == [("explicit", b'"explicit"'), ("from-payload", b'"from-payload"'),
                    (3, b"3")]
    assert "payload_key" not in sent(recording)[1].payload


def test_missing_key_names_producer_and_topic_and_sends_nothing(recording):
    deimos.configure(producers={"backend": "recording"}, schema={"backend": "mock"})
    with pytest.raises(MissingKeyError, match=r"Producer Widgets .* topic 'widgets'.*message 1"):
        Widgets.publish_list([{"widget": {"id": 1}}, {"widget": {}}])
    assert recording.calls == []


def test_none_payload_and_tombstone_are_deletes_that_keep_their_key(recording):
    deimos.configure(producers={"backend": "recording"}, schema={"backend": "mock"})
    Widgets.publish(None, key=7)
    Widgets.publish_list([deimos.tombstone(8)])
    msgs = sent(recording)
    assert [(m.key, m.payload, m.encoded_payload, m.tombstone) for m in msgs] == [
        (7, None, None, True), (8, None, None, True)]
    with pytest.raises(MissingKeyError):
        Widgets.publish(None)


def test_message_id_and_timestamp_are_filled_only_when_the_schema_has_them(recording):
    deimos.configure(producers={"backend": "recording"}, schema={"backend": "fields"})

    class P(deimos.Producer):
        topic = "t"

    P.publish({"name": "a"})
    P.publish({"name": "b", "message_id": "given", "timestamp": 5})
    first, second = sent(recording)
    assert len(first.payload["message_id"]) == 36 and first.payload["timestamp"] > 0
    assert second.payload == {"name": "b", "message_id": "given", "timestamp": 5}
    deimos.configure(producers={"backend": "recording"}, schema={"backend": "mock"})
    P.publish({"name": "c"})
    assert sent(recording)[-1].payload == {"name": "c"}


def test_headers_pass_through_as_bytes_and_topic_prefix_applies(recording):
    deimos.configure(producers={"backend": "recording", "topic_prefix": "staging."})

    class P(deimos.Producer):
        topic = "events"

    P.publish("x", headers={"a": "1", "b": b"\x00"})
    P.publish("y", headers=[("c", b"3")])
    topics = {t for t, _, _ in recording.calls}
    assert topics == {"staging.events"}
    assert [m.headers for m in sent(recording)] == [[("a", b"1"), ("b", b"\x00")],
                                                    [("c", b"3")]]


def test_payloads_go_to_the_backend_in_chunks_of_max_batch_size(recording):
    deimos.configure(producers={"backend": "recording", "max_batch_size": 3})

    class P(deimos.Producer):
        topic = "t"

    P.publish_list([str(i) for i in range(8)])
    assert [len(batch) for _, batch, _ in recording.calls] == [3, 3, 2]
    assert [m.payload for m in sent(recording)] == [str(i) for i in range(8)]


def test_invalid_payload_fails_before_any_message_of_the_call_is_sent(recording):
    class P(deimos.Producer):
        topic = "t"

    with pytest.raises(SchemaValidationError, match="plain schema backend takes str or bytes"):
        P.publish_list(["fine", {"not": "text"}])
    assert recording.calls == []


def test_text_that_is_not_utf8_encodable_is_refused_by_publish_and_publish_list(recording):
    # publish() encodes plain text inline: a lone surrogate must still give the schema error
    class P(deimos.Producer):
        topic = "t"
        key_config = "plain"

    for call in (lambda: P.publish("bad \ud800", key="k"),
                 lambda: P.publish_list(["bad \ud800"], keys=["k"])):
        with pytest.raises(SchemaValidationError, match="not encodable as UTF-8"):
            call()
    P.publish("fine é", key="k")
    assert [m.encoded_payload for m in sent(recording)] == ["fine é".encode()]


def test_sync_flag_reaches_the_backend_and_defaults_per_backend(recording):
    class P(deimos.Producer):
        topic = "t"

    P.publish("a")
    P.publish("b", sync=False)
    assert [sync for _, _, sync in recording.calls] == [True, False]


def test_disable_producers_is_scoped_per_class_and_nested_across_threads(recording):
    class A(deimos.Producer):
        topic = "a"

    class B(deimos.Producer):
        topic = "b"

    with deimos.disable_producers(A):
        A.publish("dropped")
        B.publish("kept")
        with deimos.disable_producers():
            B.publish("dropped too")
        B.publish("kept again")
    A.publish("back")
    assert [m.payload for m in sent(recording)] == ["kept", "kept again", "back"]

    inside = threading.Event()
    release = threading.Event()

    def other_thread() -> None:
        with deimos.disable_producers(A):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other_thread)
    t.start()
    inside.wait(5)
    assert deimos.producers_disabled(A)
    release.set()
    t.join(5)
    assert not deimos.producers_disabled(A)


def test_publish_after_the_fast_path_is_filled_still_honours_disable_blocks_and_new_topics(
        recording):
    # publish() keeps one lookup per class after its first call: a disable block opened
    # later, a topic assigned later and new settings must each still take effect
    class A(deimos.Producer):
        topic = "a"

    A.publish("first")
    A.publish("fast")
    with deimos.disable_producers(A):
        A.publish("dropped")
    with deimos.disable_producers():
        A.publish("dropped too")
    A.publish("back")
    A.topic = "a2"
    A.publish("moved")
    assert [(m.topic, m.payload) for m in sent(recording)] == [
        ("a", "first"), ("a", "fast"), ("a", "back"), ("a2", "moved")]
    deimos.configure(producers={"backend": "recording", "disabled": True})
    A.publish("disabled by settings")
    assert len(sent(recording)) == 4


def test_global_disabled_setting_sends_nothing(recording):
    deimos.configure(producers={"backend": "recording", "disabled": True})

    class P(deimos.Producer):
        topic = "t"

    assert P.publish("x") == []
    assert recording.calls == []


def test_produce_without_a_class_uses_the_configured_topic(recording):
    deimos.configure(producers={"backend": "recording", "topics": [
        {"topic": "orders", "schema": None, "key_config": {"field": "id"}}]},
        schema={"backend": "mock"})
    deimos.produce("orders", [{"id": 1, "total": 5}])
    [m] = sent(recording)
    assert (m.topic, m.key, m.encoded_payload) == ("orders", 1, b'{"id": 1, "total": 5}')
    with pytest.raises(DeimosError, match=r"Topic 'nope' is not configured .*orders"):
        deimos.produce("nope", [{}])


def test_partition_key_override_and_explicit_partition_key(recording):
    class P(deimos.Producer):
        topic = "t"

        @classmethod
        def partition_key(cls, payload: Any) -> Any:
            return payload.upper()

    P.publish("abc")
    P.publish("abc", partition_key="explicit")
    assert [m.partition_key for m in sent(recording)] == [b"ABC", b"explicit"]


def test_test_backend_keeps_messages_in_memory(deimos_reset):
    deimos.configure(producers={"backend": "test"})

    class P(deimos.Producer):
        topic = "t"
        key_config = "plain"

    P.publish("v", key="k")
    [m] = test_backend.messages()
    assert (m.topic, m.key, m.encoded_key, m.encoded_payload) == ("t", "k", b"k", b"v")


def test_changing_class_attributes_takes_effect_on_the_next_publish(recording):
    class P(deimos.Producer):
        topic = "first"

    P.publish("a")
    P.topic = "second"
    P.publish("b")
    assert [t for t, _, _ in recording.calls] == ["first", "second"]
