"""Rewrite (or ``--check``) the generated part of a docs page, between its two markers.

Shared by the generators of docs/configuration.md and docs/cli.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def render(page: str, begin: str, end: str, text: str) -> str:
    head, _, rest = page.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n\n{text}\n{end}{tail}"


def main(argv: Sequence[str], path: Path, begin: str, end: str,
         generate: Callable[[], str], script: str) -> int:
    page = path.read_text()
    if begin not in page or end not in page:
        print(f"{path} lacks the {begin} / {end} markers", file=sys.stderr)
        return 1
    new = render(page, begin, end, generate())
    if "--check" in argv:
        if new != page:
            print(f"{path} is out of date: run python {script}", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0
