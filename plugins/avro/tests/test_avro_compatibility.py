"""Schema compatibility: Ruby Deimos's ``schemas_compatible?``, the development registry's
``POST /compatibility/...`` and ``deimos schemas check --against-registry``, which asks the
registry over HTTP (as it would a Confluent Schema Registry) under the subject's level."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema

from deimos.config import build_settings
from deimos.schema.devregistry import RegistryStore
from deimos.testing.registry_server import RegistryServer
from deimos_avro import registry_client
from deimos_avro.compatibility import incompatibilities, schemas_compatible


def widget(*extra: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": "Widget", "namespace": "com.shop",
                       "fields": [{"name": "id", "type": "long"}, *extra]})


V1 = widget()
WITH_DEFAULT = widget({"name": "colour", "type": "string", "default": "red"})
REQUIRED = widget({"name": "colour", "type": "string"})
RETYPED = json.dumps({"type": "record", "name": "Widget", "namespace": "com.shop",
                      "fields": [{"name": "id", "type": "string"}]})


# -- schemas_compatible (both directions, as Ruby's mutual_read?) ------------------------------


def test_a_field_added_with_a_default_is_compatible_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "Widget.avsc"
    path.write_text(WITH_DEFAULT)
    assert schemas_compatible(V1, str(path))
    assert schemas_compatible(json.loads(V1), json.loads(WITH_DEFAULT))


def test_a_required_field_or_a_changed_type_is_not() -> None:
    assert not schemas_compatible(V1, REQUIRED)
    assert not schemas_compatible(V1, RETYPED)
    # one direction is fine: the old schema reads data written with the new one
    assert incompatibilities(V1, REQUIRED) == []
    [problem] = incompatibilities(REQUIRED, V1)
    assert "reader_field_missing_default_value" in problem and "/fields/1" in problem


# -- the development registry's compatibility endpoint ------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    s = RegistryStore(tmp_path / "registry.json")
    assert s.handle("POST", "/subjects/w-value/versions", body={"schema": V1})[0] == 200
    return s


def check(store: RegistryStore, schema: str, version: str = "latest") -> dict[str, Any]:
    path = "/compatibility/subjects/w-value/versions" + (f"/{version}" if version else "")
    status, body = store.handle("POST", path, {"verbose": "true"}, {"schema": schema})
    assert status == 200, body
    return dict(body)


@pytest.mark.parametrize(("level", "candidate", "ok"), [
    ("BACKWARD", REQUIRED, False),  # the new reader needs colour, old data has none
    ("BACKWARD", WITH_DEFAULT, True),
    ("FORWARD", REQUIRED, True),    # old readers ignore the extra field
    ("FORWARD", RETYPED, False),
    ("FULL", REQUIRED, False),
    ("FULL", WITH_DEFAULT, True),
    ("NONE", RETYPED, True),
])
def test_the_subjects_level_decides_the_direction(store: RegistryStore, level: str,
                                                  candidate: str, ok: bool) -> None:
    store.handle("PUT", "/config/w-value", body={"compatibility": level})
    answer = check(store, candidate)
    assert answer["is_compatible"] is ok
    assert bool(answer["messages"]) is not ok


def test_transitive_levels_check_every_version(store: RegistryStore) -> None:
    store.handle("POST", "/subjects/w-value/versions", body={"schema": WITH_DEFAULT})
    # against the latest (WITH_DEFAULT) alone, requiring colour is fine; against v1 it is not
    assert check(store, REQUIRED)["is_compatible"] is True
    store.handle("PUT", "/config/w-value", body={"compatibility": "BACKWARD_TRANSITIVE"})
    assert check(store, REQUIRED, version="")["is_compatible"] is False
    store.handle("PUT", "/config/w-value", body={"compatibility": "BACKWARD"})
    assert check(store, REQUIRED, version="")["is_compatible"] is True


def test_unknown_subjects_and_versions_answer_as_the_api_reference_says(
        store: RegistryStore) -> None:
    assert store.handle("POST", "/compatibility/subjects/nope/versions/latest",
                        body={"schema": V1}) == (404, {"error_code": 40401,
                                                      "message": "Subject 'nope' not found."})
    assert store.handle("POST", "/compatibility/subjects/w-value/versions/9",
                        body={"schema": V1})[1]["error_code"] == 40402


def test_a_type_no_plugin_checks_is_refused(store: RegistryStore) -> None:
    store.handle("POST", "/subjects/j-value/versions",
                 body={"schema": '{"type": "object"}', "schemaType": "JSON"})
    status, body = store.handle("POST", "/compatibility/subjects/j-value/versions/latest",
                                body={"schema": '{"type": "string"}', "schemaType": "JSON"})
    assert status == 422 and "JSON" in body["message"]


# -- deimos schemas check --against-registry, over HTTP -----------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry.json") as srv:
        yield srv


def project(tmp_path: Path, server: RegistryServer, schema: str) -> Path:
    root = tmp_path / "avsc" / "com" / "shop"
    root.mkdir(parents=True)
    (root / "Widget.avsc").write_text(schema)
    (root / "WidgetKey.avsc").write_text(json.dumps(
        {"type": "record", "name": "WidgetKey", "namespace": "com.shop",
         "fields": [{"name": "id", "type": "long"}]}))
    config = tmp_path / "deimos.toml"
    config.write_text(f"""
