"""The resolved state behind the current settings: selected plugins and telemetry.

Everything here is computed once per settings object and cached; ``deimos.configure`` drops
the cache (closing producer backends first), so no per-message lookups happen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from deimos import config as _config
from deimos.config import KeyConfig, OwnSchemaSettings, Settings
from deimos.events import EventBus
from deimos.plugins import PluginRegistry, get_registry
from deimos.schema.base import SchemaContext
from deimos.telemetry import Telemetry

log = logging.getLogger("deimos")


@dataclass
class SchemaBackend:
    """A schema backend bound to one topic/schema: direct callables, resolved once."""

    name: str
    context: SchemaContext
    encode: Callable[..., list[bytes | None]]
    decode: Callable[..., list[Any]]
    encode_key: Callable[..., list[bytes | None]] | None
    decode_key: Callable[..., list[Any]] | None
    validate: Callable[..., None] | None
    coerce: Callable[..., Any] | None
    fields: Callable[..., Any] | None
    mock: Callable[..., str] | None
    #: ``deimos_schema_encoder`` (optional): a one-value encoder for ``publish()``
    encoder: Callable[..., Callable[[Any], bytes | None] | None] | None = None
    #: ``deimos_schema_checker`` (optional): "needs no coercion" for the producers
    checker: Callable[..., Callable[[Any], bool] | None] | None = None
    #: ``deimos_schema_native_types`` (optional): payload classes taken as they are
    native_types: Callable[..., Sequence[type] | None] | None = None
    _field_names: frozenset[str] | None = field(default=None, repr=False)

    def field_names(self) -> frozenset[str]:
        if self._field_names is None:
            self._field_names = frozenset(
                f.name for f in (self.fields(self.context) if self.fields else []))
        return self._field_names


@dataclass
class Backend:
    name: str
    execute: Callable[..., None]
    flush: Callable[..., int] | None
    close: Callable[..., None] | None
    default_sync: bool
    #: whether a publish is handed over in chunks of ``max_batch_size`` (a backend that
    #: batches by itself, as librdkafka does, takes each call whole: one wait per call)
    chunked: bool = True
    #: ``deimos_backend_sender`` (optional): a one-message asynchronous sender
    sender: Callable[..., Callable[[Any], None] | None] | None = None
    #: ``deimos_backend_execute_async``, where the backend has one (``apublish``)
    execute_async: Callable[..., Any] | None = None
    #: ``deimos_backend_async_sender`` (optional): ``apublish``'s one-message sender
    async_sender: Callable[..., Callable[[Any], bool] | None] | None = None


class Runtime:
    def __init__(self, settings: Settings, registry: PluginRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or get_registry()
        self._lock = threading.RLock()
        self._configured: set[tuple[str, str]] = set()
        self._backends: dict[str, Backend] = {}
        self._schema_views: dict[str, Settings] = {}
        #: test mode: producer backend used for every producer, schema backend name mapping
        self.backend_override: str | None = None
        self.schema_override: Callable[[str, SchemaContext], str] | None = None
        self._check_plugin_names()
        self.events = EventBus(self.registry, settings)
        self.telemetry = Telemetry(
            self.registry,
            settings.metrics.providers,
            settings.tracing.providers,
            settings.metrics.tags,
            configure=self.configure_plugin,
        )

    def _check_plugin_names(self) -> None:
        """Every plugin the settings name must be installed: checked when the runtime is
        made (as metrics and tracing providers are), not at the first publish, so ``deimos
        run`` refuses to start instead of crash-looping on a typo."""
        from deimos.errors import PluginError

        s = self.settings
        named = [("producers.backend", "producer_backend", s.producers.backend),
                 ("schema.backend", "schema_backend", s.schema.backend)]
        named += [(f"producers.topics.{i}.backend", "producer_backend", t.backend)
                  for i, t in enumerate(s.producers.topics) if t.backend]
        named += [(f"producers.topics.{i}.schema_backend", "schema_backend", t.schema_backend)
                  for i, t in enumerate(s.producers.topics) if t.schema_backend]
        named += [(f"consumers.{i}.schema_backend", "schema_backend", c.schema_backend)
                  for i, c in enumerate(s.consumers) if c.schema_backend]
        for path, kind, name in named:
            try:
                self.registry.get(kind, name)
            except PluginError as exc:
                raise type(exc)(f"{path}: {exc}") from None
        # token providers are imported here too: a bad path stops the service at its start
        for cluster in (s.kafka, *s.kafka.clusters.values()):
            if cluster.sasl_oauth_token_provider:
                cluster.oauth_token_provider()

    def configure_plugin(self, kind: str, name: str) -> None:
        """Give a plugin the settings the first time this runtime uses it."""
        if (kind, name) in self._configured:
            return
        with self._lock:
            if (kind, name) in self._configured:
                return
            fn = self.registry.caller(kind, name, "deimos_configure")
            if fn is not None:
                fn(self.settings)
            self._configured.add((kind, name))

    def backend(self, name: str | None = None) -> Backend:
        name = self.backend_override or name or self.settings.producers.backend
        b = self._backends.get(name)
        if b is None:
            info = self.registry.get("producer_backend", name)
            self.configure_plugin("producer_backend", name)
            caller = self.registry.caller
            b = Backend(
                name,
                caller("producer_backend", name, "deimos_backend_execute"),  # type: ignore[arg-type]
                caller("producer_backend", name, "deimos_backend_flush"),
                caller("producer_backend", name, "deimos_backend_close"),
                getattr(info.obj, "default_sync", True),
                getattr(info.obj, "chunked", True),
                caller("producer_backend", name, "deimos_backend_sender"),
                caller("producer_backend", name, "deimos_backend_execute_async"),
                caller("producer_backend", name, "deimos_backend_async_sender"),
            )
            self._backends[name] = b
        return b

    def schema_backend(
        self,
        *,
        topic: str,
        schema: str | None,
        namespace: str | None,
        key_config: KeyConfig,
        backend: str | None = None,
        own: OwnSchemaSettings | None = None,
        where: str = "schema",
    ) -> SchemaBackend:
        """The schema backend of one topic; ``own``: the producer's or consumer's own schema
        backend and registry (its backend sees them as its ``schema`` section; ``where``
        names them in errors)."""
        settings = self.schema_settings(own, where)
        name = backend or settings.schema.backend
        context = SchemaContext(name, schema, namespace, topic, key_config, settings)
        if self.schema_override is not None:
            name = self.schema_override(name, context)
            context.backend = name
        self.registry.get("schema_backend", name)
        self.configure_plugin("schema_backend", name)

        def c(hook: str) -> Any:
            return self.registry.caller("schema_backend", name, f"deimos_schema_{hook}")

        return SchemaBackend(
            name, context, c("encode"), c("decode"), c("encode_key"), c("decode_key"),
            c("validate"), c("coerce"), c("fields"), c("mock"), c("encoder"),
            c("checker"), c("native_types"),
        )

    def schema_settings(self, own: OwnSchemaSettings | None, where: str = "schema"
                        ) -> Settings:
        """The settings a schema backend sees for a producer or consumer with its ``own``
        schema settings: the ``schema`` section with them applied (one object per distinct
        change, so a backend's per-settings caches and registry clients are shared). A
        schema backend reads the registry from ``context.settings.schema``, so a plugin
        needs nothing to support per-topic registries."""
        changes = own.schema_overrides() if own is not None else {}
        if not changes:
            return self.settings
        key = repr(sorted((k, repr(v)) for k, v in changes.items()))
        view = self._schema_views.get(key)
        if view is None:
            data = _config.settings_data(self.settings.schema, exclude_unset=False)
            data.update({k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
                         for k, v in changes.items()})
            try:
                section = type(self.settings.schema).model_validate(data)
            except ValidationError as exc:
                raise _config.format_errors(exc, {}, prefix=where) from None
            view = self._schema_views[key] = self.settings.model_copy(
                update={"schema_": section})
        return view

    def mock_name(self, name: str, context: SchemaContext) -> str:
        """The stand-in the test helpers use for schema backend ``name``."""
        fn = self.registry.caller("schema_backend", name, "deimos_schema_mock")
        return fn(context) if fn is not None else "mock"

    def flush(self, timeout: float | None = None) -> int:
        timeout = self.settings.producers.flush_timeout if timeout is None else timeout
        return sum(b.flush(timeout) for b in list(self._backends.values()) if b.flush)

    def close(self) -> None:
        for b in list(self._backends.values()):
            if b.close is not None:
                try:
                    b.close()
                except Exception:
                    log.exception("closing producer backend %s failed", b.name)
        self._backends.clear()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The runtime for the current settings (built on first use)."""
    global _runtime
    rt = _runtime
    settings = _config.get_settings()
    if rt is None or rt.settings is not settings:
        with _runtime_lock:
            rt = _runtime
            if rt is None or rt.settings is not settings:
                rt = _runtime = Runtime(settings)
    return rt


def _on_settings_change() -> None:
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, None
    if old is not None:
        old.flush()
        old.close()


_config.on_change(_on_settings_change)
