"""Finding and parsing ``.avsc`` files, generated key schemas and ``schema_fields``.

Parsing is fastavro's (``load_schema`` with a repository that maps full names to files, so
named types referenced across files are injected for us). Each schema is parsed once per
process and directory; contexts keep a reference in ``context.cache``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from fastavro.repository.base import AbstractSchemaRepository, SchemaRepositoryError
from fastavro.schema import (
    UnknownType,
    expand_schema,
    fingerprint,
    load_schema,
    parse_schema,
    to_parsing_canonical_form,
)

from deimos.errors import SchemaError
from deimos.schema.base import SchemaField

PRIMITIVES = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


@dataclass
class AvroSchema:
    """One parsed schema and what the codecs derive from it."""

    full_name: str
    #: the schema with every referenced named type injected (JSON-able, no fastavro markers)
    raw: Any
    #: fastavro's parsed form, used by the writer/reader
    parsed: Any
    #: named types by full name (references in ``raw``/``parsed`` point here)
    named: dict[str, Any]
    #: what is registered in the schema registry: the ``.avsc`` file's own text (stripped) for
    #: a self-contained file, exactly what confluent-kafka's ``AvroSerializer`` registers for
    #: it (so both get one id and one version on any registry); ``raw`` as compact JSON for a
    #: schema that pulls named types from other files, and for generated key schemas
    text: str
    canonical: str = field(init=False)

    def __post_init__(self) -> None:
        _intern(self.parsed, set())
        self.canonical = to_parsing_canonical_form(self.parsed)

    @property
    def fingerprint(self) -> bytes:
        """CRC-64-AVRO of the canonical form, little-endian (Avro single-object encoding)."""
        return bytes.fromhex(fingerprint(self.canonical, "CRC-64-AVRO"))

    @property
    def namespace(self) -> str:
        return self.full_name.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.full_name.rpartition(".")[2]


def _intern(node: Any, seen: set[int]) -> Any:
    """``node`` with every string in it interned, in place (dicts and lists keep their
    identity). Why: fastavro's writer and reader compare each field's type name with their
    own literals once per datum, and a string read by ``json`` is a copy, so each such
    comparison is a ``memcmp`` instead of an identity check (measured: a 6-field record
    written with a schema from a file cost 5 % more than with the same schema as a Python
    literal)."""
    if type(node) is str:
        return sys.intern(node)
    if id(node) in seen:
        return node
    if isinstance(node, dict):
        seen.add(id(node))
        items = [(sys.intern(k) if type(k) is str else k, _intern(v, seen))
                 for k, v in node.items()]
        node.clear()
        node.update(items)
    elif isinstance(node, list):
        seen.add(id(node))
        node[:] = [_intern(v, seen) for v in node]
    return node


def registered_text(text: str) -> str:
    """The schema string confluent-kafka's ``AvroSerializer`` registers for schema text
    ``text`` (``_schema_loads``: stripped; a bare primitive name wrapped in ``{"type": ...}``)."""
    text = text.strip()
    if text[:1] not in ("{", "["):
        text = '{"type":' + text + "}"
    return text


def from_dict(raw: Any, full_name: str | None = None, text: str | None = None) -> AvroSchema:
    """An :class:`AvroSchema` from a schema dict (generated key schemas, registry schemas);
    ``text`` is what to register (default: the parsed schema as compact JSON)."""
    named: dict[str, Any] = {}
    parsed = parse_schema(raw, named_schemas=named)
    plain = parse_schema(raw, _write_hint=False, named_schemas={})
    if full_name is None:
        full_name = plain.get("name", "") if isinstance(plain, dict) else str(plain)
    if text is None:
        text = json.dumps(plain, separators=(",", ":"))
    return AvroSchema(full_name, plain, parsed, named, text)


class _NestedRepository(AbstractSchemaRepository):
    """``com.example.Widget`` -> ``<root>/com/example/Widget.avsc`` (Ruby Deimos / avro_turf
    layout), falling back to the flat ``<root>/com.example.Widget.avsc``; remembers every path
    it tried so a missing file can be reported with them."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.searched: list[str] = []
        #: file text of every name loaded, in load order
        self.texts: dict[str, str] = {}

    def candidates(self, name: str) -> list[str]:
        return [os.path.join(self.root, *name.split(".")) + ".avsc",
                os.path.join(self.root, name + ".avsc")]

    def load(self, name: str) -> Any:
        for path in self.candidates(name):
            if path not in self.searched:
                self.searched.append(path)
            try:
                with open(path) as f:
                    text = f.read()
                loaded = json.loads(text)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise SchemaError(f"Avro schema file {path} cannot be read: {exc}") from exc
            self.texts[name] = text
            return loaded
        raise SchemaRepositoryError(name)