[schema]
backend = "avro_schema_registry"
registry_url = "{server.url}"
path = "{tmp_path / 'avsc'}"

[[producers.topics]]
topic = "widgets"
schema = "Widget"
namespace = "com.shop"
key_config = {{ field = "id" }}
""")
    return config


def register(server: RegistryServer, subject: str, schema: str) -> None:
    client = registry_client(build_settings({"schema": {"registry_url": server.url}},
                                            environ={}).settings)
    client.register_schema(subject, Schema(schema, "AVRO"))


def run_check(config: Path) -> Any:
    """The command in a process of its own, as CI runs it (the producer classes other tests
    define in this process are not the service's); ``.out`` is stdout and stderr."""
    result = subprocess.run([sys.executable, "-m", "deimos", "--config", str(config), "schemas",
                             "check", "--against-registry"], capture_output=True, text=True,
                            timeout=120, check=False, cwd=config.parent)
    result.out = result.stdout + result.stderr  # type: ignore[attr-defined]
    return result


def test_check_fails_on_an_incompatible_producer_schema(tmp_path: Path,
                                                        server: RegistryServer) -> None:
    register(server, "widgets-value", V1)
    result = run_check(project(tmp_path, server, REQUIRED))
    assert result.returncode == 1, result.out
    assert "incompatible  widgets-value (producers.topics.0, topic widgets)" in result.out
    assert "not BACKWARD compatible with version 1" in result.out
    # the generated key subject is new: nothing to be compatible with
    assert "new subject  widgets-key" in result.out
    asked = [r[1] for r in server.requests if r[0] == "POST"]
    assert "/compatibility/subjects/widgets-value/versions/1" in asked
    # a new subject is told by its versions (GET 40401), never by the compatibility check:
    # servers disagree there (40401 in the API reference, is_compatible true on current
    # Confluent, 40402 on Karapace 3.15.0)
    assert not [p for p in asked if p.startswith("/compatibility/subjects/widgets-key")]


def test_check_passes_once_the_schema_evolves_compatibly(tmp_path: Path,
                                                         server: RegistryServer) -> None:
    register(server, "widgets-value", V1)
    result = run_check(project(tmp_path, server, WITH_DEFAULT))
    assert result.returncode == 0, result.out
    assert "compatible  widgets-value" in result.out and "under BACKWARD" in result.out


def test_check_follows_the_subjects_own_level(tmp_path: Path, server: RegistryServer) -> None:
    register(server, "widgets-value", V1)
    config = project(tmp_path, server, REQUIRED)
    client = registry_client(build_settings({"schema": {"registry_url": server.url}},
                                            environ={}).settings)
    client.set_compatibility("widgets-value", "FORWARD")
    assert run_check(config).returncode == 0
    client.set_compatibility("widgets-value", "FULL")
    assert run_check(config).returncode == 1


def test_an_unreachable_registry_is_one_clear_error(tmp_path: Path,
                                                    server: RegistryServer) -> None:
    config = project(tmp_path, server, V1)
    server.stop()
    result = run_check(config)
    assert result.returncode == 2
    assert "widgets" in result.out and "Traceback" not in result.out
