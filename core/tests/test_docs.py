"""The docs follow the code: every hookspec is in the hook reference with its exact signature,
the configuration reference matches the settings models, code taken from files matches them,
and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deimos import config, hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HOOKS_PAGE = DOCS / "plugins" / "hooks.md"


def _hookspecs() -> dict[str, Callable[..., Any]]:
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("deimos_") and callable(fn)
            and hookspecs.hookspec.project_name + "_spec" in vars(fn)}


def _signature(fn: Callable[..., Any]) -> str:
    """``def name(arg: Type, ...) -> Return`` as written in hookspecs.py."""
    annotations = fn.__annotations__
    params = ", ".join(f"{p}: {annotations[p]}" for p in inspect.signature(fn).parameters)
    return f"def {fn.__name__}({params}) -> {annotations['return']}"


def _documented_signatures() -> dict[str, str]:
    """``### name`` headings, each followed by a python block holding its ``def``."""
    text = HOOKS_PAGE.read_text()
    found = {}
    for match in re.finditer(r"^### (\w+)\n+```python\n(def .*?)\n```", text, re.M | re.S):
        found[match[1]] = " ".join(match[2].split())
    return found


def test_hookspecs_found() -> None:
    specs = _hookspecs()
    assert "deimos_backend_execute" in specs and "deimos_tracing_inject" in specs
    assert len(specs) >= 20


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_hook_is_documented_with_its_signature(name: str) -> None:
    documented = _documented_signatures()
    assert name in documented, f"hookspec {name} is missing from {HOOKS_PAGE}"
    assert documented[name] == _signature(_hookspecs()[name]), (
        f"the signature of {name} in {HOOKS_PAGE} differs from deimos/hookspecs.py")


@pytest.mark.parametrize("name", sorted(_hookspecs()))
def test_hook_docstring_is_documented(name: str) -> None:
    first_sentence = inspect.cleandoc(_hookspecs()[name].__doc__ or "").split(".")[0]
    text = " ".join(HOOKS_PAGE.read_text().replace("``", "`").split())
    assert " ".join(first_sentence.replace("``", "`").split()) in text


def test_no_documented_hook_is_gone() -> None:
    assert set(_documented_signatures()) <= set(_hookspecs())


def test_cli_reference_is_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_reference.py"),
                             "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_configuration_reference_is_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_reference.py"),
                             "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def _models(model: type[Any], seen: set[type[Any]]) -> None:
    seen.add(model)
    for field in model.model_fields.values():
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            inner = [arg, *getattr(arg, "__args__", ())]
            for t in inner:
                if isinstance(t, type) and issubclass(t, config.Section) and t not in seen:
                    _models(t, seen)


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (DOCS / "configuration.md").read_text()
    models: set[type[Any]] = set()
    _models(config.Settings, models)
    models.discard(config.Settings)
    models.discard(config.KeyConfig)  # documented as the value of key_config
    for model in models:
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"| `{key}` |" in text, f"{model.__name__}.{key} is not in configuration.md"
    for name, field in config.Settings.model_fields.items():
        key = field.alias or name
        assert re.search(rf"^### `{re.escape(key)}(\[\])?`", text, re.M), key


def test_code_taken_from_files_matches_them() -> None:
    """A python block whose first line is ``# <path>`` must appear verbatim in that file."""
    checked = 0
    for page in DOCS.rglob("*.md"):
        for block in re.findall(r"```python\n# ([\w./-]+\.py)\n(.*?)```", page.read_text(),
                                re.S):
            path, code = block
            source = (ROOT / path).read_text()
            assert code.strip() in source, f"{page}: the block from {path} differs from it"
            checked += 1
    assert checked >= 3


def test_nav_lists_only_pages_that_exist() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items: Any) -> list[str]:
        out = []
        for item in items:
            for value in (item.values() if isinstance(item, dict) else [item]):
                out.extend(pages(value) if isinstance(value, list) else [value])
        return out

    for page in pages(nav):
        assert (DOCS / page).is_file(), page


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (
    Path(sys.executable).parent / "mkdocs").exists(), reason="mkdocs is not installed")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    result = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "plugins" / "hooks" / "index.html").is_file()
    # the Material theme: code blocks get copy buttons, the site has search
    assert "content.code.copy" in (tmp_path / "site" / "index.html").read_text()
    assert (tmp_path / "site" / "search" / "search_index.json").is_file()
