"""Finding, loading, validating and selecting plugins.

Nothing happens at import time: :func:`get_registry` builds the registry on first use and
loads entry points lazily, once. Each entry point is loaded inside its own ``try`` so that a
broken plugin is recorded (distribution, entry point, cause) and only fails the code that
selects it. Built-ins are loaded through core's own entry points, exactly like third-party
plugins.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from deimos import hookspecs
from deimos.errors import DuplicatePluginError, PluginLoadError, UnknownPluginError

#: kind -> entry-point group
GROUPS: dict[str, str] = {
    "producer_backend": "deimos.producer_backends",
    "schema_backend": "deimos.schema_backends",
    "metrics": "deimos.metrics",
    "tracing": "deimos.tracing",
}

#: kind -> (hook prefix of that kind, hooks a plugin of that kind must implement)
_KIND_HOOKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "producer_backend": ("deimos_backend_", ("deimos_backend_execute",)),
    "schema_backend": ("deimos_schema_", ("deimos_schema_encode", "deimos_schema_decode")),
    "metrics": ("deimos_metrics_", ()),
    "tracing": ("deimos_tracing_", ("deimos_tracing_start", "deimos_tracing_finish")),
}
_GENERAL_HOOKS = ("deimos_configure", "deimos_settings_sections", "deimos_cli_commands",
                  "deimos_http_routes", "deimos_event", "deimos_registry_compatibility",
                  "deimos_consumer_inbox")

_LABELS = {
    "producer_backend": "producer backend",
    "schema_backend": "schema backend",
    "metrics": "metrics provider",
    "tracing": "tracing provider",
}

#: Which extra of deimos-kafka provides a plugin we know about but which is not installed.
KNOWN_EXTRAS: dict[tuple[str, str], str] = {
    **{("schema_backend", n): "avro" for n in ("avro_schema_registry", "avro_local",
                                                "avro_validation")},
    **{("schema_backend", n): "protobuf" for n in ("proto_schema_registry", "proto_local")},
    **{("schema_backend", n): "jsonschema" for n in ("json_schema_registry", "json_local")},
    ("producer_backend", "db"): "db",
    ("producer_backend", "outbox"): "db",
    ("metrics", "datadog"): "datadog",
    ("tracing", "datadog"): "datadog",
    ("metrics", "otel"): "otel",
    ("tracing", "otel"): "otel",
}

CORE_DISTRIBUTION = "deimos-kafka"


@dataclass
class PluginInfo:
    """One plugin as deimos sees it (``deimos plugins`` prints these)."""

    kind: str
    name: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    obj: Any = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    _callers: dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "hooks": list(self.hooks),
            "error": self.error,
        }


def _label(kind: str) -> str:
    return _LABELS.get(kind, kind)


def _parse_filter(raw: str | None) -> tuple[set[str], set[str]]:
    """``DEIMOS_PLUGINS="avro_local,-datadog,metrics:log"`` -> (allow, deny).

    An item is ``name``, ``kind:name`` or ``distribution:name``; a leading ``-`` denies it.
    """
    allow: set[str] = set()
    deny: set[str] = set()
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("-"):
            deny.add(item[1:].strip())
        else:
            allow.add(item.lstrip("+").strip())
    return allow, deny


class PluginRegistry:
    """Holds every plugin of every kind; thread-safe, loads entry points once."""

    def __init__(self, *, entry_points: bool = True, strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[tuple[str, str], PluginInfo] = {}
        self._load_entry_points = entry_points
        self._loaded = False
        self._lock = threading.RLock()
        env_strict = os.environ.get("DEIMOS_PLUGINS_STRICT", "").lower() in ("1", "true", "yes")
        self.strict = env_strict if strict is None else strict
        self._filter_raw = os.environ.get("DEIMOS_PLUGINS", "")
        self.allow, self.deny = _parse_filter(self._filter_raw)
        #: (kind, name) -> distribution of every entry point DEIMOS_PLUGINS left out
        self._filtered: dict[tuple[str, str], str | None] = {}
        #: in strict mode, the first load failure; raised again by every later ``load()``
        self._load_error: Exception | None = None

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load every entry point of every kind (idempotent)."""
        with self._lock:
            if self._load_error is not None:
                raise self._load_error
            if self._loaded:
                return
            self._loaded = True
            if not self._load_entry_points:
                return
            try:
                for kind, group in GROUPS.items():
                    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
                        self._load_one(kind, ep)
            except Exception as exc:  # strict mode: fail now and on every later use
                self._load_error = exc
                raise

    def _filtered_out(self, kind: str, name: str, distribution: str | None) -> bool:
        keys = {name, f"{kind}:{name}", f"{distribution}:{name}"}
        if keys & self.deny:
            return True
        if self.allow and distribution != CORE_DISTRIBUTION:
            return not (keys & self.allow)
        return False

    def _load_one(self, kind: str, ep: metadata.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if self._filtered_out(kind, ep.name, dist):
            self._filtered.setdefault((kind, ep.name), dist)
            return
        info = PluginInfo(kind, ep.name, dist, version, ep.value)
        existing = self._plugins.get((kind, ep.name))
        if existing is not None and existing.distribution != dist:
            msg = (
                f"{_label(kind).capitalize()} name {ep.name!r} is claimed by two distributions: "
                f"{existing.distribution} ({existing.entry_point}) and {dist} ({ep.value}). "
                "Uninstall one of them, or deny one with "
                f"DEIMOS_PLUGINS=-<distribution>:{ep.name}."
            )
            self._unregister_obj(existing)
            existing.error = msg
            existing.obj = None
            existing.hooks = []
            if self.strict:
                raise DuplicatePluginError(msg)
            return
        if existing is not None:  # same distribution seen twice (e.g. editable + site)
            return
        try:
            obj = ep.load()
            self._attach(info, obj)
        except Exception as exc:  # one broken plugin must not break the others
            if isinstance(exc, pluggy.PluginValidationError):
                cause = f"does not match the contract: {exc}"
            elif isinstance(exc, PluginLoadError):
                cause = str(exc)
            else:
                cause = f"failed to load: {type(exc).__name__}: {exc}"
            info.error = (
                f"{_label(kind).capitalize()} {ep.name!r} from distribution {dist} "
                f"(entry point {ep.group}:{ep.name} = {ep.value}) {cause}"
            )
            info.obj = None
            if self.strict:
                self._plugins[(kind, ep.name)] = info
                raise PluginLoadError(info.error) from exc
        self._plugins[(kind, ep.name)] = info

    def _attach(self, info: PluginInfo, obj: Any) -> None:
        if inspect.isclass(obj):
            obj = obj()
        prefix, required = _KIND_HOOKS[info.kind]
        hook_names = sorted(
            n for n in dir(obj)
            if n.startswith("deimos_") and self.pm.parse_hookimpl_opts(obj, n) is not None
        )
        wrong = [n for n in hook_names if not (n.startswith(prefix) or n in _GENERAL_HOOKS)]
        if wrong:
            raise PluginLoadError(
                f"implements hooks of another kind for a {_label(info.kind)}: {', '.join(wrong)}"
            )
        missing = [n for n in required if n not in hook_names]
        if missing:
            raise PluginLoadError(f"does not implement required hook(s) {', '.join(missing)}")
        unknown = [n for n in hook_names if not hasattr(self.pm.hook, n)]
        if unknown:
            raise PluginLoadError(f"implements unknown hook(s) {', '.join(unknown)}")
        # pluggy checks every hookimpl's arguments against its hookspec here.
        self.pm.register(obj, name=f"{info.kind}:{info.name}")
        info.obj = obj
        info.hooks = hook_names

    def _unregister_obj(self, info: PluginInfo) -> None:
        if info.obj is not None and self.pm.is_registered(info.obj):
            self.pm.unregister(info.obj)

    # -- programmatic registration -----------------------------------------------------------

    def register(
        self, kind: str, name: str, obj: Any, *, distribution: str | None = None
    ) -> PluginInfo:
        """Register ``obj`` as plugin ``name`` of ``kind`` (tests, applications)."""
        if kind not in GROUPS:
            raise ValueError(f"Unknown plugin kind {kind!r}; kinds: {', '.join(GROUPS)}")
        self.load()
        with self._lock:
            if (kind, name) in self._plugins:
                raise DuplicatePluginError(
                    f"{_label(kind).capitalize()} {name!r} is already registered "
                    f"(from {self._plugins[(kind, name)].distribution})."
                )
            info = PluginInfo(kind, name, distribution, None, None)
            try:
                self._attach(info, obj)
            except PluginLoadError as exc:
                raise PluginLoadError(f"{_label(kind).capitalize()} {name!r} {exc}") from exc
            except pluggy.PluginValidationError as exc:
                raise PluginLoadError(
                    f"{_label(kind).capitalize()} {name!r} does not match the contract: {exc}"
                ) from exc
            self._plugins[(kind, name)] = info
            return info

    def unregister(self, kind: str, name: str) -> None:
        with self._lock:
            info = self._plugins.pop((kind, name), None)
            if info is not None:
                self._unregister_obj(info)

    @contextmanager
    def registered(self, kind: str, name: str, obj: Any) -> Iterator[PluginInfo]:
        """Register for the duration of a ``with`` block; always unregistered after."""
        info = self.register(kind, name, obj)
        try:
            yield info
        finally:
            self.unregister(kind, name)

    # -- lookup ------------------------------------------------------------------------------

    def all(self, kind: str | None = None) -> list[PluginInfo]:
        self.load()
        with self._lock:
            return sorted(
                (p for p in self._plugins.values() if kind is None or p.kind == kind),
                key=lambda p: (list(GROUPS).index(p.kind), p.name),
            )

    def names(self, kind: str) -> list[str]:
        return [p.name for p in self.all(kind) if p.error is None]

    def get(self, kind: str, name: str) -> PluginInfo:
        """The working plugin ``name`` of ``kind``, or an error a user can act on."""
        self.load()
        info = self._plugins.get((kind, name))
        if info is None:
            installed = ", ".join(self.names(kind)) or "none"
            msg = f"Unknown {_label(kind)} {name!r}. Installed: {installed}."
            if (kind, name) in self._filtered:
                raise UnknownPluginError(
                    f"{msg} {_label(kind).capitalize()} {name!r} from distribution "
                    f"{self._filtered[(kind, name)]} is installed but disabled by "
                    f"DEIMOS_PLUGINS={self._filter_raw!r}."
                )
            extra = KNOWN_EXTRAS.get((kind, name))
            if extra:
                msg += f' Install it with: pip install "deimos-kafka[{extra}]"'
            else:
                msg += f" Plugins register under the entry-point group {GROUPS[kind]!r}."
            raise UnknownPluginError(msg)
        if info.error is not None:
            if "claimed by two distributions" in info.error:
                raise DuplicatePluginError(info.error)
            raise PluginLoadError(info.error)
        return info

    def caller(self, kind: str, name: str, hook: str) -> Callable[..., Any] | None:
        """A direct callable for ``hook`` of the named plugin, taking the hookspec's
        arguments positionally; ``None`` when the plugin does not implement it.

        Resolved once and cached, so hot paths skip pluggy's dispatch.
        """
        info = self.get(kind, name)
        cached = info._callers.get(hook)
        if cached is not None or hook in info._callers:
            return cached
        fn = _direct_caller(info.obj, hook) if hook in info.hooks else None
        info._callers[hook] = fn  # type: ignore[assignment]
        return fn


def _direct_caller(obj: Any, hook: str) -> Callable[..., Any]:
    """Map the spec's positional arguments onto the impl's (a subset, any order)."""
    impl = getattr(obj, hook)
    spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    impl_args = [
        n for n, prm in inspect.signature(impl).parameters.items()
        if prm.default is inspect.Parameter.empty
    ]
    if impl_args == spec_args:
        return impl
    positions = [spec_args.index(a) for a in impl_args]

    def call(*args: Any) -> Any:
        return impl(*(args[i] for i in positions))

    return call


_registry: PluginRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide registry, created on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = PluginRegistry()
    return _registry


def reset_registry(registry: PluginRegistry | None = None) -> None:
    """Replace the process-wide registry (tests; after changing ``DEIMOS_PLUGINS``)."""
    global _registry
    with _registry_lock:
        _registry = registry


def call_all(infos: Iterable[PluginInfo], hook: str, *args: Any) -> list[Any]:
    """Call ``hook`` on each plugin that implements it (general hooks)."""
    results = []
    for info in infos:
        if info.obj is not None and hook in info.hooks:
            results.append(_direct_caller(info.obj, hook)(*args))
    return results
