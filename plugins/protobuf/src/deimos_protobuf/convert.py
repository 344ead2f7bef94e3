"""Payloads to messages (``coerce``), payload checks with field paths (``validate``) and
messages to dicts (decoding with ``protobuf.decode_as = "dict"``).

A dict payload becomes a message through the message descriptor. The fast path hands the
dict to the generated class's constructor (C code in upb; nested dicts, enum names and lists
are accepted there), which succeeds for a payload that already has the right types. Anything
else takes the slow path below, which walks the descriptor, converts what Ruby Deimos's
coercion converts (integer strings to ints, numbers to strings, ``datetime`` to
``google.protobuf.Timestamp`` ...) and collects *every* error with its field path. Values of
the well-known types given in their JSON form (``Struct``, ``Value``, ``ListValue``) go
through :func:`google.protobuf.json_format.ParseDict`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from deimos.errors import CoercionError

from .schemas import (
    FieldDesc,
    MessageDesc,
    has_presence,
    is_map,
    is_repeated,
    is_required,
    message_class,
    type_name,
)

Errors = list[tuple[str, str]]

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)
_WRAPPERS = frozenset(f"google.protobuf.{n}Value" for n in (
    "Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes"))
_JSON_WKT = frozenset(("google.protobuf.Struct", "google.protobuf.Value",
                       "google.protobuf.ListValue"))
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_UTC = _dt.timezone.utc


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tname(value: Any) -> str:
    return type(value).__name__


def _real_oneofs(desc: MessageDesc) -> list[Any]:
    """Oneofs with more than one member (proto3 ``optional`` makes one-member ones)."""
    return [o for o in desc.oneofs if len(o.fields) > 1]


# ---------------------------------------------------------------------------------------------
# scalars
# ---------------------------------------------------------------------------------------------


def _scalar(fd: FieldDesc, v: Any, path: str, errors: Errors, strict: bool) -> Any:
    cpp = fd.cpp_type
    expected = type_name(fd).removeprefix("repeated ")
    if cpp in _INT_RANGES:
        lo, hi = _INT_RANGES[cpp]
        out: Any = None
        if type(v) is int:
            out = v
        elif not strict:
            if isinstance(v, bool):
                out = int(v)
            elif isinstance(v, enum.Enum) and isinstance(v.value, int):
                out = v.value
            elif isinstance(v, (float, decimal.Decimal)) and v == int(v):
                out = int(v)
            elif isinstance(v, str):
                try:
                    out = int(v.strip())
                except ValueError:
                    out = None
            elif isinstance(v, int):
                out = int(v)
        if out is None:
            errors.append((path, f"expected {expected}, got {_tname(v)} {v!r}"[:200]))
            return None
        if not lo <= out <= hi:
            errors.append((path, f"{out} is out of range for {expected}"))
            return None
        return out
    if cpp in _FLOATS:
        if type(v) is float or (type(v) is int and not isinstance(v, bool)):
            return float(v)
        if not strict and not isinstance(v, bool):
            try:
                if isinstance(v, (str, decimal.Decimal, int)):
                    return float(v)
            except ValueError:
                pass
        errors.append((path, f"expected {expected}, got {_tname(v)} {v!r}"[:200]))
        return None
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        if type(v) is bool:
            return v
        if not strict:
            if isinstance(v, str) and v.strip().lower() in ("true", "false"):
                return v.strip().lower() == "true"
            if type(v) is int and v in (0, 1):
                return bool(v)
        errors.append((path, f"expected bool, got {_tname(v)} {v!r}"[:200]))
        return None
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        etype = fd.enum_type
        if isinstance(v, enum.Enum):
            v = v.name if v.name in etype.values_by_name else v.value
        if isinstance(v, str) and v in etype.values_by_name:
            return v
        if type(v) is int and (v in etype.values_by_number or not strict):
            return v
        errors.append((path, f"expected one of {etype.full_name} "
                             f"{list(etype.values_by_name)}, got {_tname(v)} {v!r}"[:300]))
        return None
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if isinstance(v, bytes):
            return v
        if not strict:
            if isinstance(v, (bytearray, memoryview)):
                return bytes(v)
            if isinstance(v, str):
                return v.encode()
        errors.append((path, f"expected bytes, got {_tname(v)}"))
        return None
    # string
    if isinstance(v, str):
        return v
    if not strict:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, enum.Enum):
            return str(v.value) if isinstance(v.value, str) else v.name
        if isinstance(v, (int, float, decimal.Decimal, uuid.UUID)):
            return str(v)
        if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
            return v.isoformat()
    errors.append((path, f"expected string, got {_tname(v)}"))
    return None


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------


def _timestamp(cls: type[Message], v: Any) -> Message | None:
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        v = _dt.datetime(v.year, v.month, v.day, tzinfo=_UTC)
    if isinstance(v, _dt.datetime):
        msg = cls()
        msg.FromDatetime(v if v.tzinfo is not None else v.replace(tzinfo=_UTC))  # type: ignore[attr-defined]
        return msg
    return None


def _duration(cls: type[Message], v: Any) -> Message | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = _dt.timedelta(seconds=v)
    if isinstance(v, _dt.timedelta):
        msg = cls()
        msg.FromTimedelta(v)  # type: ignore[attr-defined]
        return msg
    return None


def _message(desc: MessageDesc, v: Any, path: str, errors: Errors, strict: bool
             ) -> Message | None:
    cls = message_class(desc)
    name = desc.full_name
    if isinstance(v, Message):
        if v.DESCRIPTOR.full_name != name:
            errors.append((path, f"expected message {name}, got message "
                                 f"{v.DESCRIPTOR.full_name}"))
            return None
        if strict:
            for missing in v.FindInitializationErrors():  # type: ignore[attr-defined]
                errors.append((_join(path, missing), "missing required field"))
        return v if type(v) is cls else cls.FromString(v.SerializePartialToString())
    if not isinstance(v, Mapping):
        converted: Message | None = None
        if not strict or name in (_TIMESTAMP, _DURATION):
            if name == _TIMESTAMP:
                converted = _timestamp(cls, v)
            elif name == _DURATION:
                converted = _duration(cls, v)
            elif name in _WRAPPERS:
                value = _scalar(desc.fields_by_name["value"], v, path, errors, strict)
                return None if value is None else cls(value=value)
        if name in _JSON_WKT:
            try:
                return json_format.ParseDict(v, cls())
            except (json_format.ParseError, TypeError, ValueError) as exc:
                errors.append((path, f"not a valid {name}: {exc}"))
                return None
        if converted is None:
            errors.append((path, f"expected message {name} (a dict or message), got "
                                 f"{_tname(v)}"))
        return converted
    if name in _JSON_WKT:
        try:
            return json_format.ParseDict(dict(v), cls())
        except (json_format.ParseError, TypeError, ValueError) as exc:
            errors.append((path, f"not a valid {name}: {exc}"))
            return None
    before = len(errors)
    fields = desc.fields_by_name
    kwargs: dict[str, Any] = {}
    for key, value in v.items():
        fd = fields.get(key)
        fpath = _join(path, str(key))
        if fd is None:
            if strict:
                errors.append((fpath, f"unknown field of {name}"))
            continue  # coercion drops fields the schema does not have (as for Avro)
        if value is None:
            continue  # unset
        if is_map(fd):
            kwargs[key] = _map(fd, value, fpath, errors, strict)
        elif is_repeated(fd):
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                errors.append((fpath, f"expected a list of {type_name(fd)[9:]}, got "
                                      f"{_tname(value)}"))
                continue
            kwargs[key] = [_value(fd, item, f"{fpath}[{i}]", errors, strict)
                           for i, item in enumerate(value)]
        else:
            kwargs[key] = _value(fd, value, fpath, errors, strict)
    for oneof in _real_oneofs(desc):
        set_ = [f.name for f in oneof.fields if v.get(f.name) is not None]
        if len(set_) > 1:
            errors.append((_join(path, oneof.name),
                           f"oneof {oneof.name!r} has more than one field set: "
                           f"{', '.join(set_)}"))
    for fd in desc.fields:
        if is_required(fd) and v.get(fd.name) is None:
            errors.append((_join(path, fd.name),
                           f"missing required field of type {type_name(fd)}"))
    if len(errors) > before:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # pragma: no cover - converted values fit
        errors.append((path, f"{type(exc).__name__}: {exc}"))
        return None


def _value(fd: FieldDesc, v: Any, path: str, errors: Errors, strict: bool) -> Any:
    if fd.message_type is not None:
        return _message(fd.message_type, v, path, errors, strict)
    return _scalar(fd, v, path, errors, strict)


def _map(fd: FieldDesc, v: Any, path: str, errors: Errors, strict: bool
         ) -> dict[Any, Any]:
    if not isinstance(v, Mapping):
        errors.append((path, f"expected {type_name(fd)} (a dict), got {_tname(v)}"))
        return {}
    kfd = fd.message_type.fields_by_name["key"]
    vfd = fd.message_type.fields_by_name["value"]
    out = {}
    for k, item in v.items():
        kk = _scalar(kfd, k, f"{path}[{k}]", errors, strict)
        out[kk] = _value(vfd, item, f"{path}[{k}]", errors, strict)
    return out


def _oneof_conflict_checker(desc: MessageDesc, seen: set[str] | None = None
                            ) -> Callable[[Mapping[str, Any]], bool] | None:
    """A check for two members of one oneof set in a dict payload (the constructor would let
    the last win silently), descending only where oneofs can be; ``None`` when there are none.
    """
    seen = set() if seen is None else seen
    if desc.full_name in seen:
        return None
    seen.add(desc.full_name)
    groups = [tuple(f.name for f in o.fields) for o in _real_oneofs(desc)]
    nested: list[tuple[str, bool, Callable[[Mapping[str, Any]], bool]]] = []
    for fd in desc.fields:
        if fd.message_type is not None and not is_map(fd):
            sub = _oneof_conflict_checker(fd.message_type, seen)
            if sub is not None:
                nested.append((fd.name, is_repeated(fd), sub))
    if not groups and not nested:
        return None

    def conflict(p: Mapping[str, Any]) -> bool:
        for g in groups:
            if sum(1 for m in g if p.get(m) is not None) > 1:
                return True
        for fname, repeated, sub in nested:
            v = p.get(fname)
            if v is None:
                continue
            items = v if repeated and isinstance(v, list) else [v]
            if any(isinstance(i, Mapping) and sub(i) for i in items):
                return True
        return False

    return conflict


class Converter:
    """Everything to turn payloads into messages of one descriptor, prepared once."""

    def __init__(self, desc: MessageDesc) -> None:
        self.desc = desc
        self.cls = message_class(desc)
        self.full_name = desc.full_name
        self._conflict = _oneof_conflict_checker(desc)

    def coerce(self, payload: Any) -> Any:
        """A message of this descriptor (``None`` stays ``None``); raises
        :class:`CoercionError` with every bad field path."""
        cls = self.cls
        if payload is None or type(payload) is cls:
            return payload  # the fast path for message objects: nothing to do
        if type(payload) is dict and (self._conflict is None or not self._conflict(payload)):
            try:
                return cls(**payload)
            except Exception:  # the slow path below says what was wrong
                pass
        errors: Errors = []
        msg = _message(self.desc, payload, "", errors, strict=False)
        if errors:
            raise CoercionError(errors)
        return msg

    def errors(self, payload: Any) -> Errors:
        """Every problem of ``payload`` (a dict or message) with its field path, converting
        nothing: a string for an int64 is an error here."""
        errors: Errors = []
        _message(self.desc, payload, "", errors, strict=True)
        return errors


# ---------------------------------------------------------------------------------------------
# messages to dicts
# ---------------------------------------------------------------------------------------------


def _plain(fd: FieldDesc, v: Any) -> Any:
    mt = fd.message_type
    if mt is not None:
        name = mt.full_name
        if name == _TIMESTAMP:
            return v.ToDatetime(tzinfo=_UTC)
        if name == _DURATION:
            return v.ToTimedelta()
        if name in _WRAPPERS:
            return v.value
        if name in _JSON_WKT:
            return json_format.MessageToDict(v)
        return to_dict(v)
    if fd.enum_type is not None:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else v
    return v


def to_dict(msg: Message) -> dict[str, Any]:
    """Field name -> Python value for every field: enums by name, nested messages as dicts,
    ``Timestamp`` as an aware ``datetime``, ``Duration`` as ``timedelta``, wrappers as their
    value; an unset field with presence (message, oneof member, ``optional``) is ``None``."""
    out: dict[str, Any] = {}
    fd: FieldDesc
    for fd in msg.DESCRIPTOR.fields:
        name = fd.name
        v = getattr(msg, name)
        if is_map(fd):
            vfd = fd.message_type.fields_by_name["value"]
            out[name] = {k: _plain(vfd, x) for k, x in v.items()}
        elif is_repeated(fd):
            out[name] = [_plain(fd, x) for x in v]
        elif has_presence(fd) and not msg.HasField(name):
            out[name] = None
        else:
            out[name] = _plain(fd, v)
    return out
