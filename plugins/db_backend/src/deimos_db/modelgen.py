"""``deimos db model``: an SQLAlchemy model (and so, through Alembic's autogenerate, a
migration) from a schema, for a record consumer's table (Ruby Deimos's ``rails g
deimos:active_record``).

The schema backend describes the fields (``deimos_schema_fields``), so one generator serves
Avro, Protobuf and JSON Schema: the type names of all three map to column types below, and a
type none of them names (records, arrays, maps, unions of several types) becomes a JSON
column. Strings get ``String(255)`` (MySQL and MariaDB need a length for a key or index);
``created_at``/``updated_at`` are added, as Rails' ``t.timestamps``, for the record consumer
to fill. The output is a starting point that passes ruff and mypy: decimal precision, string
lengths and indexes are the user's to set.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Sequence

from deimos.schema.base import SchemaField

_DATETIME = ("DateTime", "datetime.datetime")
_STRING = ("sa.String(255)", "str")
_BIGINT = ("sa.BigInteger", "int")
_INT = ("sa.Integer", "int")
_DOUBLE = ("sa.Double", "float")

#: schema type name (Avro, Protobuf, JSON Schema) -> (column type, Python type)
COLUMN_TYPES: dict[str, tuple[str, str]] = {
    # Avro primitives and logical types
    "string": _STRING, "int": _INT, "long": _BIGINT, "float": ("sa.Float", "float"),
    "double": _DOUBLE, "boolean": ("sa.Boolean", "bool"), "bytes": ("sa.LargeBinary", "bytes"),
    "timestamp-millis": _DATETIME, "timestamp-micros": _DATETIME,
    "local-timestamp-millis": _DATETIME, "local-timestamp-micros": _DATETIME,
    "date": ("sa.Date", "datetime.date"), "time-millis": ("sa.Time", "datetime.time"),
    "time-micros": ("sa.Time", "datetime.time"),
    "decimal": ("sa.Numeric(38, 9)", "decimal.Decimal"), "uuid": ("sa.String(36)", "str"),
    # Protobuf scalars and well-known types
    "int32": _INT, "sint32": _INT, "sfixed32": _INT, "uint32": _BIGINT, "fixed32": _BIGINT,
    "int64": _BIGINT, "sint64": _BIGINT, "sfixed64": _BIGINT,
    "uint64": ("sa.Numeric(20, 0)", "decimal.Decimal"),
    "fixed64": ("sa.Numeric(20, 0)", "decimal.Decimal"),
    "bool": ("sa.Boolean", "bool"), "google.protobuf.Timestamp": _DATETIME,
    # JSON Schema
    "integer": _BIGINT, "number": _DOUBLE, "string(date-time)": _DATETIME,
    "string(date)": ("sa.Date", "datetime.date"), "string(time)": ("sa.Time", "datetime.time"),
    "string(uuid)": ("sa.String(36)", "str"),
}

_TIMESTAMPS = ("created_at", "updated_at")


#: the line length of the generated module (ruff's and black's default)
WIDTH = 88


def _q(text: str) -> str:
    """A double-quoted Python string literal (the style ruff format and black write)."""
    return json.dumps(text)


def _column_line(attr: str, hint: str, args: list[str]) -> str:
    """One mapped attribute, its arguments wrapped as ruff format would when too long."""
    line = f"    {attr}: Mapped[{hint}] = mapped_column({', '.join(args)})"
    if len(line) <= WIDTH:
        return line
    inner = f"        {', '.join(args)}"
    if len(inner) <= WIDTH:
        return f"    {attr}: Mapped[{hint}] = mapped_column(\n{inner}\n    )"
    return f"    {attr}: Mapped[{hint}] = mapped_column(\n" + "".join(
        f"        {a},\n" for a in args) + "    )"


def _attr(name: str) -> str:
    """A Python attribute for a column name (``class`` -> ``class_``)."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = "_" + ident
    return ident + "_" if keyword.iskeyword(ident) else ident


