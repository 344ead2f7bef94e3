"""The compiled "already right" check of a JSON Schema never passes what the schema refuses:
a payload it passes is published without validation by jsonschema (a false pass would send
an invalid message), so it is compared here with jsonschema itself on payloads near the
edges (bools among integers, floats among integers, None, nested lists)."""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import pytest

from deimos_jsonschema import schemas

ITEMS = [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
         {"type": ["string", "null"]}, {"type": "array"}, {"type": "object"},
         {"type": "integer", "title": "annotated"}, {"type": "integer", "minimum": 0}]
VALUES: list[Any] = ["a", "", 1, 0, -1, 1.5, 1.0, True, False, None, [], ["a"], {}, {"a": 1}]


@pytest.mark.parametrize("items", ITEMS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_the_check_of_an_array_of_typed_items_passes_only_what_jsonschema_accepts(
        items: dict[str, Any]) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"tags": {"type": "array", "items": items}}}
    check = schemas._compile(schema, schema)
    assert check is not None
    valid = jsonschema.Draft202012Validator(schema).is_valid
    lists = [[], *([v] for v in VALUES), *(list(p) for p in itertools.combinations(VALUES, 2))]
    for tags in lists:
        payload = {"tags": tags}
        if any(type(t) is float and t.is_integer() for t in tags):
            # JSON Schema counts 1.0 as an integer; the check leaves it to the slow path
            assert not check(payload) or valid(payload), tags
        else:
            assert check(payload) == valid(payload), f"{items}: {tags!r}"
    assert check({"tags": "not a list"}) is False
