"""Settings from Python, TOML/YAML files and the environment; precedence; errors with the
dotted path of the setting; plugin-declared sections; secrets masked everywhere."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import deimos
from deimos import config
from deimos.cli import cli
from deimos.config import MASK, ConfigError, build_settings, masked_dict

pytestmark = pytest.mark.usefixtures("isolated_deimos")

TOML = """
[kafka]
bootstrap_servers = "file-host:9092"
client_id = "from-file"

[producers]
backend = "test"
max_batch_size = 10

[[consumers]]
name = "widgets"
class = "app.consumers:WidgetConsumer"
topics = ["widgets"]
group_id = "widget-group"
max_batch_size = 50

[metrics]
providers = ["log"]
tags = { service = "file" }
"""

YAML = """
kafka:
  bootstrap_servers: file-host:9092
  client_id: from-file
producers:
  backend: test
  max_batch_size: 10
consumers:
  - name: widgets
    class: app.consumers:WidgetConsumer
    topics: [widgets]
    group_id: widget-group
    max_batch_size: 50
metrics:
  providers: [log]
  tags: {service: file}
"""


@pytest.fixture(params=["toml", "yaml"])
def settings_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"deimos.{request.param}"
    path.write_text(TOML if request.param == "toml" else YAML)
    return path


def _errors(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.errors)


# --- sources ----------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = build_settings(environ={}).settings
    assert settings.kafka.bootstrap_servers is None
    assert settings.kafka.client_id == "deimos"
    assert settings.producers.backend == "kafka_async"
    assert settings.schema.backend == "plain"
    assert settings.consumers == []
    assert settings.metrics.providers == []


def test_python(tmp_path: Path) -> None:
    settings = deimos.configure(
        kafka={"bootstrap_servers": ["a:1", "b:2"]},
        schema={"backend": "mock", "path": str(tmp_path)},
        consumers=[{"class": "app:C", "topics": ["t"], "key_config": {"field": "id"}}],
    )
    assert settings is deimos.get_settings()
    assert settings.kafka.bootstrap_servers == "a:1,b:2"
    assert settings.schema.backend == "mock"
    assert settings.consumers[0].class_path == "app:C"
    assert settings.consumers[0].key_config is not None
    assert settings.consumers[0].key_config.describe() == "field: id"
    assert config.current().sources["schema.backend"] == "python"


def test_configure_takes_a_mapping_or_a_settings_object() -> None:
    first = deimos.configure({"producers": {"backend": "test"}})
    again = deimos.configure(first)
    assert again.producers.backend == "test"
    assert again is not first


def test_file(settings_file: Path) -> None:
    loaded = build_settings(file=settings_file, environ={})
    s = loaded.settings
    assert s.kafka.bootstrap_servers == "file-host:9092"
    assert s.producers.max_batch_size == 10
    assert s.consumers[0].class_path == "app.consumers:WidgetConsumer"
    assert s.consumers[0].max_batch_size == 50
    assert s.metrics.tags == {"service": "file"}
    assert loaded.sources["consumers.0.max_batch_size"] == f"file {settings_file}"


def test_file_named_by_deimos_config(settings_file: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIMOS_CONFIG", str(settings_file))
    assert deimos.get_settings().kafka.client_id == "from-file"


def test_an_application_reads_deimos_toml_of_its_directory_as_the_cli_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `uvicorn app:app` next to a deimos.toml: no configure() call, no DEIMOS_CONFIG
    (tmp_path / "deimos.toml").write_text('[kafka]\nclient_id = "from-cwd"\n')
    (tmp_path / "other.toml").write_text('[kafka]\nclient_id = "from-env"\n')
    (tmp_path / "named.toml").write_text('[kafka]\nclient_id = "named"\n')
    monkeypatch.delenv("DEIMOS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    config.reset()
    assert deimos.get_settings().kafka.client_id == "from-cwd"
    assert config.current().file == "deimos.toml"
    assert deimos.configure(producers={"backend": "test"}).kafka.client_id == "from-cwd"
    # DEIMOS_CONFIG, then configure(file=...), name another file instead
    monkeypatch.setenv("DEIMOS_CONFIG", "other.toml")
    assert deimos.configure(replace=True).kafka.client_id == "from-env"
    assert deimos.configure(file="named.toml", replace=True).kafka.client_id == "named"
    monkeypatch.delenv("DEIMOS_CONFIG")
    (tmp_path / "deimos.toml").unlink()
    assert deimos.configure(replace=True).kafka.client_id != "from-cwd"


def test_file_with_a_deimos_table(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('[deimos.kafka]\nclient_id = "nested"\n')
    assert build_settings(file=path, environ={}).settings.kafka.client_id == "nested"


def test_environment() -> None:
    loaded = build_settings(environ={
        "DEIMOS_KAFKA__BOOTSTRAP_SERVERS": "env-host:9092",
        "DEIMOS_KAFKA__CLIENT_ID": "12345",  # stays a string
        "DEIMOS_PRODUCERS__MAX_BATCH_SIZE": "25",
        "DEIMOS_PRODUCERS__IDEMPOTENCE": "false",
        "DEIMOS_METRICS__PROVIDERS": "log,mock",
        "DEIMOS_TRACING__PROVIDERS": '["mock"]',
        "DEIMOS_METRICS__TAGS": '{"env": "prod"}',
        "DEIMOS_CONSUMERS__0__TOPICS": "a,b",
        "DEIMOS_CONSUMERS__0__CLASS": "app:C",
        "DEIMOS_KAFKA__CONFIG__QUEUE_BUFFERING_MAX_MS": "7",
        "DEIMOS_TEST_BOOTSTRAP_SERVERS": "ignored:1",  # the test suite's, not a setting
        "DEIMOS_PLUGINS": "-jsonl",  # reserved, not a setting
        "NOT_DEIMOS__X": "1",
    })
    s = loaded.settings
    assert s.kafka.bootstrap_servers == "env-host:9092"
    assert s.kafka.client_id == "12345"
    assert s.producers.max_batch_size == 25
    assert s.producers.idempotence is False
    assert s.metrics.providers == ["log", "mock"]
    assert s.tracing.providers == ["mock"]
    assert s.metrics.tags == {"env": "prod"}
    assert s.consumers[0].topics == ["a", "b"]
    assert s.kafka.config == {"queue.buffering.max.ms": "7"}
    assert s.kafka.client_config()["queue.buffering.max.ms"] == "7"
    assert loaded.sources["kafka.config.queue.buffering.max.ms"] == (
        "env DEIMOS_KAFKA__CONFIG__QUEUE_BUFFERING_MAX_MS")


def test_precedence_defaults_file_python_environment(settings_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIMOS_KAFKA__BOOTSTRAP_SERVERS", "env-host:9092")
    settings = deimos.configure(
        file=settings_file,
        kafka={"bootstrap_servers": "python-host:9092", "client_id": "from-python"},
        producers={"max_batch_size": 20},
    )
    assert settings.kafka.bootstrap_servers == "env-host:9092"  # env > python > file
    assert settings.kafka.client_id == "from-python"  # python > file
    assert settings.producers.max_batch_size == 20
    assert settings.producers.backend == "test"  # file > default
    assert settings.consumers[0].group_id == "widget-group"  # file, untouched
    assert settings.schema.backend == "plain"  # default
    sources = config.current().sources
    assert sources["kafka.bootstrap_servers"] == "env DEIMOS_KAFKA__BOOTSTRAP_SERVERS"
    assert sources["kafka.client_id"] == "python"
    assert sources["producers.backend"] == f"file {settings_file}"
    assert "schema.backend" not in sources  # a default


def test_configure_replaces_settings_and_notifies() -> None:
    calls: list[str] = []
    config.on_change(lambda: calls.append("changed"))
    deimos.configure(producers={"backend": "test"})
    deimos.configure(producers={"backend": "kafka"})
    assert deimos.get_settings().producers.backend == "kafka"
    assert calls == ["changed", "changed"]
    config.reset()
    assert deimos.get_settings().producers.backend == "kafka_async"


# --- errors with dotted paths -----------------------------------------------------------------


def test_wrong_value_in_a_list_item() -> None:
    with pytest.raises(ConfigError) as exc:
        deimos.configure(consumers=[{"class": "a:B", "topics": ["t"]},
                                    {"class": "a:C", "max_batch_size": 0}])
    errors = _errors(exc)
    assert list(errors) == ["consumers.1.max_batch_size"]
    assert "greater than 0" in errors["consumers.1.max_batch_size"]
    assert "consumers.1.max_batch_size:" in str(exc.value)


def test_wrong_type() -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"kafka": {"bootstrap_servers": 9092}}, environ={})
    msg = _errors(exc)["kafka.bootstrap_servers"]
    assert "valid string" in msg and "got 9092 of type int" in msg
    assert "[from python]" in msg


def test_unknown_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"kafka": {"bootstrap_server": "x"}, "kafak": {}, "schema": {"bakend": 1}},
                       environ={})
    assert _errors(exc) == {
        "kafka.bootstrap_server": "unknown setting [from python]",
        "kafak": "unknown setting [from python]",
        "schema.bakend": "unknown setting [from python]",
    }


def test_every_error_is_reported_at_once(settings_file: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"producers": {"max_batch_size": -1}}, file=settings_file,
                       environ={"DEIMOS_CONSUMERS__0__MAX_BATCH_SIZE": "many",
                                "DEIMOS_KAFKA__SECURITY_PROTOCOL": "TLS"})
    errors = _errors(exc)
    assert set(errors) == {"producers.max_batch_size", "consumers.0.max_batch_size",
                           "kafka.security_protocol"}
    assert errors["consumers.0.max_batch_size"].endswith(
        "[from env DEIMOS_CONSUMERS__0__MAX_BATCH_SIZE]")
    assert "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'" in errors[
        "kafka.security_protocol"]


def test_missing_required_value() -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"producers": {"topics": [{"schema": "Widget"}]}}, environ={})
    assert _errors(exc) == {"producers.topics.0.topic": "Field required"}


def test_cross_field_rule() -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"consumers": [{"on_error": "dead_letter"}]}, environ={})
    assert "dead_letter_topic" in _errors(exc)["consumers.0"]


def test_bad_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        build_settings(file=missing, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="is not valid"):
        build_settings(file=bad, environ={})
    ini = tmp_path / "deimos.ini"
    ini.write_text("x")
    with pytest.raises(ConfigError, match=r"use a \.toml, \.yaml or \.yml file"):
        build_settings(file=ini, environ={})
    wrong_in_file = tmp_path / "deimos.yaml"
    wrong_in_file.write_text("producers:\n  max_batch_size: lots\n")
    with pytest.raises(ConfigError) as exc:
        build_settings(file=wrong_in_file, environ={})
    assert _errors(exc)["producers.max_batch_size"].endswith(f"[from file {wrong_in_file}]")


# --- plugin sections --------------------------------------------------------------------------


def test_plugin_declared_section(tmp_path: Path) -> None:
    path = tmp_path / "deimos.toml"
    path.write_text('[jsonl]\npath = "out.jsonl"\nfsync = true\n')
    settings = build_settings(file=path, environ={}).settings
    section = settings.section("jsonl")
    assert (section.path, section.fsync) == ("out.jsonl", True)
    assert build_settings(environ={}).settings.section("jsonl").path == "deimos-messages.jsonl"
    env = build_settings(environ={"DEIMOS_JSONL__PATH": "env.jsonl"}).settings
    assert env.section("jsonl").path == "env.jsonl"


def test_plugin_section_is_validated_like_the_rest() -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"jsonl": {"path": "x", "compress": True, "fsync": "sometimes"}},
                       environ={})
    errors = _errors(exc)
    assert errors["jsonl.compress"] == "unknown setting [from python]"
    assert "valid boolean" in errors["jsonl.fsync"]


def test_plugin_section_disappears_with_its_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIMOS_PLUGINS", "-jsonl")
    with pytest.raises(ConfigError) as exc:
        build_settings({"jsonl": {"path": "x"}}, environ={})
    assert _errors(exc) == {"jsonl": "unknown setting [from python]"}


# --- secrets ----------------------------------------------------------------------------------

SECRETS = ("hunter2", "sasl-pass-in-config", "registry-pw", "keypass", "regpass-in-url",
           "token-in-plugin")


def _secret_settings() -> dict[str, object]:
    return {
        "kafka": {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "svc",
            "sasl_password": "hunter2",
            "ssl_key_password": "keypass",
            "config": {"sasl.password": "sasl-pass-in-config", "linger.ms": 5},
        },
        # credentials in the URL; schema.user/password may not be set beside them (a
        # settings error since issue 16), so _password_settings() holds those
        "schema": {"registry_url": "https://svc:regpass-in-url@registry:8081"},
        "producers": {"config": {"sasl.oauthbearer.client.secret": "token-in-plugin"}},
    }


def _password_settings() -> dict[str, object]:
    return {"schema": {"registry_url": "https://registry:8081", "user": "svc",
                       "password": "registry-pw"}}


def _assert_masked(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in:\n{text}"


def test_secrets_masked_in_repr_and_str() -> None:
    settings = build_settings(_secret_settings(), environ={}).settings
    with_password = build_settings(_password_settings(), environ={}).settings
    for text in (repr(settings), str(settings), repr(settings.kafka), str(settings.schema),
                 f"{settings.producers!r}", repr(with_password), str(with_password.schema)):
        _assert_masked(text)
    assert MASK in repr(settings.kafka)
    assert "svc" in repr(settings.kafka)  # only the secrets are hidden
    assert "https://svc:**********@registry:8081" in repr(settings.schema)


def test_secrets_masked_in_masked_dict_but_usable() -> None:
    settings = build_settings(_secret_settings(), environ={}).settings
    data = masked_dict(settings)
    _assert_masked(json.dumps(data))
    assert data["kafka"]["sasl_password"] == MASK
    assert data["kafka"]["config"] == {"sasl.password": MASK, "linger.ms": 5}
    assert data["schema"]["registry_url"] == "https://svc:**********@registry:8081"
    with_password = build_settings(_password_settings(), environ={}).settings
    assert masked_dict(with_password)["schema"]["password"] == MASK
    # the real values are still there for the client
    conf = settings.kafka.client_config()
    assert conf["sasl.password"] == "sasl-pass-in-config"  # pass-through wins
    assert conf["ssl.key.password"] == "keypass"
    assert with_password.schema.password is not None
    assert with_password.schema.password.get_secret_value() == "registry-pw"


def test_secrets_masked_in_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as exc:
        build_settings({"kafka": {"sasl_password": ["hunter2"],
                                  "config": {"sasl.password": ["sasl-pass-in-config"]}}},
                       environ={})
    _assert_masked(str(exc.value))
    settings = build_settings(_secret_settings(), environ={}).settings
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r", settings, settings.kafka)
    _assert_masked(caplog.text)


@pytest.mark.parametrize("as_json", [False, True])
def test_secrets_masked_in_config_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       as_json: bool) -> None:
    path = tmp_path / "deimos.toml"
    path.write_text(textwrap.dedent("""
        [kafka]
        bootstrap_servers = "file-host:9092"
        sasl_username = "svc"
        ssl_key_password = "keypass"

        [kafka.config]
        "sasl.password" = "sasl-pass-in-config"

        [schema]
        registry_url = "https://svc:regpass-in-url@registry:8081"

        [producers.config]
        "sasl.oauthbearer.client.secret" = "token-in-plugin"
    """))
    monkeypatch.setenv("DEIMOS_KAFKA__SASL_PASSWORD", "hunter2")
    args = ["--config", str(path), "config", "show"] + (["--json"] if as_json else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    _assert_masked(result.output)
    assert MASK in result.output
    if as_json:
        shown = json.loads(result.output)
        assert shown["settings"]["kafka"]["sasl_password"] == MASK
        assert shown["settings"]["kafka"]["config"]["sasl.password"] == MASK
        assert shown["settings"]["kafka"]["bootstrap_servers"] == "file-host:9092"
        assert shown["sources"]["kafka.sasl_password"] == "env DEIMOS_KAFKA__SASL_PASSWORD"
        assert shown["sources"]["kafka.bootstrap_servers"] == f"file {path}"
        assert shown["settings"]["jsonl"]["path"] == "deimos-messages.jsonl"
    else:
        assert "kafka.sasl_password" in result.output
        assert "env DEIMOS_KAFKA__SASL_PASSWORD" in result.output
        assert "default" in result.output


def test_config_show_reports_a_bad_setting(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from deimos.cli import main

    path = tmp_path / "deimos.toml"
    path.write_text('[kafka]\nsasl_password = 5\nbootstrap_server = "x"\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(path), "config", "show"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "kafka.bootstrap_server: unknown setting" in err
    assert "kafka.sasl_password" in err


def test_version_command() -> None:
    result = CliRunner().invoke(cli, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"deimos-kafka {deimos.__version__}\n")
    assert "librdkafka" in result.output


def test_a_second_configure_merges_onto_the_first() -> None:
    deimos.configure(schema={"backend": "mock", "path": "/srv/schemas"},
                     kafka={"bootstrap_servers": "k1:9092"})
    merged = deimos.configure(metrics={"providers": ["mock"]},
                              kafka={"client_id": "svc"})
    assert merged.schema.backend == "mock" and merged.schema.path == "/srv/schemas"
    assert merged.kafka.bootstrap_servers == "k1:9092" and merged.kafka.client_id == "svc"
    assert merged.metrics.providers == ["mock"]


def test_configure_with_replace_starts_over() -> None:
    deimos.configure(schema={"backend": "mock"})
    fresh = deimos.configure(metrics={"providers": ["mock"]}, replace=True)
    assert fresh.schema.backend == "plain" and fresh.metrics.providers == ["mock"]


def test_a_second_configure_keeps_the_file_of_the_first(tmp_path: Path) -> None:
    path = tmp_path / "deimos.toml"
    path.write_text('[schema]\nbackend = "mock"\n')
    deimos.configure(file=path)
    assert deimos.configure(metrics={"providers": ["mock"]}).schema.backend == "mock"


def test_malformed_yaml_is_a_settings_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deimos.yaml"
    path.write_text("kafka:\n  bootstrap_servers: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        build_settings(file=path, environ={})
    assert "deimos.yaml" in str(info.value) and "is not valid" in str(info.value)


def test_model_dump_masks_credentials_in_urls() -> None:
    settings = build_settings({"schema": {"registry_url": "http://svc:hunter2@reg:8081"},
                               "kafka": {"config": {"x.url": "http://a:topsecret@h"}}},
                              environ={}).settings
    dumped = json.dumps(settings.model_dump(mode="json"))
    assert "hunter2" not in dumped and "topsecret" not in dumped
    assert "http://svc:**********@reg:8081" in dumped
    # what deimos reads itself still works
    from deimos.config import settings_data

    assert settings_data(settings)["schema"]["registry_url"] == "http://svc:hunter2@reg:8081"


def test_version_command_prints_the_client_versions_whole() -> None:
    import confluent_kafka

    result = CliRunner().invoke(cli, ["version"])
    assert f"confluent-kafka {confluent_kafka.__version__}," in result.output
    assert f"librdkafka {confluent_kafka.libversion()[0]}" in result.output


@pytest.mark.parametrize(("section", "typo", "setting"), [
    ("producers", "kafak", "producers.backend"),
    ("schema", "avroo", "schema.backend"),
])
def test_deimos_run_refuses_an_unknown_plugin_name_at_start(tmp_path: Path, section: str,
                                                           typo: str, setting: str) -> None:
    import subprocess
    import sys

    path = tmp_path / "deimos.toml"
    path.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[{section}]\n'
                    f'backend = "{typo}"\n')
    proc = subprocess.run([sys.executable, "-m", "deimos", "--config", str(path), "run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{setting}: Unknown" in proc.stderr and repr(typo) in proc.stderr
    assert "Traceback" not in proc.stderr
