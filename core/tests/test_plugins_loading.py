"""Loading plugins from entry points, and the errors a user can act on: unknown names,
duplicate names, broken plugins, signature mismatches, ``DEIMOS_PLUGINS`` and strict mode.

Entry-point cases use fake distributions (``*.dist-info`` on ``sys.path``, see ``fake_dist``)
and a fresh :class:`PluginRegistry` each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

import deimos
from deimos.backends import test as test_backend
from deimos.cli import cli, main
from deimos.errors import DuplicatePluginError, PluginLoadError, UnknownPluginError
from deimos.plugins import GROUPS, PluginRegistry, get_registry

pytestmark = pytest.mark.usefixtures("isolated_deimos")

GOOD_SCHEMA = """
    import deimos

    class Backend:
        @deimos.hookimpl
        def deimos_schema_encode(self, context, payloads):
            return [None if p is None else b"{TAG}" + str(p).encode() for p in payloads]

        @deimos.hookimpl
        def deimos_schema_decode(self, context, data):
            return [None if d is None else d[len(b"{TAG}"):].decode() for d in data]
"""

BROKEN = """
    import deimos_no_such_dependency  # noqa

    class Backend:
        pass
"""

MISMATCH = """
    import deimos

    class Backend:
        @deimos.hookimpl
        def deimos_schema_encode(self, context, payloads, compression):
            return []

        @deimos.hookimpl
        def deimos_schema_decode(self, context, data):
            return []
