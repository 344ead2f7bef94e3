"""The one backoff every retry in deimos uses: consumers, dead-letter writes, the DB producer,
the DB poller and the record consumer's transaction retries.

Exponential from ``backoff`` by ``multiplier``, spread by ``±jitter`` so that many workers do
not retry in step, and capped *after* the jitter, so ``max_backoff`` really is the longest
wait. Settings name the parts the same way everywhere (``backoff``, ``max_backoff``,
``multiplier``, ``jitter``), and :class:`Backoff.from_settings` reads any section that has
them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before retry number ``n`` (1 for the first)."""

    backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def delay(self, attempt: int) -> float:
        # exponent bounded: 2.0 ** 1100 overflows a float long before anyone waits that long
        delay = self.backoff * self.multiplier ** min(max(attempt - 1, 0), 64)
        if self.jitter:
            delay *= 1.0 - self.jitter + 2 * self.jitter * random.random()
        return min(self.max_backoff, delay)

    @classmethod
    def from_settings(cls, section: Any, **defaults: float) -> Backoff:
        """A backoff from a settings section with ``backoff``/``max_backoff``/``multiplier``/
        ``jitter`` fields (missing ones from ``defaults``, then the class defaults)."""
        values = {name: getattr(section, name, defaults.get(name))
                  for name in ("backoff", "max_backoff", "multiplier", "jitter")}
        return cls(**{k: float(v) for k, v in values.items() if v is not None})
