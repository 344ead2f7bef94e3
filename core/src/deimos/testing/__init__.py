"""Test helpers for services built on deimos (and deimos's own tests).

``from deimos.testing import consume_message, assert_sent, test_mode, ...``; the pytest
fixtures (``deimos_test_mode``, ``deimos_kafka`` ...) come with ``deimos-kafka`` through its
``pytest11`` entry point. Names are imported on first use, so loading the pytest plugin costs
nothing for test suites that do not use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.testing.helpers import (
        TestModeError,
        aconsume_batch,
        aconsume_message,
        assert_not_sent,
        assert_sent,
        assert_sent_including,
        clear_sent_messages,
        consume_batch,
        consume_message,
        sent_messages,
        test_mode,
    )

__all__ = [
    "TestModeError",
    "aconsume_batch",
    "aconsume_message",
    "assert_not_sent",
    "assert_sent",
    "assert_sent_including",
    "clear_sent_messages",
    "consume_batch",
    "consume_message",
    "sent_messages",
    "test_mode",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("deimos.testing.helpers"), name)
    raise AttributeError(f"module 'deimos.testing' has no attribute {name!r}")
