"""Finding message descriptors by full name, generated key messages, registry schemas and
``schema_fields``.

Where messages come from, in order:

1. the default descriptor pool, after importing the ``protobuf.modules`` settings list: every
   compiled ``_pb2`` module registers its messages there (so does any ``_pb2`` module the
   application already imported);
2. ``.proto`` files under ``schema.path``, compiled once per process with ``protoc`` from
   ``grpcio-tools`` when it is installed (``deimos-protobuf[compile]``) into a private pool.
   Without grpcio-tools only step 1 is available, and a missing message says so.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from deimos.errors import SchemaError
from deimos.schema.base import SchemaField

from .settings import ProtobufSettings

#: descriptors as the code sees them: types-protobuf models the pure-Python and upb descriptor
#: classes separately (and optional everywhere), which helps nothing here
FieldDesc = Any
MessageDesc = Any

_lock = threading.RLock()
_imported: set[str] = set()
#: (root, signature of the .proto files) -> pool holding them
_compiled: dict[str, tuple[tuple[Any, ...], descriptor_pool.DescriptorPool]] = {}


def clear_cache() -> None:
    """Forget compiled ``.proto`` pools (tests that rewrite ``.proto`` files in place)."""
    with _lock:
        _compiled.clear()


def is_repeated(fd: FieldDesc) -> bool:
    # protobuf 7 dropped ``label``; older runtimes lack ``is_repeated``.
    rep = getattr(fd, "is_repeated", None)
    return bool(rep) if rep is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def is_required(fd: FieldDesc) -> bool:
    req = getattr(fd, "is_required", None)
    return bool(req) if req is not None else fd.label == FieldDescriptor.LABEL_REQUIRED


def is_map(fd: FieldDesc) -> bool:
    mt = fd.message_type
    return mt is not None and is_repeated(fd) and mt.GetOptions().map_entry


def message_class(desc: MessageDesc) -> type[Message]:
    """The concrete class of ``desc`` (the generated one for ``_pb2`` messages)."""
    return GetMessageClass(desc)


def grpc_tools_available() -> bool:
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        return False
    return True


def _import_modules(modules: Iterable[str]) -> None:
    for name in modules:
        if name in _imported:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise SchemaError(f"protobuf.modules: cannot import {name!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
        _imported.add(name)


def _proto_files(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".proto")]
    return sorted(out)


def _compile(root: str) -> descriptor_pool.DescriptorPool | None:
    """A pool with every ``.proto`` file under ``root`` (``None`` when there is none),
    recompiled when a file changes."""
    files = _proto_files(root)
    if not files:
        return None
    signature = tuple((f, os.stat(f).st_mtime_ns) for f in files)
    with _lock:
        hit = _compiled.get(root)
        if hit is not None and hit[0] == signature:
            return hit[1]
        includes = [f"-I{d}" for d in include_dirs()]
        with tempfile.TemporaryDirectory(prefix="deimos-protoc-") as tmp:
            out = os.path.join(tmp, "set.bin")
            # A child process: protoc reports errors on the C-level stderr, which we want in
            # the exception rather than on the terminal.
            proc = subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", *includes,
                 f"--descriptor_set_out={out}", "--include_imports", *files],
                capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SchemaError(f"protoc could not compile the .proto files under {root}: "
                                  f"{proc.stderr.strip() or proc.stdout.strip()}")
            with open(out, "rb") as f:
                fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        pool = descriptor_pool.DescriptorPool()
        for fdp in fds.file:  # --include_imports writes dependencies first
            pool.Add(fdp)
        _compiled[root] = (signature, pool)
        return pool


def find(settings: ProtobufSettings, root: str, full_name: str) -> Descriptor:
    """The descriptor of message ``full_name`` (see the module docstring for where from)."""
    _import_modules(settings.modules)
    try:
        return descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        pass
    where = [f"the default descriptor pool (protobuf.modules: {settings.modules or 'none'})"]
    root = os.path.abspath(root)
    if settings.compile_proto_files and grpc_tools_available():
        pool = _compile(root) if os.path.isdir(root) else None
        where.append(f".proto files under {root}" if pool is not None
                     else f".proto files under {root} (none found)")
        if pool is not None:
            try:
                return pool.FindMessageTypeByName(full_name)
            except KeyError:
                pass
    elif settings.compile_proto_files:
        where.append(f".proto files under {root} were not compiled: grpcio-tools is not "
                     "installed (pip install \"deimos-protobuf[compile]\")")
    raise SchemaError(f"Protobuf message {full_name!r} not found; searched "
                      + "; ".join(where))


def field_at(desc: MessageDesc, path: str) -> FieldDescriptor:
    """The field at dotted ``path`` (``"meta.id"``) of ``desc``."""
    current: Descriptor | None = desc
    fd: FieldDesc | None = None
    for part in path.split("."):
        fd = current.fields_by_name.get(part) if current is not None else None
        if fd is None:
            raise SchemaError(f"key_config field {path!r}: message {desc.full_name} has no "
                              f"field {part!r}")
        current = fd.message_type
    assert fd is not None
    return fd


def key_descriptor(value: Descriptor, path: str) -> Descriptor:
    """The generated key message ``<Name>_key`` (same package) holding the one field at
    ``path`` of ``value`` as field 1, added to ``value``'s pool once.

    The same idea as the Avro plugin's ``<Name>_key`` record: the key is a protobuf message of
    its own, registered under the key subject, that any Confluent ProtobufDeserializer reads.
    """
    fd = field_at(value, path)
    if is_repeated(fd):
        raise SchemaError(f"key_config field {path!r} of {value.full_name} is repeated; a "
                          "key field must be a single value")
    pool = value.file.pool
    file_name = value.full_name.replace(".", "/") + "_key.proto"
    key_name = f"{value.name}_key"
    package = value.file.package
    with _lock:
        try:
            pool.FindFileByName(file_name)
        except KeyError:
            fdp = descriptor_pb2.FileDescriptorProto(name=file_name, package=package,
                                                     syntax="proto3")
            ref = fd.message_type or fd.enum_type
            if ref is not None:
                fdp.dependency.append(ref.file.name)
            msg = fdp.message_type.add(name=key_name)
            field = msg.field.add(name=fd.name, number=1, type=fd.type,
                                  label=FieldDescriptor.LABEL_OPTIONAL)
            if fd.json_name:
                # as protoc writes it: the file `deimos protobuf key-protos` writes then
                # compiles to this very descriptor (and registers the same schema)
                field.json_name = fd.json_name
            if ref is not None:
                field.type_name = "." + ref.full_name
            pool.Add(fdp)
    key = pool.FindMessageTypeByName(f"{package}.{key_name}" if package else key_name)
    fields = [(f.name, f.type) for f in key.fields]
    if fields != [(fd.name, fd.type)]:
        # one key message per value type: a second key field cannot have the same name
        held = ", ".join(name for name, _ in fields) or "no field"
        raise SchemaError(f"key_config field {path!r} of {value.full_name}: its key message "
                          f"{key.full_name} ({file_name}) already holds {held}; every "
                          f"producer and consumer of {value.full_name} with a field key "
                          "must key by the same field (or use key_config schema)")
    return key


# ---------------------------------------------------------------------------------------------
# registry schemas
# ---------------------------------------------------------------------------------------------


def is_builtin(file_name: str) -> bool:
    """Files every Confluent client knows without a reference (confluent-kafka's
    ``skip.known.types``): google/protobuf/*, google/type/*, confluent/*."""
    return file_name.startswith(("google/protobuf/", "google/type/", "confluent/"))


#: where the generated modules of built-in files live: ``google/type/date.proto`` ->
#: ``google.type.date_pb2`` (protobuf, googleapis-common-protos), ``confluent/meta.proto`` ->
#: confluent-kafka's ``confluent_kafka.schema_registry.confluent.meta_pb2``
_BUILTIN_PACKAGES = (("google/", "google."),
                     ("confluent/", "confluent_kafka.schema_registry.confluent."))


def builtin_file(name: str) -> FileDescriptor | None:
    """The descriptor of built-in file ``name`` from the default pool, importing its generated
    module first when this process has not (a writer schema may use ``google/type/*.proto``
    types the application never imported)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(name)
    except KeyError:
        pass
    for prefix, package in _BUILTIN_PACKAGES:
        if name.startswith(prefix) and name.endswith(".proto"):
            module = package + name[len(prefix):-len(".proto")].replace("/", ".") + "_pb2"
            try:
                importlib.import_module(module)
                return pool.FindFileByName(name)
            except (ImportError, KeyError):
                return None
    return None


def include_dirs() -> list[str]:
    """``-I`` directories for the built-in imports: grpc_tools' own (google/protobuf/*) and the
    one holding googleapis-common-protos' ``google/type/*.proto`` (a dependency of
    confluent-kafka[protobuf]), so user files can import ``google/type/date.proto``."""
    import grpc_tools

    dirs = [os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")]
    try:
        spec = importlib.util.find_spec("google.type")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        if os.path.exists(os.path.join(loc, "date.proto")):
            dirs.append(os.path.dirname(os.path.dirname(loc)))
    return dirs


def schema_text(file: FileDescriptor) -> str:
    """What the registry stores for a ``.proto`` file: the base64 ``FileDescriptorProto``, as
    confluent-kafka's ProtobufSerializer registers it (so both get the same id)."""
    return base64.standard_b64encode(file.serialized_pb).decode("ascii")


def writer_pool(client: Any, schema: Any) -> tuple[descriptor_pool.DescriptorPool,
                                                   descriptor_pb2.FileDescriptorProto]:
    """A pool holding a registered schema and, recursively, its references; built-in files
    come from the default pool."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add_builtin_deps(fdp: descriptor_pb2.FileDescriptorProto) -> None:
        for dep in fdp.dependency:
            if dep in added or not is_builtin(dep):
                continue
            builtin = builtin_file(dep)
            if builtin is None:
                continue  # a reference registered under that name will add it
            dep_proto = descriptor_pb2.FileDescriptorProto.FromString(builtin.serialized_pb)
            add_builtin_deps(dep_proto)
            pool.Add(dep_proto)
            added.add(dep)

    def add(sch: Any, name: str | None) -> descriptor_pb2.FileDescriptorProto:
        for ref in sch.references or []:
            if ref.name in added:
                continue
            registered = client.get_version(ref.subject, ref.version, True, "serialized")
            add(registered.schema, ref.name)
        fdp = descriptor_pb2.FileDescriptorProto.FromString(
            base64.standard_b64decode(sch.schema_str))
        if name and not fdp.name:
            fdp.name = name
        if fdp.name not in added:
            add_builtin_deps(fdp)
            pool.Add(fdp)
            added.add(fdp.name)
        return fdp

    main = add(schema, None)
    return pool, main


def descriptor_at(pool: descriptor_pool.DescriptorPool,
                  fdp: descriptor_pb2.FileDescriptorProto,
                  indexes: tuple[int, ...]) -> Descriptor:
    """The message the message-index list points at in file ``fdp``."""
    messages: Any = fdp.message_type
    names = []
    for i in indexes:
        if i < 0 or i >= len(messages):
            raise SchemaError(f"message index {list(indexes)} is out of range in {fdp.name}")
        names.append(messages[i].name)
        messages = messages[i].nested_type
    full = ".".join([fdp.package, *names] if fdp.package else names)
    return pool.FindMessageTypeByName(full)


# ---------------------------------------------------------------------------------------------
# schema_fields
# ---------------------------------------------------------------------------------------------

_SCALAR_NAMES = {
    getattr(FieldDescriptor, name): name[len("TYPE_"):].lower()
    for name in dir(FieldDescriptor) if name.startswith("TYPE_")
}


def type_name(fd: FieldDesc) -> str:
    """``int64``, ``string``, ``com.example.Part`` (message or enum full name),
    ``repeated string``, ``map<string, int64>``."""
    if is_map(fd):
        entry = fd.message_type
        return (f"map<{type_name(entry.fields_by_name['key'])}, "
                f"{type_name(entry.fields_by_name['value'])}>")
    if fd.message_type is not None:
        base = fd.message_type.full_name
    elif fd.enum_type is not None:
        base = fd.enum_type.full_name
    else:
        base = _SCALAR_NAMES.get(fd.type, "unknown")
    return f"repeated {base}" if is_repeated(fd) else base


def has_presence(fd: FieldDesc) -> bool:
    pres = getattr(fd, "has_presence", None)
    if pres is not None:
        return bool(pres)
    return fd.message_type is not None or fd.containing_oneof is not None


def fields_of(desc: MessageDesc) -> list[SchemaField]:
    """One :class:`SchemaField` per field in declaration order. Fields with presence (message
    fields, oneof members, ``optional``) are nullable; scalars without presence have their
    zero value as default, as protobuf gives them."""
    out = []
    for fd in desc.fields:
        repeated = is_repeated(fd)
        nullable = not repeated and has_presence(fd)
        default: Any
        if repeated:
            default = {} if is_map(fd) else []
        elif fd.message_type is not None:
            default = None
        elif fd.enum_type is not None:
            default = fd.enum_type.values_by_number[fd.default_value].name \
                if fd.default_value in fd.enum_type.values_by_number else fd.default_value
        else:
            default = fd.default_value
        symbols = tuple(v.name for v in fd.enum_type.values) if fd.enum_type is not None \
            else None
        out.append(SchemaField(name=fd.name, type=type_name(fd), default=default,
                               has_default=not is_required(fd), nullable=nullable,
                               enum_symbols=symbols))
    return out
