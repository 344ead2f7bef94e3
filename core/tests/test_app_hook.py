"""The application hook's setting and its errors (the hook running once in each CLI process
is shown through real processes in test_run_as_service.py and deimos-db's
test_db_run_as_service.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deimos.config import build_settings

pytestmark = pytest.mark.usefixtures("isolated_deimos")


def test_app_is_a_top_level_setting_also_from_the_environment() -> None:
    loaded = build_settings(environ={"DEIMOS_APP": "orders.app:setup"})
    assert loaded.settings.app == "orders.app:setup"
    assert loaded.sources["app"] == "env DEIMOS_APP"


def test_a_wrong_app_hook_stops_deimos_run_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEIMOS_")}
    out = subprocess.run([sys.executable, "-m", "deimos", "--app", "no_such_module_xyz:setup",
                          "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stderr
    assert "app: cannot import 'no_such_module_xyz'" in out.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ("svc_mod:missing", "'svc_mod' has no function 'missing'"),
    ("svc_mod", "'svc_mod' is not 'module:function'"),
])
def test_an_app_hook_that_is_not_module_function_names_the_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str) -> None:
    from click.testing import CliRunner

    from deimos import commands  # noqa: F401  (registers run)
    from deimos.cli import cli
    from deimos.errors import ConfigError

    (tmp_path / "svc_mod.py").write_text("def setup():\n    pass\n")
    monkeypatch.chdir(tmp_path)  # the current directory goes on sys.path
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = CliRunner().invoke(cli, ["--app", spec, "run"])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.errors == [("app", message)]
