"""``deimos protobuf key-protos``: the generated key messages written as ``.proto`` files
(Ruby Deimos's ``rake deimos:generate_key_protos`` and ``schema.proto_schema_key_path``).

A producer with ``key_config = {field = "id"}`` and a Protobuf schema writes its keys as a
message of their own, ``<Name>_key`` in the value's package, built in memory
(:func:`~deimos_protobuf.schemas.key_descriptor`) and registered under the key subject.
Services in other languages, and code generators, need that message as a file; this writes
it, the same message the registry holds, under the path deimos gives it
(``com/example/Widget_key.proto``), so deimos reading ``schema.path`` finds the file's
message instead of building its own.

The printer is written here because protobuf's Python runtime prints descriptors only as
text-format ``FileDescriptorProto``, not as ``.proto`` source; a key message has one field,
which is all it needs to print.
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf.descriptor import Descriptor

from deimos.runtime import Runtime
from deimos.schema.owners import schema_owners

from .schemas import _SCALAR_NAMES

_BACKENDS = ("proto_schema_registry", "proto_local")


def key_proto_text(key: Descriptor) -> str:
    """The ``.proto`` source of a generated key message (one field, no nesting)."""
    file = key.file
    lines = ['syntax = "proto3";', ""]
    if file.package:
        lines += [f"package {file.package};", ""]
    deps = sorted(d.name for d in file.dependencies)
    if deps:
        lines += [f'import "{d}";' for d in deps] + [""]
    lines.append(f"message {key.name} {{")
    for fd in key.fields:
        ref = fd.message_type or fd.enum_type
        type_ = "." + ref.full_name if ref is not None else _SCALAR_NAMES[fd.type]
        lines.append(f"  {type_} {fd.name} = {fd.number};")  # key fields are never repeated
    lines += ["}", ""]
    return "\n".join(lines)


def key_messages(runtime: Runtime) -> dict[str, tuple[Descriptor, list[str]]]:
    """``file name -> (key message, its users)`` for every producer and consumer with a
    Protobuf schema and a ``field`` key config."""
    from .backends import _state

    out: dict[str, tuple[Descriptor, list[str]]] = {}
    for owner, _topic, bind in schema_owners(runtime):
        sb = bind()
        if sb.name not in _BACKENDS or sb.context.key_config.kind != "field":
            continue
        codec = _state(sb.context).key()
        assert codec is not None
        entry = out.setdefault(codec.desc.file.name, (codec.desc, []))
        entry[1].append(owner)
    return out


def write_key_protos(runtime: Runtime, root: str | os.PathLike[str]) -> list[Path]:
    """Write every key message under ``root``; the files whose content changed."""
    changed = []
    for name, (desc, _users) in sorted(key_messages(runtime).items()):
        path = Path(root) / name
        text = key_proto_text(desc)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    return changed
