"""The ``test`` producer backend: keeps every message in memory for assertions."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from deimos.hookspecs import hookimpl
from deimos.message import Message, ProduceContext

_lock = threading.Lock()
#: every message the ``test`` backend received, in order (shared by all instances)
sent_messages: list[Message] = []
#: ``id(message) -> the producer's schema backend`` (decodes it as a consumer would)
_schemas: dict[int, Any] = {}


def clear() -> None:
    with _lock:
        sent_messages.clear()
        _schemas.clear()


def schema_of(message: Message) -> Any:
    """The schema backend the producer encoded ``message`` with (None if unknown)."""
    with _lock:
        return _schemas.get(id(message))


def messages() -> list[Message]:
    with _lock:
        return list(sent_messages)


class TestBackend:
    """Stores messages instead of sending them; ``deimos.testing`` reads and clears them."""

    __test__ = False  # not a pytest test class

    @hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        schema = context.extra.get("schema")
        with _lock:
            sent_messages.extend(messages)
            if schema is not None:
                for m in messages:
                    _schemas[id(m)] = schema

    @hookimpl
    async def deimos_backend_execute_async(self, context: ProduceContext,
                                           messages: Sequence[Message], sync: bool) -> None:
        self.deimos_backend_execute(context, messages, sync)  # memory only: never blocks

    @hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return 0
