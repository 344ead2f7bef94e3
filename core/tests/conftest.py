"""Fixtures for the core's plugin, configuration, CLI and docs tests.

Nothing here is autouse: a module opts in with
``pytestmark = pytest.mark.usefixtures("isolated_deimos")`` so that tests written by others in
this directory keep whatever isolation they choose.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from deimos import config as deimos_config
from deimos.plugins import reset_registry


@pytest.fixture
def isolated_deimos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``DEIMOS_*`` settings from the outer environment, a fresh plugin registry and no
    configured settings; all three are reset again after the test."""
    for name in list(os.environ):
        if name.startswith("DEIMOS_") and not name.startswith("DEIMOS_TEST_"):
            monkeypatch.delenv(name)
    reset_registry(None)
    deimos_config.reset()
    yield
    deimos_config.reset()
    reset_registry(None)


FakeDist = Callable[..., Path]


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Install a fake distribution: a ``*.dist-info`` folder (METADATA and entry_points.txt)
    plus modules, in a directory put first on ``sys.path``.

    ``fake_dist("deimos-fake", {"deimos.schema_backends": {"fake": "fake_mod:Backend"}},
    {"fake_mod": "<source>"}, version="1.2.3")``; module sources are dedented. Modules it
    imported are dropped from ``sys.modules`` afterwards.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def make(
        name: str,
        entry_points: Mapping[str, Mapping[str, str]],
        modules: Mapping[str, str] | None = None,
        *,
        version: str = "1.0.0",
    ) -> Path:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{ep} = {target}" for ep, target in eps.items())
            lines.append("")
        (info / "entry_points.txt").write_text("\n".join(lines))
        for module, source in (modules or {}).items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        importlib.invalidate_caches()
        return info

    yield make
    for module in created:
        sys.modules.pop(module, None)


@pytest.fixture
def uninstalled(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Hide the entry points of the named distributions, as if they were not installed
    (every plugin of this repository is installed in its dev environment)."""
    from importlib import metadata

    import deimos.plugins

    def hide(*distributions: str) -> None:
        real = metadata.entry_points

        def entry_points(**kwargs: Any) -> Any:
            return [ep for ep in real(**kwargs)
                    if ep.dist is None or ep.dist.name not in distributions]

        monkeypatch.setattr(deimos.plugins.metadata, "entry_points", entry_points)
        reset_registry(None)

    return hide
