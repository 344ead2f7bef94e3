"""Coercion, validation paths, logical types, unions, references and schema files."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from deimos.errors import CoercionError, SchemaError, SchemaValidationError

SCHEMAS = Path(__file__).parent / "schemas"
UTC = dt.timezone.utc


class Status(enum.Enum):
    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"


class Shade(enum.Enum):
    RED = 1
    BLUE = 2


def logical_payload() -> dict[str, Any]:
    return {
        "ts_ms": dt.datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC),
        "ts_us": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "day": dt.date(2024, 5, 1),
        "amount": Decimal("12.34"),
        "fixed_amount": Decimal("-5.125"),
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "status": "ACTIVE",
        "score": None,
        "attrs": {"a": 1},
        "flag": True,
    }


@pytest.mark.parametrize("backend", ["avro_schema_registry", "avro_local", "avro_validation"])
def test_logical_types_round_trip(make: Any, backend: str) -> None:
    b = make(backend, schema="Logical")
    payload = logical_payload()
    assert b.coerce(b.context, payload) is payload  # already right: returned untouched
    [decoded] = b.decode(b.context, b.encode(b.context, [payload]))
    assert decoded == payload


def test_coerce_python_types_to_logical_fields(make: Any) -> None:
    b = make(schema="Logical")
    coerced = b.coerce(b.context, {
        "ts_ms": dt.datetime(2024, 5, 1, 12, 0),  # naive means UTC
        "ts_us": "2024-05-01T12:00:00Z",
        "day": "2024-05-01",
        "amount": "12.3",
        "fixed_amount": 7,
        "uid": "12345678-1234-5678-1234-567812345678",
        "status": Status.RETIRED,
        "score": "1.5",
        "attrs": {"a": "2"},
        "flag": "true",
    })
    assert coerced["ts_ms"] == dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert coerced["ts_us"] == dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert coerced["day"] == dt.date(2024, 5, 1)
    assert coerced["amount"] == Decimal("12.3")
    assert coerced["status"] == "RETIRED" and coerced["score"] == 1.5
    assert coerced["attrs"] == {"a": 2} and coerced["flag"] is True
    [decoded] = b.decode(b.context, b.encode(b.context, [coerced]))
    assert decoded["ts_ms"] == coerced["ts_ms"] and decoded["amount"] == Decimal("12.30")
    assert decoded["uid"] == uuid.UUID(coerced["uid"])


def test_coerce_ruby_rules(make: Any) -> None:
    b = make()
    out = b.coerce(b.context, {"id": "12", "name": 5, "tags": [1, 2.5, Shade.BLUE],
                               "color": Shade.RED, "unknown": "dropped"})
    assert out == {"id": 12, "name": "5", "tags": ["1", "2.5", "BLUE"], "color": "RED"}
    assert b.coerce(b.context, {"id": 3.0, "name": True})["id"] == 3
    assert b.coerce(b.context, {"id": 3.0, "name": True})["name"] == "true"


def test_union_of_records_picks_matching_branch(make: Any) -> None:
    b = make()
    base = {"id": 1, "name": "n"}
    for shape in ({"radius": 2}, {"side": "3", "label": "sq"}):
        coerced = b.coerce(b.context, {**base, "shape": shape})
        [decoded] = b.decode(b.context, b.encode(b.context, [coerced]))
        assert set(decoded["shape"]) == set(shape)
    with pytest.raises(CoercionError) as info:
        b.coerce(b.context, {**base, "shape": {"corners": 3}})
    assert info.value.errors[0][0] == "shape"


def test_coercion_error_names_path_expected_and_actual_type(make: Any) -> None:
    b = make()
    with pytest.raises(CoercionError) as info:
        b.coerce(b.context, {"id": "abc", "name": "n", "tags": ["a", "b", {"x": 1}],
                             "part": {"sku": "s", "qty": "many"}})
    errors = dict(info.value.errors)
    assert set(errors) == {"id", "tags[2]", "part.qty"}
    assert "long" in errors["id"] and "str" in errors["id"]
    assert "string" in errors["tags[2]"] and "dict" in errors["tags[2]"]
    assert "'widgets'" in str(info.value)


def test_coercion_rejects_out_of_range_and_lossy(make: Any) -> None:
    b = make(schema="Logical")
    payload = logical_payload()
    with pytest.raises(CoercionError) as info:
        b.coerce(b.context, {**payload, "amount": "1.234", "attrs": {"a": 2**40}})
    assert {p for p, _ in info.value.errors} == {"amount", "attrs[a]"}


def test_validate_reports_every_invalid_field(make: Any) -> None:
    b = make()
    with pytest.raises(SchemaValidationError) as info:
        b.validate(b.context, {"id": "x", "tags": ["a", 2, None], "color": "PINK",
                               "part": {"sku": 1}})
    paths = [p for p, _ in info.value.errors]
    assert paths == ["id", "name", "tags[1]", "tags[2]", "color", "part.sku", "part.qty"]
    assert "missing required field" in dict(info.value.errors)["name"]
    assert "RED, GREEN, BLUE" in dict(info.value.errors)["color"]


def test_encode_without_coerce_raises_with_paths(make: Any) -> None:
    b = make()
    good = {"id": 1, "name": "a"}
    with pytest.raises(SchemaValidationError) as info:
        b.encode(b.context, [good, {"id": 2, "name": None}])
    assert info.value.errors[0][0] == "name" and "message 1" in info.value.errors[0][1]


def test_schema_fields(make: Any) -> None:
    b = make()
    fields = {f.name: f for f in b.fields(b.context)}
    assert fields["id"].type == "long" and not fields["id"].nullable
    assert fields["color"].enum_symbols == ("RED", "GREEN", "BLUE")
    assert fields["color"].has_default and fields["color"].default == "RED"
    assert fields["part"].nullable and fields["part"].type == "com.example.Part"
    assert fields["shape"].type == "com.example.Circle|com.example.Square"
    logical = make(schema="Logical")
    lf = {f.name: f for f in logical.fields(logical.context)}
    assert lf["ts_ms"].type == "timestamp-millis" and lf["score"].type == "double"


def test_reference_across_files(make: Any) -> None:
    b = make()
    b.fields(b.context)  # loads Widget.avsc, which names com.example.Part from Part.avsc
    text = b.context.cache["deimos_avro"].value().schema.text
    assert '"com.example.Part"' in text and '"sku"' in text  # Part.avsc was injected


def test_missing_schema_file_names_full_name_and_paths(make: Any) -> None:
    b = make(schema="Nope")
    with pytest.raises(SchemaError) as info:
        b.fields(b.context)
    msg = str(info.value)
    assert "com.example.Nope" in msg
    assert str(SCHEMAS / "com" / "example" / "Nope.avsc") in msg


def test_missing_referenced_type(make: Any) -> None:
    b = make(schema="Broken")
    with pytest.raises(SchemaError, match=r"com\.example\.Ghost.*Ghost\.avsc"):
        b.fields(b.context)


def test_tombstone_key_and_value(make: Any) -> None:
    b = make(key_config={"field": "id"})
    assert b.coerce(b.context, None) is None
    assert b.encode(b.context, [None]) == [None]
    assert b.encode_key(b.context, [None]) == [None]


def test_producer_validate_reports_every_invalid_field_and_sends_nothing(
        deimos_reset: None) -> None:
    import deimos
    from deimos.testing import sent_messages, test_mode

    deimos.configure(schema={"backend": "avro_local", "path": str(SCHEMAS)})

    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"

    with test_mode():
        with pytest.raises(SchemaValidationError) as info:
            WidgetProducer.validate({"id": "x", "tags": ["a", 2]})
        assert {p for p, _ in info.value.errors} >= {"id", "name", "tags[1]"}
        WidgetProducer.validate({"id": 1, "name": "ok"})  # a valid one passes
        assert sent_messages() == []


def test_the_compiled_checker_accepts_exact_records_only() -> None:
    """The "already right" checker: a missing non-nullable field fails (read by
    subscription), a nullable one reads as None (as with ``.get`` before), a nested record
    is checked, and a record at the top is the checker itself."""
    from fastavro import parse_schema

    from deimos_avro.coercion import compile_checker

    schema = parse_schema({
        "type": "record", "name": "Outer", "namespace": "t", "fields": [
            {"name": "id", "type": "long"},
            {"name": "note", "type": ["null", "string"]},
            {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
                {"name": "n", "type": "int"}]}},
        ]})
    check = compile_checker(schema, {})
    assert check({"id": 1, "note": None, "inner": {"n": 2}})
    assert check({"id": 1, "note": "x", "inner": {"n": 2}})
    assert not check({"idx": 1, "note": None, "inner": {"n": 2}})  # "id" missing
    assert check({"id": 1, "other": None, "inner": {"n": 2}})  # "note" missing: None
    assert not check({"id": 1, "note": None, "inner": {"m": 2}})
    assert not check({"id": "1", "note": None, "inner": {"n": 2}})
    assert not check(None) and not check([])
    assert check.__name__ != "_check"


def test_publish_list_of_dicts_coerces_each_and_names_the_invalid_one(
        deimos_reset: None) -> None:
    """``publish_list``'s loop for plain dicts (keys given, nothing to fill) coerces as the
    per-message preparation does, and an invalid payload is still named by its index."""
    import deimos
    from deimos.testing import sent_messages, test_mode

    deimos.configure(schema={"backend": "avro_local", "path": str(SCHEMAS)})

    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"
        key_config = "plain"

    with test_mode():
        right = {"id": 1, "name": "a", "tags": [], "color": "RED", "part": None,
                 "shape": None}
        sent = WidgetProducer.publish_list([right, {"id": "2", "name": "b"}],
                                           keys=["k1", "k2"])
        assert sent[0].payload is right  # already right: untouched
        assert sent[1].payload["id"] == 2  # coerced
        with pytest.raises(SchemaValidationError) as info:
            WidgetProducer.publish_list([right, {"id": 3, "name": "c"}, {"id": "x"}],
                                        keys=["k1", "k2", "k3"])
        assert all(msg.startswith("message 2:") for _, msg in info.value.errors)
        assert len(sent_messages()) == 2


def test_apublish_fast_path_coerces_and_names_the_invalid_message(deimos_reset: None) -> None:
    """``apublish``'s compiled path (a kafka_async backend, no test mode) prepares a plain
    dict as ``publish`` does: coerced, an invalid one refused naming its field and message,
    a missing key refused, nothing of a refused one queued."""
    import asyncio

    import deimos
    from deimos.errors import MissingKeyError
    from deimos.testing.broker import _free_port

    deimos.configure(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                     schema={"backend": "avro_local", "path": str(SCHEMAS)},
                     producers={"backend": "kafka_async", "config": {"message.timeout.ms": 200}})

    class WidgetProducer(deimos.Producer):
        topic = "widgets"
        schema = "Widget"
        namespace = "com.example"
        key_config = "plain"

    async def main() -> None:
        [m] = await WidgetProducer.apublish({"id": "7", "name": "a"}, key="k")
        assert m.payload["id"] == 7 and m.encoded_key == b"k"
        with pytest.raises(SchemaValidationError) as info:
            await WidgetProducer.apublish({"id": "x", "name": "b"}, key="k")
        assert any(p == "id" and msg.startswith("message 0:") for p, msg in info.value.errors)
        with pytest.raises(MissingKeyError):
            await WidgetProducer.apublish({"id": 1, "name": "c"})

    asyncio.run(main())
    assert deimos.flush(5) == 0  # the one queued message timed out (no broker): nothing left
