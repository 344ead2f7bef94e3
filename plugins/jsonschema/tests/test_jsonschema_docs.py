"""The runnable example of docs/plugins/jsonschema.md runs and prints what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[3] / "docs" / "plugins" / "jsonschema.md"


def test_example_runs(tmp_path: Path) -> None:
    text = PAGE.read_text()
    section = text.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code[1])
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    printed = [line for line in code[1].splitlines() if line.startswith("print(")]
    outputs = result.stdout.strip().splitlines()
    assert len(outputs) >= len(printed)
    # each "# comment" right under a print in the page is the output it shows
    for expected in re.findall(r"^print\(.*\)\s*#\s*(.+)$|^\s*# (\[.*\]|b'.*')$",
                               code[1], re.M):
        shown = next(e for e in expected if e).split(":")[0].strip()
        assert any(shown in out for out in outputs), (shown, outputs)
