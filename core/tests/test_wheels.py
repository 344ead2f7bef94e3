"""Wheel isolation: every workspace member builds to its own wheel, and an extra of
``deimos-kafka`` installs the core plus that one plugin distribution, nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the wheels"),
]


def _run(*args: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT", "PIP_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _deimos_distributions(python: Path) -> dict[str, str]:
    listed = json.loads(_run(python, "-m", "pip", "list", "--format", "json"))
    return {p["name"].lower(): p["version"] for p in listed
            if p["name"].lower().startswith("deimos")}


def _plugin_distributions(venv: Path) -> set[str]:
    out = _run(venv / "bin" / "deimos", "plugins", "--json", cwd=venv)
    return {row["distribution"] for row in json.loads(out)}


def test_extras_install_only_their_plugin(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run("uv", "build", "--all-packages", "-o", dist)
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    for name in ("deimos_kafka-", "deimos_avro-", "deimos_jsonl-"):
        assert any(w.startswith(name) for w in wheels), wheels
    assert not any("template" in w for w in wheels), wheels

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"

    # plain deimos-kafka: the core and no plugin distribution
    _run(python, "-m", "pip", "install", "-q", "--find-links", dist, "deimos-kafka")
    assert set(_deimos_distributions(python)) == {"deimos-kafka"}
    assert _plugin_distributions(venv) == {"deimos-kafka"}

    # the avro extra adds deimos-avro and nothing else (deimos-jsonl is in dist/ too)
    _run(python, "-m", "pip", "install", "-q", "--find-links", dist, "deimos-kafka[avro]")
    installed = _deimos_distributions(python)
    assert set(installed) == {"deimos-kafka", "deimos-avro"}
    assert installed["deimos-avro"] == installed["deimos-kafka"]  # one version for all
    assert _plugin_distributions(venv) <= {"deimos-kafka", "deimos-avro"}