_cache: dict[tuple[str, str], AvroSchema] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget parsed schema files (tests that rewrite ``.avsc`` files in place)."""
    with _cache_lock:
        _cache.clear()


def load(root: str, full_name: str) -> AvroSchema:
    """The schema ``full_name`` from directory ``root``, parsed once per process."""
    key = (os.path.abspath(root), full_name)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    repo = _NestedRepository(key[0])
    try:
        raw = load_schema(full_name, repo=repo, _write_hint=False)
    except SchemaRepositoryError:
        raise SchemaError(
            f"Avro schema {full_name!r} not found; searched: {', '.join(repo.searched)} "
            "(set schema.path to the directory holding your .avsc files)"
        ) from None
    except UnknownType as exc:
        # fastavro re-raises UnknownType when a referenced type has no file either.
        missing = exc.name
        raise SchemaError(
            f"Avro schema {full_name!r} references type {missing!r}, which is not defined in "
            f"it and has no file; searched: {', '.join(repo.candidates(missing))}"
        ) from None
    except SchemaError:
        raise
    except Exception as exc:  # fastavro's SchemaParseException, ValueError, ...
        raise SchemaError(f"Avro schema {full_name!r} in {key[0]} is invalid: {exc}") from exc
    # A file that needed no other file is registered as its own text, like AvroSerializer.
    own = repo.texts.get(full_name)
    text = registered_text(own) if own is not None and len(repo.texts) == 1 else None
    schema = from_dict(raw, full_name, text)
    with _cache_lock:
        _cache[key] = schema
    return schema


def resolve(node: Any, named: dict[str, Any]) -> Any:
    """Follow a reference to a named type."""
    while isinstance(node, str) and node not in PRIMITIVES:
        node = named[node]
    return node


def key_schema(value: AvroSchema, field_path: str) -> AvroSchema:
    """The key schema Ruby Deimos generates for ``key_config field: x``: a record
    ``<Name>_key`` in the value's namespace holding that one field (dotted paths allowed)."""
    node: Any = expand_schema(value.raw)
    ftype: Any = None
    parts = field_path.split(".")
    for i, part in enumerate(parts):
        fields = node.get("fields", []) if isinstance(node, dict) else []
        match = next((f for f in fields if f["name"] == part), None)
        if match is None:
            raise SchemaError(
                f"key_config field {field_path!r} is not a field of Avro schema "
                f"{value.full_name!r}")
        ftype = match["type"]
        if i < len(parts) - 1:
            node = ftype if isinstance(ftype, dict) else None
    raw = {
        "type": "record",
        "name": f"{value.name}_key",
        "namespace": value.namespace,
        "doc": f"Key for {value.full_name} - autogenerated by deimos",
        "fields": [{"name": parts[-1], "type": ftype}],
    }
    if not value.namespace:
        del raw["namespace"]
    return from_dict(raw)


def type_name(node: Any, named: dict[str, Any]) -> str:
    """A short type name: primitive, logical type, named type's full name, array, map."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "|".join(type_name(b, named) for b in node)
    if "logicalType" in node:
        return str(node["logicalType"])
    t = node["type"]
    if t in ("record", "enum", "fixed", "error"):
        return str(node.get("name", t))
    return str(t)


def fields_of(schema: AvroSchema) -> list[SchemaField]:
    """``schema_fields``: nullable unions report their other type and ``nullable=True``."""
    top = resolve(schema.raw, schema.named)
    if not isinstance(top, dict) or top.get("type") not in ("record", "error"):
        return []
    out = []
    for f in top["fields"]:
        ftype = f["type"]
        nullable = False
        if isinstance(ftype, list):
            others = [b for b in ftype if b != "null"]
            nullable = len(others) < len(ftype)
            ftype = others[0] if len(others) == 1 else others
        resolved = resolve(ftype, schema.named) if not isinstance(ftype, list) else ftype
        symbols = None
        if isinstance(resolved, dict) and resolved.get("type") == "enum":
            symbols = tuple(resolved["symbols"])
        out.append(SchemaField(
            name=f["name"],
            type=type_name(ftype, schema.named),
            default=f.get("default"),
            has_default="default" in f,
            nullable=nullable or ftype == "null",
            enum_symbols=symbols,
        ))
    return out
