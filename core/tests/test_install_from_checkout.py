"""Installing from a local checkout, as a service would before a release: the core plus one
plugin by path, into a fresh project (``uv add --editable``) and into fresh virtual
environments (``uv pip install --no-sources``; ``pip install -e`` of both paths), as
docs/installation.md says.

Dependencies come from the uv cache (PyPI only when the cache lacks them); the checkout's
distributions are built from their paths, so the uv installs take seconds, not the wheel
build of test_wheels.py; pip's (about 18 s: it has no such cache) is marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")


def _run(*args: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT", "PIP_", "DEIMOS_"))}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _plugins(deimos: Path, cwd: Path) -> set[str]:
    done = _run(deimos, "plugins", "--json", cwd=cwd)
    assert "Warning" not in done.stderr, done.stderr  # no AuthlibDeprecationWarning
    return {row["distribution"] for row in json.loads(done.stdout)}


def test_uv_add_editable_paths_into_a_fresh_project(tmp_path: Path) -> None:
    project = tmp_path / "orders-service"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "orders-service"\nversion = "0.1.0"\n'
        f'requires-python = ">={sys.version_info[0]}.{sys.version_info[1]}"\n'
        'dependencies = []\n')
    _run("uv", "add", "--python", sys.executable, "--editable", ROOT / "core",
         ROOT / "plugins" / "avro", cwd=project)
    text = (project / "pyproject.toml").read_text()
    assert 'deimos-kafka = { path = "' in text and "editable = true" in text, text
    assert _plugins(project / ".venv" / "bin" / "deimos", project) == {"deimos-kafka",
                                                                       "deimos-avro"}


def test_uv_pip_install_paths_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run("uv", "venv", "-q", "--python", sys.executable, venv, cwd=tmp_path)
    # --no-sources: without it uv applies the checkout's workspace sources, which link the
    # core into the venv as an editable install (docs/installation.md)
    _run("uv", "pip", "install", "-q", "--no-sources", "--python", venv / "bin" / "python",
         ROOT / "core", ROOT / "plugins" / "avro", cwd=tmp_path)
    assert _plugins(venv / "bin" / "deimos", tmp_path) == {"deimos-kafka", "deimos-avro"}
    # a copy, not a link to the checkout: the service runs without it
    location = _run(venv / "bin" / "python", "-c", "import deimos; print(deimos.__file__)",
                    cwd=tmp_path).stdout
    assert str(venv) in location


@pytest.mark.slow
def test_pip_install_editable_paths_into_a_fresh_venv(tmp_path: Path) -> None:
    """``pip install -e core[avro]`` alone cannot work before a release (deimos-avro==0.1.0
    is on no index); with the plugin's path given too, pip resolves it from there."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-e", f"{ROOT / 'core'}[avro]", "-e", ROOT / "plugins" / "avro", cwd=tmp_path)
    assert _plugins(venv / "bin" / "deimos", tmp_path) == {"deimos-kafka", "deimos-avro"}
