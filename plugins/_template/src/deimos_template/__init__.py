"""A deimos plugin skeleton: one example implementation of each plugin kind.

Keep the classes your plugin needs, delete the others, and list each kept class under its
entry-point group in ``pyproject.toml``. Every hook is optional except the ones marked
required; a hookimpl may take any subset of the hookspec's arguments, by name
(see the hook reference: ``docs/plugins/hooks.md``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pydantic import SecretStr

import deimos
from deimos.config import Section, Settings
from deimos.errors import CoercionError, DecodeError, SchemaValidationError
from deimos.message import Message, ProduceContext
from deimos.schema.base import SchemaContext, SchemaField

log = logging.getLogger("deimos_template")


class TemplateSettings(Section):
    """The ``[template]`` settings section (``deimos_settings_sections`` adds it).

    ``Section`` rejects unknown keys and masks secrets in reprs; use ``SecretStr`` for
    anything secret so ``deimos config show`` never prints it.
    """

    path: str = "template-output"
    api_key: SecretStr | None = None


class TemplateBackend:
    """Producer backend (group ``deimos.producer_backends``): keeps batches in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settings = TemplateSettings()
        self.delivered: list[tuple[str, bytes | None, bytes | None]] = []

    @deimos.hookimpl
    def deimos_settings_sections(self) -> Mapping[str, type[Section]]:
        return {"template": TemplateSettings}

    @deimos.hookimpl
    def deimos_configure(self, settings: Settings) -> None:
        self.settings = settings.section("template")

    @deimos.hookimpl
    def deimos_backend_execute(self, context: ProduceContext, messages: Sequence[Message],
                               sync: bool) -> None:
        """Required. Deliver one batch of encoded messages."""
        with self._lock:
            self.delivered.extend((m.topic, m.encoded_key, m.encoded_payload) for m in messages)

    @deimos.hookimpl
    def deimos_backend_flush(self, timeout: float) -> int:
        return 0  # nothing is ever pending

    @deimos.hookimpl
    def deimos_backend_close(self) -> None:
        pass


class TemplateSchemaBackend:
    """Schema backend (group ``deimos.schema_backends``): JSON objects, with a check that
    every payload is a mapping."""

    @deimos.hookimpl
    def deimos_schema_encode(self, context: SchemaContext, payloads: Sequence[Any]
                             ) -> list[bytes | None]:
        """Required. One call per batch; ``None`` (a tombstone) stays ``None``."""
        return [None if p is None else json.dumps(p, sort_keys=True).encode()
                for p in payloads]

    @deimos.hookimpl
    def deimos_schema_decode(self, context: SchemaContext, data: Sequence[bytes | None]
                             ) -> list[Any]:
        """Required. Raise DecodeError naming the topic for bytes you cannot read."""
        try:
            return [None if d is None else json.loads(d) for d in data]
        except ValueError as exc:
            raise DecodeError(f"value on topic {context.topic!r} is not JSON: {exc}") from exc

    @deimos.hookimpl
    def deimos_schema_encode_key(self, context: SchemaContext, keys: Sequence[Any]
                                 ) -> list[bytes | None]:
        return [None if k is None else str(k).encode() for k in keys]

    @deimos.hookimpl
    def deimos_schema_decode_key(self, context: SchemaContext, data: Sequence[bytes | None]
                                 ) -> list[Any]:
        return [None if d is None else d.decode() for d in data]

    @deimos.hookimpl
    def deimos_schema_validate(self, context: SchemaContext, payload: Any) -> None:
        if payload is not None and not isinstance(payload, Mapping):
            raise SchemaValidationError(
                [("", f"expected an object, got {type(payload).__name__}")], context.topic)

    @deimos.hookimpl
    def deimos_schema_coerce(self, context: SchemaContext, payload: Any) -> Any:
        """Called by producers before encoding: convert, or refuse what cannot be converted."""
        if payload is None or isinstance(payload, Mapping):
            return None if payload is None else dict(payload)
        raise CoercionError([("", f"expected an object, got {type(payload).__name__}")],
                            context.topic)

    @deimos.hookimpl
    def deimos_schema_fields(self, context: SchemaContext) -> list[SchemaField]:
        return []  # schemaless

    @deimos.hookimpl
    def deimos_schema_mock(self, context: SchemaContext) -> str:
        return "template"  # cheap enough to use as its own stand-in in tests


class TemplateMetrics:
    """Metrics provider (group ``deimos.metrics``): writes measurements to a logger."""

    @deimos.hookimpl
    def deimos_metrics_increment(self, name: str, value: int, tags: Mapping[str, str]) -> None:
        log.info("count %s %s %s", name, value, dict(tags))

    @deimos.hookimpl
    def deimos_metrics_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        log.info("gauge %s %s %s", name, value, dict(tags))

    @deimos.hookimpl
    def deimos_metrics_histogram(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        log.info("histogram %s %s %s", name, value, dict(tags))

    @deimos.hookimpl
    def deimos_metrics_time(self, name: str, seconds: float, tags: Mapping[str, str]) -> None:
        log.info("time %s %.6fs %s", name, seconds, dict(tags))


class TemplateTracer:
    """Tracing provider (group ``deimos.tracing``): spans are dicts, the trace id travels
    in a ``template-trace`` header."""

    HEADER = "template-trace"

    @deimos.hookimpl
    def deimos_tracing_start(self, name: str, attributes: Mapping[str, Any],
                             parent_headers: Mapping[str, bytes] | None,
                             links: Sequence[Mapping[str, bytes]] | None) -> dict[str, Any]:
        """Required. Return any handle; deimos passes it back to the other hooks."""
        parent = (parent_headers or {}).get(self.HEADER)
        trace = parent.decode() if parent else f"trace-{id(attributes):x}"
        return {"name": name, "trace": trace, "error": None}

    @deimos.hookimpl
    def deimos_tracing_finish(self, span: dict[str, Any]) -> None:
        """Required."""
        log.debug("span %s trace=%s error=%r", span["name"], span["trace"], span["error"])

    @deimos.hookimpl
    def deimos_tracing_set_error(self, span: dict[str, Any], exception: BaseException) -> None:
        span["error"] = exception

    @deimos.hookimpl
    def deimos_tracing_inject(self, span: dict[str, Any],
                              headers: MutableMapping[str, bytes]) -> None:
        headers[self.HEADER] = span["trace"].encode()
