"""Coercion (Ruby Deimos's rules plus Python types) and validation with field paths.

Written by hand because fastavro has neither: its ``validate`` stops at the first bad field
and converts nothing. Leaf checks still defer to fastavro's ``validate``.

For speed, each schema gets a *checker* compiled once from generated Python source: a
straight-line function that answers "is this payload already exactly right?" in well under a
microsecond, so ``coerce`` returns correct payloads untouched and only walks the schema (and
copies) when something needs converting.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from fastavro.validation import validate as _fa_validate

from deimos.errors import CoercionError

from .schemas import PRIMITIVES

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_INT_STR = re.compile(r"\s*[-+]?\d+\s*\Z")
_MISSING = object()


# ---------------------------------------------------------------------------------------------
# The compiled "already right" checker
# ---------------------------------------------------------------------------------------------


class _CheckerGen:
    """Generates one function per complex node; primitives are inlined as expressions."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.src: list[str] = []
        self.env: dict[str, Any] = {
            "_datetime": _dt.datetime, "_date": _dt.date, "_time": _dt.time,
            "_UUID": uuid.UUID, "_Decimal": Decimal,
        }
        self.by_name: dict[str, str] = {}
        self.n = 0

    def expr(self, node: Any, v: str) -> str:
        if isinstance(node, str):
            if node == "null":
                return f"{v} is None"
            if node == "boolean":
                return f"type({v}) is bool"
            if node == "int":
                return f"(type({v}) is int and {INT_MIN} <= {v} <= {INT_MAX})"
            if node == "long":
                return f"(type({v}) is int and {LONG_MIN} <= {v} <= {LONG_MAX})"
            if node in ("float", "double"):
                return f"type({v}) is float"
            if node == "string":
                return f"type({v}) is str"
            if node == "bytes":
                return f"type({v}) is bytes"
            return f"{self.func(self.named[node])}({v})"
        if isinstance(node, list):
            if len(node) == 2 and "null" in node:
                other = node[1] if node[0] == "null" else node[0]
                return f"({v} is None or {self.expr(other, v)})"
            return f"{self.func(node)}({v})"
        logical = node.get("logicalType")
        t = node["type"]
        if logical in ("timestamp-millis", "timestamp-micros") and t == "long":
            return (f"((type({v}) is _datetime and {v}.tzinfo is not None) or "
                    f"{self.expr('long', v)})")
        if logical in ("local-timestamp-millis", "local-timestamp-micros") and t == "long":
            return f"(type({v}) is _datetime or {self.expr('long', v)})"
        if logical == "date" and t == "int":
            return f"(type({v}) is _date or {self.expr('int', v)})"
        if logical in ("time-millis", "time-micros"):
            return f"(type({v}) is _time or {self.expr(t, v)})"
        if logical == "uuid" and t == "string":
            return f"(type({v}) is _UUID or type({v}) is str)"
        if logical == "decimal" and t in ("bytes", "fixed"):
            scale = int(node.get("scale", 0))
            return (f"(type({v}) is _Decimal and {v}.is_finite() and "
                    f"{v}.as_tuple().exponent >= {-scale})")
        if t in PRIMITIVES:
            return self.expr(t, v)
        return f"{self.func(node)}({v})"

    def func(self, node: Any) -> str:
        name = node.get("name") if isinstance(node, dict) else None
        if name is not None and name in self.by_name:
            return self.by_name[name]
        self.n += 1
        fname = f"_c{self.n}"
        if name is not None:
            self.by_name[name] = fname  # before the body: recursive types call themselves
        body: list[str] = []
        t = node["type"] if isinstance(node, dict) else "union"
        if t in ("record", "error"):
            fields = node["fields"]
            body.append(f"if type(v) is not dict or len(v) != {len(fields)}: return False")
            # a field that cannot be None is read by subscription (a missing one fails as
            # None would: KeyError), cheaper than ``.get``; a nullable one keeps ``.get``
            body.append("try:")
            for f in fields:
                ft = f["type"]
                nullable = ft == "null" or (isinstance(ft, list) and "null" in ft)
                body.append(f"    x = v.get({f['name']!r})" if nullable
                            else f"    x = v[{f['name']!r}]")
                items = _primitive_items(ft)
                if items is not None:  # an array of primitives: its loop here, no call
                    body += ["    if type(x) is not list: return False", "    for y in x:",
                             f"        if not ({self.expr(items, 'y')}): return False"]
                else:
                    body.append(f"    if not ({self.expr(ft, 'x')}): return False")
            body += ["except KeyError:", "    return False", "return True"]
        elif t == "enum":
            self.env[f"_s{self.n}"] = frozenset(node["symbols"])
            body.append(f"return type(v) is str and v in _s{self.n}")
        elif t == "fixed":
            body.append(f"return type(v) is bytes and len(v) == {int(node['size'])}")
        elif t == "array":
            body += ["if type(v) is not list: return False", "for x in v:",
                     f"    if not ({self.expr(node['items'], 'x')}): return False",
                     "return True"]
        elif t == "map":
            body += ["if type(v) is not dict: return False", "for k, x in v.items():",
                     f"    if type(k) is not str or not ({self.expr(node['values'], 'x')}):",
                     "        return False", "return True"]
        elif t == "union":
            body.append("return " + " or ".join(f"({self.expr(b, 'v')})" for b in node))
        else:
            body.append("return False")
        self.src.append(f"def {fname}(v):\n" + "\n".join("    " + line for line in body))
        return fname

    def compile(self, node: Any) -> Callable[[Any], bool]:
        top = self.expr(node, "v")
        self.src.append(f"def _check(v):\n    return {top}")
        exec(compile("\n\n".join(self.src), "<deimos-avro checker>", "exec"), self.env)
        direct = re.fullmatch(r"(_c\d+)\(v\)", top)
        # a record at the top: its own function, without a call level around it
        return self.env[direct[1] if direct else "_check"]


