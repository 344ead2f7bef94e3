"""Avro schema compatibility: whether data written with one schema reads with another.

Apache Avro's own checker (``avro.compatibility``, the Python port of Java's
``SchemaCompatibility`` that Confluent's registry uses) decides, rather than a hand-written
copy of the resolution rules. Two callers: the development registry's
``POST /compatibility/...`` (through the ``deimos_registry_compatibility`` hook; a real
registry checks by itself) and :func:`schemas_compatible`, Ruby Deimos's
``TestHelpers.schemas_compatible?``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import avro.compatibility as _compat
import avro.schema as _schema


def _parse(schema: str | Mapping[str, Any] | list[Any]) -> Any:
    """An Avro schema from its JSON text, a file path or the parsed JSON."""
    if isinstance(schema, str):
        text = schema.strip()
        if not text.startswith(("{", "[", '"')) and os.path.exists(schema):
            with open(schema, encoding="utf-8") as f:
                text = f.read()
        return _schema.parse(text)
    return _schema.parse(json.dumps(schema))


def incompatibilities(reader: str | Mapping[str, Any], writer: str | Mapping[str, Any]
                      ) -> list[str]:
    """What stops ``reader`` from reading data written with ``writer`` (empty: nothing),
    each with the JSON path of the part of the reader at fault."""
    result = _compat.ReaderWriterCompatibilityChecker().get_compatibility(
        _parse(reader), _parse(writer))
    if result.compatibility is _compat.SchemaCompatibilityType.compatible:
        return []
    kinds = [getattr(k, "value", str(k)) for k in result.incompatibilities]
    names = sorted(str(m) for m in result.messages)
    return [f"{kind} at {loc}" + (f" ({', '.join(names)})" if names else "")
            for kind, loc in zip(kinds, sorted(result.locations), strict=False)] or [
        "incompatible"]


def schemas_compatible(schema1: str | Mapping[str, Any], schema2: str | Mapping[str, Any]
                       ) -> bool:
    """Whether each schema reads data written with the other (Ruby Deimos's
    ``schemas_compatible?``: ``FULL`` compatibility between two versions). Each is a JSON
    text, a path to an ``.avsc`` file or the parsed JSON."""
    return not incompatibilities(schema1, schema2) and not incompatibilities(schema2, schema1)
