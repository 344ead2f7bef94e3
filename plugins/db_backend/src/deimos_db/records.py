"""What record producers, record consumers and the DB poller share: a model's columns and the
conversions between column values and schema values.

Schemas speak in ints, strings and floats (Avro ``timestamp-millis`` is a long, a JSON Schema
``date-time`` is a string); columns in ``datetime``, ``Decimal`` and ``UUID``. The conversions
here are the ones a hand-written mapper always ends up with, so the default hooks need none.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import uuid
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa

from deimos.schema.base import SchemaField

from .engine import utcnow

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_DATE = _dt.date(1970, 1, 1)


@cache
def table_of(model: Any) -> sa.Table:
    """The ``Table`` of a mapped class (or the table itself)."""
    if isinstance(model, sa.Table):
        return model
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table), f"{model!r} is not mapped to a single table"
    return table


@cache
def column_attrs(model: Any) -> dict[str, str]:
    """Column name -> mapped attribute key of a mapped class (they differ when a column is
    mapped under another name)."""
    mapper = sa.inspect(model)
    out: dict[str, str] = {}
    for prop in mapper.column_attrs:
        for col in prop.columns:
            if isinstance(col, sa.Column) and col.table is mapper.local_table:
                out[col.name] = prop.key
    return out


def plain_columns(model: Any) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
    """What :func:`record_dict` reads of an instance of ``model``: the column names and the
    mapped attributes (in its order), for reading rows as dicts of column values without
    loading instances. Attributes rather than table columns, so a select of them stays a
    select of the entity for the ORM (``with_loader_criteria`` filters set in
    ``do_orm_execute`` still apply). None when an instance may hold columns its class does
    not map (inheritance) or an attribute maps several columns."""
    if isinstance(model, sa.Table):
        return None
    mapper = sa.inspect(model)
    if (mapper.inherits is not None or mapper.polymorphic_on is not None
            or len(list(mapper.self_and_descendants)) > 1):
        return None
    attrs: dict[str, Any] = {}
    for prop in mapper.column_attrs:  # as column_attrs reads them
        local = [c for c in prop.columns
                 if isinstance(c, sa.Column) and c.table is mapper.local_table]
        if len(local) > 1:
            return None
        if local:
            attrs[local[0].name] = getattr(model, prop.key)
    return tuple(attrs), tuple(attrs.values())


def primary_key_names(model: Any) -> list[str]:
    return [c.name for c in table_of(model).primary_key.columns]


def record_dict(record: Any) -> dict[str, Any]:
    """A mapped instance's column values by column name (unloaded/expired columns are read)."""
    if isinstance(record, Mapping):
        return dict(record)
    attrs: dict[str, str] = column_attrs(type(record))  # type: ignore[arg-type]
    return {col: getattr(record, attr) for col, attr in attrs.items()}


def string_limits(table: sa.Table) -> dict[str, int]:
    """Column name -> length of the table's string columns that have one (not enums: a
    value cut short would be another, or no, symbol)."""
    return {c.name: c.type.length for c in table.c
            if isinstance(c.type, sa.String) and not isinstance(c.type, sa.Enum)
            and c.type.length}


def truncate_strings(values: dict[str, Any], limits: Mapping[str, int]) -> dict[str, Any]:
    """``values`` with each string longer than its column cut to the column's length (Ruby
    Deimos's ``truncate_columns``): PostgreSQL and MariaDB refuse a longer value, SQLite
    would store it whole."""
    for name, n in limits.items():
        v = values.get(name)
        if type(v) is str and len(v) > n:
            values[name] = v[:n]
    return values


class Stamps:
    """The automatic ``created_at``/``updated_at`` of a table's written rows: naive UTC for a
    naive column (the same on every database), aware UTC for a ``DateTime(timezone=True)``
    one, because a naive value is read in the session's ``TimeZone`` there."""

    __slots__ = ("aware", "names")

    def __init__(self, table: sa.Table, skip: Sequence[str] = ()) -> None:
        self.names = tuple(n for n in ("created_at", "updated_at")
                           if n in table.c and n not in skip)
        self.aware = frozenset(n for n in self.names
                               if getattr(table.c[n].type, "timezone", False))

    def now(self) -> dict[str, _dt.datetime]:
        now = utcnow()
        aware = now.replace(tzinfo=_dt.timezone.utc)
        return {n: aware if n in self.aware else now for n in self.names}


# ---------------------------------------------------------------------------------------------
# column value -> schema value (producers)
# ---------------------------------------------------------------------------------------------

_INT_TYPES = {"int", "long", "integer", "int32", "int64", "uint32", "uint64", "sint32",
              "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"}
_FLOAT_TYPES = {"float", "double", "number"}


def _base_type(t: str) -> str:
    # "timestamp-millis" / "long(timestamp-millis)" / "union[null,long]" ...: the last word
    t = t.lower()
    for word in ("timestamp-micros", "timestamp-millis", "date", "date-time", "uuid"):
        if word in t:
            return word
    for word in sorted(_INT_TYPES | _FLOAT_TYPES | {"string", "boolean", "bytes"},
                       key=len, reverse=True):
        if word in t:
            return word
    return t


def to_schema_value(value: Any, field: SchemaField | None) -> Any:
    """A column value as the schema field wants it (``field=None``: JSON-friendly)."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    kind = _base_type(field.type) if field is not None else "string"
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        if kind == "timestamp-micros":
            return int((aware - _EPOCH) / _dt.timedelta(microseconds=1))
        if kind in _INT_TYPES or kind == "timestamp-millis":
            return int((aware - _EPOCH) / _dt.timedelta(milliseconds=1))
        return value.isoformat()
    if isinstance(value, _dt.date):
        if kind in _INT_TYPES or kind == "date":  # Avro's date: days since the epoch
            return (value - _EPOCH_DATE).days
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if kind in _FLOAT_TYPES:
            return float(value)
        if kind in _INT_TYPES:
            return int(value)
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name if field is not None and field.enum_symbols else value.value
    return value


# ---------------------------------------------------------------------------------------------
# schema value -> column value (consumers)
# ---------------------------------------------------------------------------------------------


def converter_for(column: sa.Column[Any]) -> Any:
    """A function turning a payload value into what ``column`` stores, or None when the value
    can go in as it is (decided once per column, not per value)."""
    try:
        py = column.type.python_type
    except NotImplementedError:
        return None
    if py is _dt.datetime:
        aware = bool(getattr(column.type, "timezone", False))

        def to_datetime(v: Any) -> Any:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                t = _EPOCH + _dt.timedelta(milliseconds=v)
            elif isinstance(v, str):
                t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            else:
                return v
            if t.tzinfo is not None and not aware:
                t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
            elif t.tzinfo is None and aware:
                # a time without offset means UTC, as epoch millis do; left naive, a
                # timestamptz column would read it in the session's TimeZone
                t = t.replace(tzinfo=_dt.timezone.utc)
            return t
        return to_datetime
    if py is _dt.date:
        def to_date(v: Any) -> Any:
            if isinstance(v, int) and not isinstance(v, bool):
                return _EPOCH_DATE + _dt.timedelta(days=v)
            if isinstance(v, str):
                return _dt.date.fromisoformat(v[:10])
            return v
        return to_date
    if py is decimal.Decimal:
        return lambda v: decimal.Decimal(str(v)) if isinstance(v, (int, float, str)) else v
    if py is uuid.UUID:
        return lambda v: uuid.UUID(v) if isinstance(v, str) else v
    return None
