"""Consumer settings: class attributes, ``[[consumers]]`` entries and overrides resolved into
one validated :class:`~deimos.config.ConsumerSettings`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from deimos.config import ConsumerSettings, settings_data
from deimos.consumer.api import _Base
from deimos.consumer.retry_topics import check_settings as check_retry_topics
from deimos.errors import DeimosError
from deimos.runtime import Runtime


def import_class(path: str) -> type:
    """``"package.module:Class"`` (or ``package.module.Class``) to the class."""
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DeimosError(f"cannot import consumer class {path!r}: {exc}") from exc


def resolve_settings(cls: type, entry: ConsumerSettings | None = None, **overrides: Any
                     ) -> ConsumerSettings:
    """Class attributes, overridden by the matching ``[[consumers]]`` entry, then by
    ``overrides``."""
    data: dict[str, Any] = {}
    fields = ConsumerSettings.model_fields
    for name, f in fields.items():
        attr = f.alias or name
        for candidate in (name, attr):
            if candidate in ("schema_name", "class_path"):
                continue
            value = getattr(cls, candidate, None)
            if value is not None and not callable(value):
                data[attr] = value
                break
    if getattr(cls, "schema", None):
        data["schema"] = cls.schema  # type: ignore[attr-defined]
    topic = getattr(cls, "topic", None)
    if topic and not data.get("topics"):
        data["topics"] = [topic]
    data["name"] = data.get("name") or cls.__name__
    if entry is not None:
        data.update(settings_data(entry))
    data.update(overrides)
    data.pop("class", None)
    data["topics"] = list(data.get("topics") or [])
    settings = ConsumerSettings.model_validate(data)
    if not settings.topics and not settings.topic_pattern:
        raise DeimosError(f"consumer {settings.name} has no topics")
    if not settings.group_id:
        raise DeimosError(f"consumer {settings.name} has no group_id")
    check_retry_topics(settings)
    return settings


def consumer_settings_for(runtime: Runtime, names: Sequence[str] | None = None
                          ) -> list[tuple[type[_Base], ConsumerSettings]]:
    """The consumers configured under ``[[consumers]]`` (optionally only ``names``)."""
    out = []
    for entry in runtime.settings.consumers:
        if entry.disabled or not entry.class_path:
            continue
        cls = import_class(entry.class_path)
        cs = resolve_settings(cls, entry)
        if names and cs.name not in names:
            continue
        out.append((cls, cs))
    if names:
        missing = set(names) - {cs.name for _, cs in out}
        if missing:
            raise DeimosError(f"no consumer named {', '.join(sorted(missing))} is configured")
    return out