def column_type(field: SchemaField, table: str) -> tuple[str, str]:
    """``(column type expression, Python type)`` of one schema field."""
    if field.enum_symbols:
        symbols = ", ".join(_q(s) for s in field.enum_symbols)
        length = max(len(s) for s in field.enum_symbols)
        return (f"sa.Enum({symbols}, name={_q(f'{table}_{field.name}')}, native_enum=False, "
                f"length={length})", "str")
    found = COLUMN_TYPES.get(field.type)
    if found is None and field.type.startswith("string("):
        found = _STRING  # a format no column type distinguishes (email, uri ...)
    return found or ("sa.JSON", "Any")


def model_source(fields: Sequence[SchemaField], *, schema: str, table: str, class_name: str,
                 primary_key: str | None = None, base: str | None = None) -> str:
    """The module text of a declarative model for ``fields``.

    :param primary_key: the field to key by; default ``id`` when the schema has one (no
        autoincrement: the messages carry it), else an autoincrement ``id`` is added.
    :param base: ``"package.module:Base"`` to import the declarative base from; default: the
        module declares its own.
    """
    names = [f.name for f in fields]
    pk = primary_key or ("id" if "id" in names else None)
    if pk is not None and pk not in names:
        raise ValueError(f"--primary-key {pk!r}: schema {schema} has no such field (fields: "
                         f"{', '.join(names)})")
    lines: list[str] = []
    uses: set[str] = set()
    if pk is None:
        # SQLite autoincrements only an INTEGER PRIMARY KEY
        lines.append(_column_line("id", "int", [
            'sa.BigInteger().with_variant(sa.Integer, "sqlite")', "primary_key=True",
            "autoincrement=True"]))
    for f in fields:
        if f.name in _TIMESTAMPS:
            continue
        col, py = column_type(f, table)
        uses.update(w for w in ("datetime", "decimal", "Any", "DateTime")
                    if w in py or w in col.split("(")[0])
        nullable = f.nullable and f.name != pk
        hint = f"{py} | None" if nullable else py
        args = [col] if f.name == _attr(f.name) else [_q(f.name), col]
        if f.name == pk:
            args += ["primary_key=True"] + (["autoincrement=False"] if py == "int" else [])
        elif nullable:
            args.append("nullable=True")
        lines.append(_column_line(_attr(f.name), hint, args))
    for ts in _TIMESTAMPS:
        uses.update(("datetime", "DateTime"))
        lines.append(_column_line(ts, "datetime.datetime | None", ["DateTime", "nullable=True"]))
    head = [f'"""The {table} table, from schema {schema} (written by `deimos db model`).',
            "",
            "A starting point: check string lengths, decimal precision and indexes; Alembic's",
            '`revision --autogenerate` turns it into a migration."""', "",
            "from __future__ import annotations", ""]
    head += [f"import {m}" for m in ("datetime", "decimal") if m in uses]
    if "Any" in uses:
        head.append("from typing import Any")
    head += ["", "import sqlalchemy as sa"]
    if "DateTime" in uses:
        head.append("from sqlalchemy.dialects import mysql")
    module, _, base_name = (base or "").partition(":")
    orm = ["Mapped", "mapped_column"] + ([] if base else ["DeclarativeBase"])
    head.append(f"from sqlalchemy.orm import {', '.join(sorted(orm))}")
    if base:
        head.append(f"from {module} import {base_name or 'Base'}")
    body = [""]
    if not base:
        body += ["", "class Base(DeclarativeBase):", "    pass", ""]
    if "DateTime" in uses:
        body += ["", "#: time-zone aware; microseconds on MySQL and MariaDB",
                 "DateTime = sa.DateTime(timezone=True).with_variant(",
                 '    mysql.DATETIME(fsp=6), "mysql", "mariadb"', ")", ""]
    body += ["", f"class {class_name}({base_name or 'Base'}):",
             f"    __tablename__ = {_q(table)}", "", *lines, ""]
    return "\n".join(head + body)
