"""Importing the registry client prints none of authlib's deprecation warnings: authlib
installs an ``always`` filter for them, so ``-W ignore`` alone cannot hide them, and every
``deimos`` command printed one (issue 18)."""

from __future__ import annotations

import subprocess
import sys


def _stderr(code: str) -> str:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_authlibs_import_time_warnings_are_silenced_where_deimos_imports_the_client() -> None:
    # authlib.jose warns when imported, whatever -W says: the warning the guard is for
    assert "AuthlibDeprecationWarning" in _stderr("import authlib.jose")
    assert _stderr("from deimos.schema.registry import quiet_authlib\n"
                   "with quiet_authlib():\n    import authlib.jose") == ""
    # the guard leaves the warning filters as they were
    assert _stderr("import warnings\nbefore = list(warnings.filters)\n"
                   "from deimos.schema.registry import quiet_authlib\n"
                   "with quiet_authlib():\n    import authlib.jose\n"
                   "assert warnings.filters == before") == ""


def test_importing_the_avro_plugin_prints_nothing() -> None:
    assert _stderr("import deimos_avro") == ""
    assert _stderr("import deimos.cli, sys\nsys.argv = ['deimos', 'plugins', '--json']\n"
                   "import contextlib, io\n"
                   "with contextlib.redirect_stdout(io.StringIO()), "
                   "contextlib.suppress(SystemExit):\n    deimos.cli.main()") == ""