def _primitive_items(node: Any) -> str | None:
    """The item type of an array of a primitive type (not nullable), else None."""
    if isinstance(node, dict) and node.get("type") == "array" \
            and isinstance(node.get("items"), str) and node["items"] in PRIMITIVES:
        return str(node["items"])
    return None


def compile_checker(parsed: Any, named: dict[str, Any]) -> Callable[[Any], bool]:
    """A function telling whether a datum needs no coercion at all for ``parsed``."""
    return _CheckerGen(named).compile(parsed)


# ---------------------------------------------------------------------------------------------
# Coercion (the slow path)
# ---------------------------------------------------------------------------------------------


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union [" + ", ".join(_describe(b) for b in node) + "]"
    if "logicalType" in node:
        return f"{node['logicalType']} ({node['type']})"
    if "name" in node:
        return f"{node['type']} {node['name']}"
    if node["type"] == "array":
        return f"array of {_describe(node['items'])}"
    if node["type"] == "map":
        return f"map of {_describe(node['values'])}"
    return str(node["type"])


class _Fail(Exception):
    """Internal: this value cannot become this type (message is filled by the caller)."""


def _as_dict(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        return d if isinstance(d, Mapping) else None
    return None


def _to_int(value: Any, lo: int, hi: int) -> int:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        raise _Fail
    if isinstance(value, int):
        out = value
    elif isinstance(value, bytes):
        return _to_int(value.decode(errors="replace"), lo, hi)
    elif (isinstance(value, (float, Decimal)) and value == value and value % 1 == 0) or (
            isinstance(value, str) and _INT_STR.match(value)):
        out = int(value)
    else:
        raise _Fail
    if not lo <= out <= hi:
        raise _Fail
    return out


def _to_float(value: Any) -> float:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        raise _Fail
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _Fail from None
    raise _Fail


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name
    if isinstance(value, bool):
        return "true" if value else "false"  # as Ruby's to_s, and what JSON consumers expect
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise _Fail from None
    if isinstance(value, (int, float, Decimal, uuid.UUID)):
        return str(value)
    if value is None or isinstance(value, (Mapping, list, tuple, set, frozenset)):
        raise _Fail
    if type(value).__str__ is not object.__str__:
        return str(value)
    raise _Fail


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise _Fail


def _to_datetime(value: Any, aware: bool) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z")
                                               else text)
        except ValueError:
            if _INT_STR.match(text):
                return int(text)
            raise _Fail from None
    if isinstance(value, _dt.datetime):
        if aware and value.tzinfo is None:
            # fastavro would read a naive datetime as *local* time; deimos means UTC.
            return value.replace(tzinfo=_dt.timezone.utc)
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day,
                            tzinfo=_dt.timezone.utc if aware else None)
    return _to_int(value, LONG_MIN, LONG_MAX)


