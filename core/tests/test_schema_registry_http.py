"""confluent-kafka's registry client as deimos configures it, over real HTTP
(:class:`deimos.testing.registry_server.RegistryServer`, answering as Confluent's API reference
documents), and the development registry (``file://``) that local processes share."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from deimos.config import build_settings
from deimos.errors import ConfigError, TransientError
from deimos.schema.devregistry import RegistryStore
from deimos.schema.registry import (
    RegistryError,
    RegistryUnavailableError,
    registry_client,
    registry_conf,
    registry_failure,
    reset_clients,
    split_userinfo,
)
from deimos.testing.registry_server import RegistryServer

AVRO = '{"type": "record", "name": "T", "namespace": "x", "fields": [{"name": "a", "type": "int"}]}'


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    reset_clients()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    with RegistryServer(tmp_path / "registry.json", user="svc", password="hunter2") as srv:
        yield srv


def _settings(url: str, **schema: Any) -> Any:
    return build_settings({"schema": {"registry_url": url, **schema}}, environ={}).settings


def _client(url: str, **schema: Any) -> Any:
    return registry_client(_settings(url, **schema), {"max.retries": 0, "timeout": 2})


def test_user_info_leaves_the_url_for_basic_auth() -> None:
    assert split_userinfo("http://svc:p%40ss@h:8081,http://h2:8081") == (
        "http://h:8081,http://h2:8081", "svc:p@ss")
    conf = registry_conf(_settings("http://svc:hunter2@h:8081"))
    assert conf == {"url": "http://h:8081", "basic.auth.user.info": "svc:hunter2"}
    # credentials in the URL and in schema.user/password at once: a settings error naming
    # both, not a silent choice of one (changed from "the settings win": issue 16 asks for it)
    with pytest.raises(ConfigError) as info:
        _settings("http://svc:old@h:8081", user="u", password="new")
    assert "schema: Value error, schema.registry_url carries credentials" in str(info.value)
    assert "schema.user/schema.password are set too" in str(info.value)
    assert "old" not in str(info.value) and "new" not in str(info.value)


def test_credentials_from_the_url_authenticate_and_are_never_logged(
        server: RegistryServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("http://", "http://svc:hunter2@")
    client = _client(url)
    sid = client.register_schema("t-value", Schema(AVRO, "AVRO"))
    assert client.get_schema(sid).schema_str == AVRO
    assert server.auth_headers and all(h == "Basic c3ZjOmh1bnRlcjI=" for h in server.auth_headers)
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx logs URLs
    assert not [r for r in caplog.records if "hunter2" in r.getMessage()]


def test_wrong_password_is_refused_permanently(server: RegistryServer) -> None:
    client = _client(server.url.replace("http://", "http://svc:wrong@"))
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema("t-value", Schema(AVRO, "AVRO"))
    err = registry_failure(_settings(server.url), "register subject 't-value'", info.value)
    assert type(err) is RegistryError and "refused" in str(err) and "HTTP 401" in str(err)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_overloaded_registry_is_a_retriable_failure(server: RegistryServer, status: int
                                                    ) -> None:
    server.fail_with(status)
    with pytest.raises(SchemaRegistryError) as info:
        _client(server.url, user="svc", password="hunter2").get_schema(1)
    err = registry_failure(_settings(server.url), "fetch schema id 1", info.value)
    assert isinstance(err, RegistryUnavailableError) and isinstance(err, TransientError)
    assert f"HTTP {status}" in str(err) and "retriable" in str(err)


def test_unreachable_registry_is_retriable_and_says_so(server: RegistryServer) -> None:
    server.stop()
    with pytest.raises(Exception) as info:
        _client(server.url).get_schema(1)
    err = registry_failure(_settings(server.url), "fetch schema id 1", info.value)
    assert isinstance(err, RegistryUnavailableError)
    assert str(err).startswith(f"Cannot reach the schema registry at {server.url}")


def test_unknown_id_is_permanent_and_does_not_say_unreachable(server: RegistryServer) -> None:
    with pytest.raises(SchemaRegistryError) as info:
        _client(server.url, user="svc", password="hunter2").get_schema(77)
    assert (info.value.http_status_code, info.value.error_code) == (404, 40403)
    err = registry_failure(_settings(server.url), "fetch schema id 77", info.value)
    assert type(err) is RegistryError and not isinstance(err, TransientError)
    assert "refused to fetch schema id 77 (HTTP 404)" in str(err)
    assert "Cannot reach" not in str(err)


def test_an_answer_that_does_not_parse_is_permanent(server: RegistryServer) -> None:
    server.fail_with(200, b"<html>proxy login</html>")
    with pytest.raises(Exception) as info:
        _client(server.url).get_schema(1)
    err = registry_failure(_settings(server.url), "fetch schema id 1", info.value)
    assert type(err) is RegistryError and "something unusable" in str(err)


def test_store_answers_as_the_api_reference_documents(tmp_path: Path) -> None:
    client = _client("file://" + str(tmp_path / "r.json"))
    a, b = Schema(AVRO, "AVRO"), Schema(AVRO.replace('"a"', '"b"'), "AVRO")
    sid = client.register_schema("t-value", a)
    assert client.register_schema("t-value", a) == sid  # same schema: same id, no version
    assert client.register_schema("other-value", a) == sid  # one id across subjects
    sid_b = client.register_schema("t-value", b)
    assert sid_b != sid
    assert client.get_versions("t-value") == [1, 2]
    assert client.get_latest_version("t-value").schema_id == sid_b
    assert client.lookup_schema("other-value", a).version == 1
    errors = []
    for call in (lambda: client.get_version("nope", 1), lambda: client.get_version("t-value", 9),
                 lambda: RegistryStore(tmp_path / "r.json").handle("GET", "schemas/ids/99"),
                 lambda: client.lookup_schema("other-value", b)):
        try:
            out = call()
        except SchemaRegistryError as exc:
            errors.append(exc.error_code)
        else:
            errors.append(out[1]["error_code"])
    assert errors == [40401, 40402, 40403, 40403]
    # the file is the registry: a new client (another process) sees the same ids
    reset_clients()
    assert _client("file://" + str(tmp_path / "r.json")).get_schema(sid).schema_str == AVRO


_REGISTER = """
import sys
from confluent_kafka.schema_registry import Schema
from deimos.config import build_settings
from deimos.schema.registry import registry_client
client = registry_client(build_settings({"schema": {"registry_url": sys.argv[1]}},
                                        environ={}).settings)
shared = '{"type": "record", "name": "Shared", "fields": []}'
own = '{"type": "record", "name": "Own%s", "fields": []}' % sys.argv[2]
ids = [client.register_schema("shared-value", Schema(shared, "AVRO"))]
for i in range(20):
    ids.append(client.register_schema(f"own-{sys.argv[2]}-{i}",
                                      Schema(own.replace("Own", f"Own{i}x"), "AVRO")))
print(ids)
"""


def test_development_registry_is_shared_by_processes_without_clashing_ids(
        tmp_path: Path) -> None:
    """Three processes register at once: whatever order the file lock gives them, the shared
    schema has one id and no id is handed out twice."""
    url = "file://" + str(tmp_path / "dev.json")
    procs = [subprocess.Popen([sys.executable, "-c", _REGISTER, url, str(n)],
                              stdout=subprocess.PIPE, text=True) for n in range(3)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({r[0] for r in results}) == 1
    own = [i for r in results for i in r[1:]]
    assert len(set(own)) == len(own) == 60 and results[0][0] not in own
    data = json.loads((tmp_path / "dev.json").read_text())
    assert data["next_id"] == 62 and data["subjects"]["shared-value"] == [
        {"version": 1, "id": results[0][0]}]
