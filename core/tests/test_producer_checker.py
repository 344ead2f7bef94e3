"""``deimos_schema_checker``: payloads the schema plugin's checker passes are published as
they are, without a coercion call each; any other payload is still coerced."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import deimos
from deimos.backends import test as test_backend
from deimos.config import KeyConfig
from deimos.errors import CoercionError
from deimos.plugins import get_registry
from deimos.runtime import get_runtime
from deimos.schema.base import SchemaContext, encode_plain_keys

pytestmark = pytest.mark.usefixtures("isolated_deimos")


class CountingSchema:
    """``n`` must be an int: coerce turns digit strings into ints; the checker passes
    dicts whose ``n`` already is one. Counts the coercion calls."""

    def __init__(self) -> None:
        self.coerced: list[Any] = []
        self.checked = 0

    @deimos.hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        return [None if p is None else repr(sorted(p.items())).encode() for p in payloads]

    @deimos.hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        return [None if d is None else dict(ast.literal_eval(d.decode())) for d in data]

    @deimos.hookimpl
    def deimos_schema_encode_key(self, context: SchemaContext, keys: Sequence[Any]
                                 ) -> list[bytes | None]:
        return encode_plain_keys(keys)

    @deimos.hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        self.coerced.append(payload)
        n = payload["n"]
        if type(n) is int:
            return payload
        if isinstance(n, str) and n.isdigit():
            return {**payload, "n": int(n)}
        raise CoercionError([("n", f"expected an int, got {type(n).__name__}")], context.topic)

    @deimos.hookimpl
    def deimos_schema_checker(self, context: SchemaContext) -> Callable[[Any], bool] | None:
        def check(payload: Any) -> bool:
            self.checked += 1
            return type(payload.get("n")) is int

        return check


class _NoChecker(CountingSchema):
    deimos_schema_checker = None  # type: ignore[assignment]


@pytest.fixture
def counting() -> Any:
    schema = CountingSchema()
    test_backend.clear()
    with get_registry().registered("schema_backend", "counting", schema):
        deimos.configure(schema={"backend": "counting"}, producers={"backend": "test"})
        yield schema


def _producer() -> type[deimos.Producer]:
    return type("CheckedProducer", (deimos.Producer,), {"topic": "checked",
                                                        "key_config": "plain"})


def test_publish_list_sends_payloads_the_checker_passes_without_coercing_them(
        counting: CountingSchema) -> None:
    payloads = [{"n": i} for i in range(5)]
    sent = _producer().publish_list(payloads, keys=[str(i) for i in range(5)])
    assert counting.coerced == []
    assert counting.checked == 5
    assert [m.payload for m in sent] == payloads
    assert all(m.payload is p for m, p in zip(sent, payloads))  # not copied
    assert len(test_backend.messages()) == 5
    schema = get_runtime().schema_backend(topic="checked", schema=None, namespace=None,
                                                 key_config=KeyConfig(kind="plain"))
    assert schema.decode(schema.context, [m.encoded_payload for m in sent]) == payloads


def test_publish_list_coerces_every_payload_when_one_fails_the_checker(
        counting: CountingSchema) -> None:
    payloads = [{"n": 1}, {"n": "2"}, {"n": 3}]
    sent = _producer().publish_list(payloads, keys=["a", "b", "c"])
    assert counting.coerced == payloads
    assert [m.payload for m in sent] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_publish_list_still_refuses_an_invalid_payload_naming_it(
        counting: CountingSchema) -> None:
    with pytest.raises(CoercionError) as info:
        _producer().publish_list([{"n": 1}, {"n": "x"}], keys=["a", "b"])
    assert "message 1" in str(info.value)
    assert test_backend.messages() == []


def test_payload_key_is_taken_out_even_when_the_checker_passes(
        counting: CountingSchema) -> None:
    sent = _producer().publish_list([{"n": 1, "payload_key": "k1"}], keys=None)
    assert [(m.key, m.payload) for m in sent] == [("k1", {"n": 1})]


def test_publish_and_apublish_skip_coercion_for_a_payload_the_checker_passes(
        counting: CountingSchema) -> None:
    producer = _producer()
    producer.publish({"n": 1}, key="a")
    producer.publish({"n": 2}, key="b")  # the compiled per-message path
    asyncio.run(producer.apublish({"n": 3}, key="c"))
    assert counting.coerced == []
    producer.publish({"n": "4"}, key="d")
    asyncio.run(producer.apublish({"n": "5"}, key="e"))
    assert counting.coerced == [{"n": "4"}, {"n": "5"}]
    assert [m.payload["n"] for m in test_backend.messages()] == [1, 2, 3, 4, 5]


def test_without_a_checker_every_payload_is_coerced() -> None:
    schema = _NoChecker()
    test_backend.clear()
    with get_registry().registered("schema_backend", "counting_plain", schema):
        deimos.configure(schema={"backend": "counting_plain"}, producers={"backend": "test"})
        _producer().publish_list([{"n": 1}, {"n": 2}], keys=["a", "b"])
        _producer().publish({"n": 3}, key="c")
    assert schema.coerced == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert schema.checked == 0
