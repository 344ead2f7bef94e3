"""``deimos protobuf key-protos``: the key messages deimos generates for ``field`` keys,
written as ``.proto`` files that protoc compiles to the very message deimos registers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from deimos_protobuf import schemas
from deimos_protobuf.settings import ProtobufSettings

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(not schemas.grpc_tools_available(),
                                reason="needs grpcio-tools (deimos-protobuf[compile])")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(HERE / "protos", tmp_path / "protos")
    (tmp_path / "deimos.toml").write_text(f"""
[schema]
backend = "proto_local"
path = "{tmp_path / 'protos'}"

[[producers.topics]]
topic = "widgets"
schema = "Widget"
namespace = "com.example"
key_config = {{ field = "id" }}

[[producers.topics]]
topic = "plain"
schema = "Part"
namespace = "com.example"
key_config = "plain"
""")
    return tmp_path


def run(project: Path, *args: str) -> Any:
    return subprocess.run([sys.executable, "-m", "deimos", "--config",
                           str(project / "deimos.toml"), "protobuf", "key-protos", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=project)


def in_memory_key(project: Path, field: str) -> descriptor_pb2.FileDescriptorProto:
    """The key message deimos builds when no file holds it (from a copy without them)."""
    clean = project / "clean"
    shutil.copytree(HERE / "protos", clean)
    value = schemas.find(ProtobufSettings(), str(clean), "com.example.Widget")
    fdp = descriptor_pb2.FileDescriptorProto()
    schemas.key_descriptor(value, field).file.CopyToProto(fdp)
    return fdp


def test_writes_one_file_per_key_message_in_the_values_package(project: Path) -> None:
    done = run(project)
    assert done.returncode == 0, done.stderr
    assert (project / "protos/com/example/Widget_key.proto").read_text() == (
        'syntax = "proto3";\n\npackage com.example;\n\nmessage Widget_key {\n'
        "  int64 id = 1;\n}\n")
    assert "com.example.Widget_key" in done.stdout and "producers.topics.0" in done.stdout


def test_a_message_typed_key_field_imports_its_file(project: Path) -> None:
    (project / "deimos.toml").write_text((project / "deimos.toml").read_text().replace(
        'key_config = { field = "id" }', 'key_config = { field = "part" }'))
    assert run(project).returncode == 0
    text = (project / "protos/com/example/Widget_key.proto").read_text()
    assert 'import "com/example/part.proto";' in text
    assert "  .com.example.Part part = 1;" in text


def test_protoc_compiles_the_file_to_the_message_deimos_registers(project: Path) -> None:
    assert run(project).returncode == 0
    schemas.clear_cache()
    pool = schemas._compile(str(project / "protos"))
    assert pool is not None
    compiled = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName("com/example/Widget_key.proto").CopyToProto(compiled)
    assert compiled == in_memory_key(project, "id")


def test_a_second_run_changes_nothing(project: Path) -> None:
    assert run(project).returncode == 0
    again = run(project)
    assert again.returncode == 0 and "0 file(s) changed" in again.stdout


def test_output_option_and_a_missing_schema_is_one_clear_error(project: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert run(project, "--output", str(out)).returncode == 0
    assert (out / "com/example/Widget_key.proto").exists()
    (project / "deimos.toml").write_text((project / "deimos.toml").read_text().replace(
        'schema = "Widget"', 'schema = "Nope"', 1))
    bad = run(project)
    assert bad.returncode == 2 and "Nope" in bad.stderr and "Traceback" not in bad.stderr


def test_two_key_fields_of_one_value_type_are_refused_by_name(project: Path) -> None:
    # both would be com.example.Widget_key: the second would silently get the first's field
    with (project / "deimos.toml").open("a") as f:
        f.write('[[producers.topics]]\ntopic = "by-part"\nschema = "Widget"\n'
                'namespace = "com.example"\nkey_config = { field = "part" }\n')
    bad = run(project)
    assert bad.returncode == 2
    assert "key_config field 'part'" in bad.stderr and "already holds id" in bad.stderr
