"""Coercion of dict payloads through the descriptor, validation paths and schema_fields."""

from __future__ import annotations

import datetime as dt
import enum
from types import ModuleType
from typing import Any

import pytest

from deimos.errors import CoercionError, SchemaValidationError


class Shade(enum.Enum):
    BLUE = 2


def test_coerce_converts_like_ruby_deimos(make: Any, pb2: dict[str, ModuleType]) -> None:
    b = make(backend="proto_local", protobuf={"decode_as": "message"})
    w = pb2["widget_pb2"]
    msg = b.coerce(b.context, {
        "id": "12", "name": 5, "tags": [1, True], "color": Shade.BLUE, "side": "2.5",
        "part": {"sku": "s", "qty": 3.0, "extra": "dropped"},
        "updated_at": dt.datetime(2024, 5, 1, 12, 0), "counts": {"a": "4"}})
    assert type(msg) is w.Widget
    assert (msg.id, msg.name, list(msg.tags), msg.color, msg.side) == (
        12, "5", ["1", "true"], w.BLUE, 2.5)
    assert msg.part.qty == 3 and dict(msg.counts) == {"a": 4}
    assert msg.updated_at.ToDatetime() == dt.datetime(2024, 5, 1, 12, 0)


def test_message_objects_pass_through_untouched(make: Any, pb2: dict[str, ModuleType]) -> None:
    b = make(backend="proto_local")
    msg = pb2["widget_pb2"].Widget(id=1)
    assert b.coerce(b.context, msg) is msg


def test_every_bad_field_is_reported(make: Any) -> None:
    b = make(backend="proto_local")
    with pytest.raises(CoercionError) as info:
        b.coerce(b.context, {"id": 2**64, "part": {"qty": "x"}, "counts": {"a": "b"},
                             "updated_at": "yesterday", "color": 9.5})
    paths = {p for p, _ in info.value.errors}
    assert paths == {"id", "part.qty", "counts[a]", "updated_at", "color"}
    assert "out of range for int64" in str(info.value)


def test_validate_is_strict_and_names_paths(make: Any) -> None:
    b = make(backend="proto_local")
    b.validate(b.context, {"id": 1, "name": "x", "part": {"sku": "s"}})
    with pytest.raises(SchemaValidationError) as info:
        b.validate(b.context, {"id": "1", "nmae": "typo", "part": {"qty": "2"},
                               "side": 1.0, "radius": 1.0})
    assert sorted(p for p, _ in info.value.errors) == ["id", "nmae", "part.qty", "shape"]


def test_schema_fields(make: Any) -> None:
    b = make(backend="proto_local")
    fields = {f.name: f for f in b.fields(b.context)}
    assert fields["id"].type == "int64" and fields["id"].default == 0
    assert not fields["id"].nullable
    assert fields["tags"].type == "repeated string"
    assert fields["color"].enum_symbols == ("RED", "GREEN", "BLUE")
    assert fields["part"].type == "com.example.Part" and fields["part"].nullable
    assert fields["side"].nullable  # oneof member
    assert fields["counts"].type == "map<string, int32>"


def test_mock_is_proto_local(make: Any) -> None:
    b = make()
    assert b.mock(b.context) == "proto_local"
