"""Core commands beyond the basics (``run``, ``demo``); imported by :func:`deimos.cli.main`."""

from __future__ import annotations