def _to_date(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    return _to_int(value, INT_MIN, INT_MAX)


def _to_time(value: Any, base: str) -> Any:
    if isinstance(value, _dt.time):
        return value
    if isinstance(value, str):
        try:
            return _dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    return _to_int(value, INT_MIN, INT_MAX) if base == "int" else _to_int(value, LONG_MIN,
                                                                            LONG_MAX)


def _to_decimal(value: Any, scale: int) -> Decimal:
    if isinstance(value, bool):
        raise _Fail
    try:
        d = value if isinstance(value, Decimal) else Decimal(
            str(value).strip() if isinstance(value, (int, float, str)) else "x")
    except InvalidOperation:
        raise _Fail from None
    if not d.is_finite():
        raise _Fail
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -scale:
        q = d.quantize(Decimal(1).scaleb(-scale))
        if q != d:
            raise _Fail  # would lose digits: refuse rather than round silently
        d = q
    return d


class Coercer:
    """Converts a datum to the types of a parsed schema, or raises :class:`CoercionError`."""

    def __init__(self, named: dict[str, Any], check: Callable[[Any, Any], bool]) -> None:
        self.named = named
        self.check = check  # exact-match test for union branches

    def error(self, path: str, node: Any, value: Any, why: str = "") -> CoercionError:
        msg = f"cannot coerce {type(value).__name__} to {_describe(node)}"
        return CoercionError([(path, msg + (f" ({why})" if why else ""))])

    def coerce(self, node: Any, value: Any, path: str) -> Any:
        if isinstance(node, str) and node not in PRIMITIVES:
            node = self.named[node]
        try:
            return self._coerce(node, value, path)
        except _Fail:
            raise self.error(path, node, value) from None

    def _coerce(self, node: Any, value: Any, path: str) -> Any:
        if isinstance(node, list):
            return self._union(node, value, path)
        if isinstance(node, dict):
            logical = node.get("logicalType")
            t = node["type"]
            if logical is not None:
                if logical in ("timestamp-millis", "timestamp-micros"):
                    return _to_datetime(value, aware=True)
                if logical in ("local-timestamp-millis", "local-timestamp-micros"):
                    return _to_datetime(value, aware=False)
                if logical == "date":
                    return _to_date(value)
                if logical in ("time-millis", "time-micros"):
                    return _to_time(value, t)
                if logical == "uuid":
                    if isinstance(value, uuid.UUID):
                        return value
                    text = _to_str(value)
                    try:
                        uuid.UUID(text)
                    except ValueError:
                        raise self.error(path, node, value, "not a UUID") from None
                    return text
                if logical == "decimal":
                    try:
                        return _to_decimal(value, int(node.get("scale", 0)))
                    except _Fail:
                        raise self.error(path, node, value,
                                         f"not a number with at most {node.get('scale', 0)} "
                                         "decimal places") from None
            if t in ("record", "error"):
                return self._record(node, value, path)
            if t == "array":
                if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                    raise _Fail
                items = node["items"]
                return [self.coerce(items, x, f"{path}[{i}]") for i, x in enumerate(value)]
            if t == "map":
                m = _as_dict(value)
                if m is None:
                    raise _Fail
                values = node["values"]
                return {str(k): self.coerce(values, x, f"{path}[{k}]") for k, x in m.items()}
            if t == "enum":
                symbols = node["symbols"]
                if isinstance(value, enum.Enum):
                    for cand in (value.name, value.value):
                        if cand in symbols:
                            return cand
                if isinstance(value, str) and value in symbols:
                    return value
                raise self.error(path, node, value, f"symbols: {', '.join(symbols)}")
            if t == "fixed":
                if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == int(
                        node["size"]):
                    return bytes(value)
                raise _Fail
            node = t
        if node == "null":
            if value is None:
                return None
            raise _Fail
        if value is None:
            raise CoercionError([(path, f"missing value: expected {_describe(node)}, got None")])
        if node == "boolean":
            return _to_bool(value)
        if node == "int":
            return _to_int(value, INT_MIN, INT_MAX)
        if node == "long":
            return _to_int(value, LONG_MIN, LONG_MAX)
        if node in ("float", "double"):
            return _to_float(value)
        if node == "string":
            return _to_str(value)
        if node == "bytes":
            if isinstance(value, (bytearray, memoryview)):
                return bytes(value)
            if isinstance(value, bytes):
                return value
            if isinstance(value, str):
                return value.encode()
            raise _Fail
        return self.coerce(node, value, path)  # a named reference

    def _record(self, node: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
        m = _as_dict(value)
        if m is None:
            raise _Fail
        out: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for f in node["fields"]:
            name = f["name"]
            v = m.get(name, _MISSING)
            if v is _MISSING:
                continue  # the writer fills defaults; validation reports missing fields
            try:
                out[name] = self.coerce(f["type"], v, _join(path, name))
            except CoercionError as exc:
                errors.extend(exc.errors)
        if errors:
            raise CoercionError(errors)
        return out

    def _union(self, branches: list[Any], value: Any, path: str) -> Any:
        if value is None and "null" in branches:
            return None
        for b in branches:  # an exact match wins, whatever its position
            if b != "null" and self.check(b, value):
                return value
        m = _as_dict(value)
        tried: list[CoercionError] = []
        for b in branches:
            if b == "null":
                continue
            rb = self.named.get(b, b) if isinstance(b, str) else b
            if m is not None and isinstance(rb, dict) and rb.get("type") in ("record", "error"):
                names = {f["name"] for f in rb["fields"]}
                required = {f["name"] for f in rb["fields"]
                            if "default" not in f and not _nullable(f["type"])}
                if not (set(m) <= names and required <= set(m)):
                    continue
            try:
                return self.coerce(b, value, path)
            except CoercionError as exc:
                tried.append(exc)
        if len(tried) == 1:
            raise tried[0]  # a single candidate branch: its errors name the inner fields
        raise CoercionError([(path, f"cannot coerce {type(value).__name__} to any branch of "
                                    f"{_describe(branches)}")])


def _nullable(node: Any) -> bool:
    return node == "null" or (isinstance(node, list) and "null" in node)


# ---------------------------------------------------------------------------------------------
# Validation with every bad path
# ---------------------------------------------------------------------------------------------


class Validator:
    """Collects ``(path, message)`` for every invalid field (fastavro checks the leaves)."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named

    def errors(self, node: Any, value: Any, path: str = "") -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._walk(node, value, path, out)
        return out

    def _walk(self, node: Any, value: Any, path: str, out: list[tuple[str, str]]) -> None:
        if isinstance(node, str) and node not in PRIMITIVES:
            node = self.named[node]
        if isinstance(node, list):
            self._union(node, value, path, out)
            return
        t = node["type"] if isinstance(node, dict) else node
        if t in ("record", "error"):
            m = _as_dict(value)
            if m is None:
                out.append((path, f"expected {_describe(node)}, got {type(value).__name__}"))
                return
            for f in node["fields"]:
                name = f["name"]
                v = m.get(name, _MISSING)
                if v is _MISSING:
                    if "default" in f or _nullable(f["type"]):
                        continue
                    out.append((_join(path, name),
                                f"missing required field of type {_describe(f['type'])}"))
                    continue
                self._walk(f["type"], v, _join(path, name), out)
            return
        if t == "array" and isinstance(node, dict) and "logicalType" not in node:
            if not isinstance(value, (list, tuple)):
                out.append((path, f"expected {_describe(node)}, got {type(value).__name__}"))
                return
            for i, x in enumerate(value):
                self._walk(node["items"], x, f"{path}[{i}]", out)
            return
        if t == "map" and isinstance(node, dict):
            if not isinstance(value, Mapping):
                out.append((path, f"expected {_describe(node)}, got {type(value).__name__}"))
                return
            for k, x in value.items():
                if not isinstance(k, str):
                    out.append((f"{path}[{k}]", f"map keys must be strings, got "
                                                f"{type(k).__name__}"))
                self._walk(node["values"], x, f"{path}[{k}]", out)
            return
        if not self._leaf_ok(node, value):
            why = ""
            if isinstance(node, dict) and node.get("type") == "enum":
                why = f" (symbols: {', '.join(node['symbols'])})"
            out.append((path, f"expected {_describe(node)}, got {type(value).__name__}{why}"))

    def _leaf_ok(self, node: Any, value: Any) -> bool:
        if isinstance(value, bool) and node in ("int", "long", "float", "double"):
            return False  # fastavro accepts bool as int; Avro (and the Ruby gem) do not
        if isinstance(node, dict) and node.get("logicalType") in (
                "timestamp-millis", "timestamp-micros", "date", "time-millis", "time-micros",
                "local-timestamp-millis", "local-timestamp-micros", "decimal", "uuid"):
            try:
                Coercer(self.named, lambda n, v: False)._coerce(node, value, "")
                return True
            except (_Fail, CoercionError):
                return False
        return bool(_fa_validate(value, node, raise_errors=False))

    def _union(self, branches: list[Any], value: Any, path: str,
               out: list[tuple[str, str]]) -> None:
        records = []
        for b in branches:
            if not self.errors(b, value, path):
                return
            rb = self.named.get(b, b) if isinstance(b, str) else b
            if isinstance(rb, dict) and rb.get("type") in ("record", "error"):
                records.append(b)
        if len(records) == 1 and _as_dict(value) is not None:
            self._walk(records[0], value, path, out)  # the only candidate: report its fields
            return
        out.append((path, f"expected {_describe(branches)}, got {type(value).__name__}"))


def branch_checker(named: dict[str, Any]) -> Callable[[Any, Any], bool]:
    """``check(node, value)`` with a compiled checker per union branch, built lazily."""
    cache: dict[str, Callable[[Any], bool]] = {}

    def check(node: Any, value: Any) -> bool:
        key = repr(node)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = compile_checker(node, named)
        return fn(value)

    return check