"""


def _schema(module: str, tag: str = "x:") -> dict[str, str]:
    return {module: GOOD_SCHEMA.replace("{TAG}", tag)}


def _plugins_json(args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["plugins", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


# --- loading from entry points ----------------------------------------------------------------


def test_entry_point_plugin_is_loaded_with_its_distribution(fake_dist: Any) -> None:
    fake_dist("deimos-fakeok", {"deimos.schema_backends": {"fake_ok": "fake_ok_mod:Backend"}},
              _schema("fake_ok_mod"), version="2.3.4")
    info = PluginRegistry().get("schema_backend", "fake_ok")
    assert (info.kind, info.name, info.distribution, info.version, info.entry_point) == (
        "schema_backend", "fake_ok", "deimos-fakeok", "2.3.4", "fake_ok_mod:Backend")
    assert info.hooks == ["deimos_schema_decode", "deimos_schema_encode"]
    assert info.error is None


def test_builtins_come_from_core_entry_points() -> None:
    registry = PluginRegistry()
    builtins = {(p.kind, p.name) for p in registry.all() if p.distribution == "deimos-kafka"}
    assert builtins >= {
        ("producer_backend", "kafka"), ("producer_backend", "kafka_async"),
        ("producer_backend", "test"), ("schema_backend", "plain"), ("schema_backend", "mock"),
        ("metrics", "log"), ("metrics", "mock"), ("tracing", "log"), ("tracing", "mock"),
    }
    assert all(p.entry_point for p in registry.all() if p.distribution == "deimos-kafka")


def test_registry_without_entry_points_is_empty() -> None:
    assert PluginRegistry(entry_points=False).all() == []


def test_plugins_json_lists_builtins_and_the_example_plugin() -> None:
    rows = _plugins_json()
    for row in rows:
        assert {"kind", "name", "distribution", "version", "hooks"} <= set(row)
        assert row["kind"] in GROUPS
    by_key = {(r["kind"], r["name"]): r for r in rows}
    jsonl = by_key[("producer_backend", "jsonl")]
    assert jsonl["distribution"] == "deimos-jsonl"
    assert jsonl["version"] == "0.1.0"
    assert jsonl["error"] is None
    assert {"deimos_backend_execute", "deimos_settings_sections"} <= set(jsonl["hooks"])
    plain = by_key[("schema_backend", "plain")]
    assert plain["distribution"] == "deimos-kafka"
    assert plain["version"] == deimos.__version__
    assert "deimos_schema_encode" in plain["hooks"]
    assert by_key[("metrics", "log")]["distribution"] == "deimos-kafka"
    assert by_key[("tracing", "mock")]["distribution"] == "deimos-kafka"


def test_plugins_table() -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "jsonl" in result.output and "deimos-jsonl" in result.output
    assert "plain" in result.output


# --- unknown names ----------------------------------------------------------------------------

UNKNOWN = re.compile(
    r"^Unknown schema backend '(?P<name>\w+)'\. Installed: (?P<installed>[\w, ]+)\. "
    r'Install it with: pip install "deimos-kafka\[(?P<extra>\w+)\]"$'
)


@pytest.mark.parametrize(("name", "extra"), [("proto_local", "protobuf"),
                                             ("json_local", "jsonschema")])
def test_unknown_schema_backend_lists_installed_and_the_extra(
        name: str, extra: str, uninstalled: Callable[..., None]) -> None:
    uninstalled(f"deimos-{extra}")
    with pytest.raises(UnknownPluginError) as info:
        PluginRegistry().get("schema_backend", name)
    match = UNKNOWN.match(str(info.value))
    assert match, str(info.value)
    assert match["name"] == name
    assert match["extra"] == extra
    installed = match["installed"].split(", ")
    assert {"mock", "plain"} <= set(installed)
    assert installed == sorted(installed)


def test_unknown_name_from_configuration_fails_on_publish(
        uninstalled: Callable[..., None]) -> None:
    uninstalled("deimos-protobuf")
    deimos.configure(schema={"backend": "proto_local"}, producers={"backend": "test"})
    producer = type("P", (deimos.Producer,), {"topic": "t"})
    with pytest.raises(UnknownPluginError, match=r"Unknown schema backend 'proto_local'"):
        producer.publish("x")


def test_unknown_name_without_a_known_extra_names_the_group() -> None:
    with pytest.raises(UnknownPluginError) as info:
        PluginRegistry().get("producer_backend", "carrier_pigeon")
    message = str(info.value)
    assert message.startswith("Unknown producer backend 'carrier_pigeon'. Installed: ")
    assert "jsonl" in message and "test" in message
    assert "'deimos.producer_backends'" in message


# --- duplicates -------------------------------------------------------------------------------


def test_two_distributions_claiming_one_name(fake_dist: Any) -> None:
    fake_dist("deimos-dup-one", {"deimos.schema_backends": {"dup": "dup_one:Backend"}},
              _schema("dup_one", "1:"))
    fake_dist("deimos-dup-two", {"deimos.schema_backends": {"dup": "dup_two:Backend"}},
              _schema("dup_two", "2:"))
    registry = PluginRegistry()
    with pytest.raises(DuplicatePluginError) as info:
        registry.get("schema_backend", "dup")
    message = str(info.value)
    assert "'dup'" in message
    assert "deimos-dup-one (dup_one:Backend)" in message
    assert "deimos-dup-two (dup_two:Backend)" in message
    # neither is callable, and nothing else is affected
    assert "dup" not in registry.names("schema_backend")
    assert not any(registry.pm.get_name(p).endswith(":dup")  # type: ignore[union-attr]
                   for p in registry.pm.get_plugins())
    assert registry.get("schema_backend", "plain").error is None


def test_duplicate_resolved_by_denying_one_distribution(
        fake_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("deimos-dup-one", {"deimos.schema_backends": {"dup": "dup_one:Backend"}},
              _schema("dup_one", "1:"))
    fake_dist("deimos-dup-two", {"deimos.schema_backends": {"dup": "dup_two:Backend"}},
              _schema("dup_two", "2:"))
    monkeypatch.setenv("DEIMOS_PLUGINS", "-deimos-dup-one:dup")
    info = PluginRegistry().get("schema_backend", "dup")
    assert info.distribution == "deimos-dup-two"


def test_registering_a_taken_name_is_an_error() -> None:
    with pytest.raises(DuplicatePluginError, match=r"'plain' is already registered.*deimos-kafka"):
        get_registry().register("schema_backend", "plain", object())


# --- broken plugins ---------------------------------------------------------------------------


def test_broken_plugin_is_reported_and_isolated(fake_dist: Any) -> None:
    fake_dist("deimos-broken", {"deimos.schema_backends": {"broken": "broken_mod:Backend"}},
              {"broken_mod": BROKEN}, version="0.0.1")
    fake_dist("deimos-fine", {"deimos.schema_backends": {"fine": "fine_mod:Backend"}},
              _schema("fine_mod"))
    registry = PluginRegistry()
    [broken] = [p for p in registry.all("schema_backend") if p.name == "broken"]
    assert broken.distribution == "deimos-broken"
    assert broken.error is not None
    for part in ("'broken'", "deimos-broken",
                 "deimos.schema_backends:broken = broken_mod:Backend",
                 "ModuleNotFoundError", "deimos_no_such_dependency"):
        assert part in broken.error
    with pytest.raises(PluginLoadError) as info:
        registry.get("schema_backend", "broken")
    assert str(info.value) == broken.error
    assert "broken" not in registry.names("schema_backend")
    assert registry.get("schema_backend", "fine").error is None


def test_entry_point_naming_a_missing_attribute(fake_dist: Any) -> None:
    fake_dist("deimos-typo", {"deimos.metrics": {"typo": "typo_mod:Metrcs"}},
              {"typo_mod": "class Metrics:\n    pass\n"})
    error = PluginRegistry().all("metrics")
    [typo] = [p for p in error if p.name == "typo"]
    assert typo.error is not None
    assert "deimos-typo" in typo.error and "AttributeError" in typo.error


def test_a_broken_plugin_does_not_break_other_commands(fake_dist: Any) -> None:
    fake_dist("deimos-broken", {"deimos.schema_backends": {"broken": "broken_mod:Backend"}},
              {"broken_mod": BROKEN})
    rows = _plugins_json()
    [broken] = [r for r in rows if r["name"] == "broken"]
    assert "ModuleNotFoundError" in broken["error"]
    assert broken["hooks"] == []
    assert any(r["name"] == "plain" and r["error"] is None for r in rows)

    table = CliRunner().invoke(cli, ["plugins"])
    assert table.exit_code == 0, table.output
    assert "ERROR" in table.output

    shown = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert shown.exit_code == 0, shown.output

    # producing with the plugins that work still works
    test_backend.clear()
    deimos.configure(producers={"backend": "test"}, schema={"backend": "plain"})
    type("P", (deimos.Producer,), {"topic": "t"}).publish("fine")
    assert [m.encoded_payload for m in test_backend.messages()] == [b"fine"]


# --- contract violations ----------------------------------------------------------------------


def test_signature_mismatch_from_an_entry_point(fake_dist: Any) -> None:
    fake_dist("deimos-mismatch", {"deimos.schema_backends": {"mismatch": "mismatch_mod:Backend"}},
              {"mismatch_mod": MISMATCH})
    registry = PluginRegistry()
    with pytest.raises(PluginLoadError) as info:
        registry.get("schema_backend", "mismatch")
    message = str(info.value)
    for part in ("'mismatch'", "deimos-mismatch",
                 "deimos.schema_backends:mismatch = mismatch_mod:Backend",
                 "does not match the contract", "deimos_schema_encode", "compression"):
        assert part in message, message
    assert not any(registry.pm.get_name(p) == "schema_backend:mismatch"
                   for p in registry.pm.get_plugins())


def test_signature_mismatch_when_registering() -> None:
    class Backend:
        @deimos.hookimpl
        def deimos_backend_execute(self, context: Any, messages: Any, sync: Any,
                                   retries: int) -> None:
            pass

    with pytest.raises(PluginLoadError) as info:
        get_registry().register("producer_backend", "bad_sig", Backend())
    message = str(info.value)
    assert message.startswith("Producer backend 'bad_sig' does not match the contract")
    assert "retries" in message
    assert "bad_sig" not in get_registry().names("producer_backend")


def test_missing_required_hook() -> None:
    class EncodeOnly:
        @deimos.hookimpl
        def deimos_schema_encode(self, context: Any, payloads: Any) -> list[bytes]:
            return []

    with pytest.raises(PluginLoadError,
                       match=r"Schema backend 'half' does not implement required hook\(s\) "
                             r"deimos_schema_decode"):
        get_registry().register("schema_backend", "half", EncodeOnly())


def test_hooks_of_another_kind() -> None:
    class Confused:
        @deimos.hookimpl
        def deimos_metrics_increment(self, name: str, value: int, tags: Any) -> None:
            pass

    with pytest.raises(PluginLoadError, match=r"implements hooks of another kind for a "
                                              r"tracing provider: deimos_metrics_increment"):
        get_registry().register("tracing", "confused", Confused())


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="Unknown plugin kind 'serializer'"):
        get_registry().register("serializer", "x", object())


# --- DEIMOS_PLUGINS ---------------------------------------------------------------------------


def test_deny_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIMOS_PLUGINS", "-jsonl, -metrics:mock")
    registry = PluginRegistry()
    assert "jsonl" not in registry.names("producer_backend")
    assert "mock" not in registry.names("metrics")
    assert "mock" in registry.names("schema_backend")  # only the metrics one was denied
    with pytest.raises(UnknownPluginError) as info:
        registry.get("producer_backend", "jsonl")
    assert "disabled by DEIMOS_PLUGINS" in str(info.value)
    assert "deimos-jsonl" in str(info.value)


def test_allow_list_keeps_builtins(fake_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("deimos-fakeok", {"deimos.schema_backends": {"fake_ok": "fake_ok_mod:Backend"}},
              _schema("fake_ok_mod"))
    monkeypatch.setenv("DEIMOS_PLUGINS", "producer_backend:jsonl")
    registry = PluginRegistry()
    third_party = {p.name for p in registry.all() if p.distribution != "deimos-kafka"}
    assert third_party == {"jsonl"}
    assert {"plain", "mock"} <= set(registry.names("schema_backend"))
    with pytest.raises(UnknownPluginError, match="disabled by DEIMOS_PLUGINS"):
        registry.get("schema_backend", "fake_ok")


def test_denied_plugin_is_not_even_imported(fake_dist: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("deimos-broken", {"deimos.schema_backends": {"broken": "broken_mod:Backend"}},
              {"broken_mod": BROKEN})
    monkeypatch.setenv("DEIMOS_PLUGINS", "-broken")
    monkeypatch.setenv("DEIMOS_PLUGINS_STRICT", "1")
    registry = PluginRegistry()
    registry.load()  # strict, yet nothing fails: the broken plugin was never loaded
    assert "broken" not in {p.name for p in registry.all()}


# --- strict mode ------------------------------------------------------------------------------


def test_strict_mode_fails_on_a_broken_plugin(fake_dist: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("deimos-broken", {"deimos.schema_backends": {"broken": "broken_mod:Backend"}},
              {"broken_mod": BROKEN})
    assert PluginRegistry().names("schema_backend")  # lenient by default

    monkeypatch.setenv("DEIMOS_PLUGINS_STRICT", "1")
    registry = PluginRegistry()
    with pytest.raises(PluginLoadError, match="deimos-broken"):
        registry.load()
    with pytest.raises(PluginLoadError, match="deimos-broken"):  # and keeps failing
        registry.all()
    with pytest.raises(PluginLoadError, match="deimos-broken"):
        PluginRegistry(strict=True).load()
    PluginRegistry(strict=False).load()


def test_strict_mode_fails_on_a_duplicate(fake_dist: Any) -> None:
    fake_dist("deimos-dup-one", {"deimos.metrics": {"dup": "dup_one:M"}},
              {"dup_one": "class M:\n    pass\n"})
    fake_dist("deimos-dup-two", {"deimos.metrics": {"dup": "dup_two:M"}},
              {"dup_two": "class M:\n    pass\n"})
    with pytest.raises(DuplicatePluginError, match=r"deimos-dup-one.*deimos-dup-two"):
        PluginRegistry(strict=True).load()


def test_strict_mode_on_the_command_line(fake_dist: Any, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake_dist("deimos-broken", {"deimos.schema_backends": {"broken": "broken_mod:Backend"}},
              {"broken_mod": BROKEN})
    monkeypatch.setenv("DEIMOS_PLUGINS_STRICT", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["plugins"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "deimos-broken" in err and "ModuleNotFoundError" in err
