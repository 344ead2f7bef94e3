"""deimos-jsonl runs the producer backend conformance suite, as any third-party backend can."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deimos.testing.conformance.producer_backend import Delivered, ProducerBackendConformance
from deimos_jsonl import read_messages


class TestJsonlConformance(ProducerBackendConformance):
    @pytest.fixture
    def backend_name(self) -> str:
        return "jsonl"

    @pytest.fixture
    def output(self, tmp_path: Path) -> Path:
        return tmp_path / "messages.jsonl"

    @pytest.fixture
    def extra_settings(self, output: Path) -> dict[str, Any]:
        return {"jsonl": {"path": str(output)}}

    @pytest.fixture
    def delivered(self, output: Path) -> Callable[[], Delivered]:
        def read() -> Delivered:
            if not output.exists():
                return []
            return [(r["topic"], r["key"], r["value"]) for r in read_messages(str(output))]
        return read
