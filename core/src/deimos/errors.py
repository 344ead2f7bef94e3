"""Exceptions deimos raises; each names what the user has to look at."""

from __future__ import annotations

from collections.abc import Sequence


class DeimosError(Exception):
    """Base class of every deimos error."""


class ConfigError(DeimosError):
    """Settings are wrong; ``errors`` holds ``(dotted path, message)`` pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]]):
        self.errors = list(errors)
        lines = [f"  {path}: {msg}" for path, msg in self.errors]
        super().__init__("Invalid deimos settings:\n" + "\n".join(lines))


class PluginError(DeimosError):
    """A plugin could not be found, loaded or validated."""


class UnknownPluginError(PluginError):
    pass


class DuplicatePluginError(PluginError):
    pass


class PluginLoadError(PluginError):
    pass


class SchemaError(DeimosError):
    """A schema could not be found or parsed."""


class TransientError(DeimosError):
    """A failure that says nothing about the message: a service it needs (the schema
    registry) is down, overloaded or timed out. The same call may succeed later, so it is
    *retriable*: a consumer pauses the partition and retries the same messages with backoff
    (never dead-letters or skips them for it, and does not count it against
    ``retry.attempts``); a producer's caller may publish again."""


class SchemaValidationError(DeimosError):
    """A payload does not match its schema; ``errors`` lists every bad field."""

    def __init__(self, errors: Sequence[tuple[str, str]], topic: str | None = None):
        self.errors = list(errors)
        self.topic = topic
        where = f" for topic {topic!r}" if topic else ""
        lines = "; ".join(f"{path or '<root>'}: {msg}" for path, msg in self.errors)
        super().__init__(f"Invalid payload{where}: {lines}")


class CoercionError(SchemaValidationError):
    """A value could not be converted to the type its schema field expects."""


class DecodeError(DeimosError):
    """A consumed message could not be decoded."""


class MissingKeyError(DeimosError):
    """A producer needs a key and the message has none."""


class PublishError(DeimosError):
    """One or more messages were not delivered; ``failures`` pairs messages with causes.

    ``failed``: how many messages of the call failed, where the backend knows (the others
    were sent: a call's metrics count them as published); None when all of them did or it
    cannot tell. ``reported``: the backend already logged and counted the failures (and
    called ``delivery_failed``), so the producer does not count them again."""

    def __init__(self, message: str, failures: Sequence[tuple[object, object]] = (), *,
                 failed: int | None = None, reported: bool = False):
        self.failures = list(failures)
        self.failed = failed
        self.reported = reported
        super().__init__(message)


class FatalError(DeimosError):
    """The process must not go on: the runner stops every runnable instead of restarting the
    one that raised it, and ``deimos run`` exits non-zero (a fenced transactional producer:
    restarting it would only fence the instance that fenced it)."""
