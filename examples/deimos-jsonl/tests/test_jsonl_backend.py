"""The example plugin, used the way a service would: installed, selected by name, configured
through its own ``[jsonl]`` settings section."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import deimos
from deimos import config
from deimos.plugins import get_registry, reset_registry
from deimos_jsonl import JsonlBackend, read_messages


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("DEIMOS_") and not name.startswith("DEIMOS_TEST_"):
            monkeypatch.delenv(name)
    reset_registry(None)
    config.reset()
    yield
    config.reset()
    reset_registry(None)


class WidgetProducer(deimos.Producer):
    topic = "widgets"
    key_config = "plain"


def test_installed_through_its_entry_point() -> None:
    info = get_registry().get("producer_backend", "jsonl")
    assert info.distribution == "deimos-jsonl"
    assert isinstance(info.obj, JsonlBackend)
    assert "deimos_backend_execute" in info.hooks


def test_publish_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "messages.jsonl"
    deimos.configure(producers={"backend": "jsonl"}, jsonl={"path": str(out)})
    WidgetProducer.publish("first", key="w1", headers={"source": "test"})
    WidgetProducer.publish_list(["second", deimos.tombstone("w3")], keys=["w2", None])

    rows = read_messages(str(out))
    assert [(r["topic"], r["key"], r["value"]) for r in rows] == [
        ("widgets", b"w1", b"first"),
        ("widgets", b"w2", b"second"),
        ("widgets", b"w3", None),
    ]
    assert rows[0]["headers"] == [("source", b"test")]


def test_settings_section_from_a_file(tmp_path: Path) -> None:
    out = tmp_path / "from-file.jsonl"
    settings_file = tmp_path / "deimos.toml"
    settings_file.write_text(
        f'[producers]\nbackend = "jsonl"\n\n[jsonl]\npath = "{out}"\nfsync = true\n')
    deimos.configure(file=settings_file)
    WidgetProducer.publish("x", key="k", sync=True)
    assert [r["value"] for r in read_messages(str(out))] == [b"x"]


def test_unknown_setting_in_its_section() -> None:
    with pytest.raises(deimos.ConfigError, match=r"jsonl\.compress: unknown setting"):
        deimos.configure(jsonl={"compress": True})
