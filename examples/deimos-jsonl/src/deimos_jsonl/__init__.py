"""A producer backend that appends each message to a JSON Lines file.

Written only against deimos's public contract (``deimos.hookimpl``, the ``execute``/``flush``
hooks and a settings section), as a model for third-party plugins. Useful to capture what a
service would publish, for audits or replay.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

import deimos
from deimos.message import Message, ProduceContext


class JsonlSettings(BaseModel):
    """The ``[jsonl]`` settings section."""

    model_config = ConfigDict(extra="forbid")
    path: str = "deimos-messages.jsonl"
    fsync: bool = False


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class JsonlBackend:
    """Writes one JSON object per message: topic, base64 key and value, headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = JsonlSettings()

    @deimos.hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[BaseModel]]:
        return {"jsonl": JsonlSettings}

    @deimos.hookimpl
    def deimos_configure(self, settings: Any) -> None:
        self._settings = settings.section("jsonl")

    @deimos.hookimpl
    def deimos_backend_execute(
        self, context: ProduceContext, messages: Sequence[Message], sync: bool
    ) -> None:
        lines = [
            json.dumps({
                "topic": m.topic,
                "key": _b64(m.encoded_key),
                "value": _b64(m.encoded_payload),
                "partition_key": _b64(m.partition_key),
                "headers": [[k, _b64(v)] for k, v in (m.headers or [])],
            })
            for m in messages
        ]
        with self._lock, open(self._settings.path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            if sync or self._settings.fsync:
                fh.flush()
                os.fsync(fh.fileno())

    @deimos.hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return 0


def read_messages(path: str) -> list[dict[str, Any]]:
    """Read back what the backend wrote, with keys and values decoded to bytes."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            for field in ("key", "value", "partition_key"):
                row[field] = None if row[field] is None else base64.b64decode(row[field])
            row["headers"] = [(k, None if v is None else base64.b64decode(v))
                              for k, v in row["headers"]]
            out.append(row)
    return out
