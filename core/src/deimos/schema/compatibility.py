"""``deimos schemas check --against-registry``: are the local schemas of this service's
producers and consumers compatible with what the registry holds?

Ruby Deimos's ``schemas_compatible?`` compared two schema files; a service's CI needs the
question a deploy raises: would the registry accept each producer's schema (and does each
consumer's schema read what is there), under the subject's own compatibility level. The
registry answers that itself (``POST /compatibility/subjects/{s}/versions/{latest}``), so
the result is the production registry's rule, not a copy of it; the schema backends say
which ``(subject, schema)`` pairs they would register (``deimos_schema_registry_schemas``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deimos.errors import DeimosError
from deimos.runtime import Runtime, SchemaBackend
from deimos.schema.owners import schema_owners
from deimos.schema.registry import registry_client, registry_failure, safe_url


@dataclass(frozen=True)
class Check:
    """One subject checked."""

    #: ``producer Name`` / ``consumer name`` (every owner of the same pair, comma-separated)
    owner: str
    topic: str
    subject: str
    #: ``compatible``, ``incompatible``, ``new subject``, ``not checked`` or ``error`` (the
    #: schema could not be loaded or the registry not asked)
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("incompatible", "error")


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, int) else None


def _level(client: Any, subject: str) -> str:
    for args in ((subject,), ()):
        try:
            return str(client.get_compatibility(*args))
        except Exception:
            continue
    return "the registry's default"


def check_registry(runtime: Runtime) -> list[Check]:
    """Every ``(subject, schema)`` of this service's producers and consumers checked
    against the subject's latest registered version, in the subject's compatibility level."""
    pairs: dict[tuple[str, str, str], tuple[list[str], str, Any, SchemaBackend]] = {}
    unchecked: list[Check] = []
    for owner, topic, bind in schema_owners(runtime):
        try:
            sb = bind()
            forms = runtime.registry.caller("schema_backend", sb.name,
                                            "deimos_schema_registry_schemas")
            found = forms(sb.context) if forms is not None else None
        except DeimosError as exc:
            unchecked.append(Check(owner, topic, "", "error", str(exc)))
            continue
        if found is None:
            unchecked.append(Check(owner, topic, "", "not checked",
                                   f"schema backend {sb.name} registers no schemas"))
            continue
        for subject, schema in found:
            key = (safe_url(sb.context.settings), subject, schema.schema_str)
            entry = pairs.setdefault(key, ([], sb.context.topic, schema, sb))
            entry[0].append(owner)
    out: list[Check] = []
    for (_, subject, _), (owners, topic, schema, sb) in pairs.items():
        settings = sb.context.settings
        client = registry_client(settings)
        owner = ", ".join(owners)
        try:
            # "new subject" from the subject's versions, not from the compatibility check:
            # for an unknown subject the API reference documents 40401, current Confluent
            # servers answer is_compatible true and Karapace 40402 (seen on 3.15.0)
            latest = client.get_latest_version(subject)
        except Exception as exc:
            if _error_code(exc) == 40401:
                out.append(Check(owner, topic, subject, "new subject",
                                 "nothing registered yet: any schema is accepted"))
            else:
                out.append(Check(owner, topic, subject, "error", str(
                    registry_failure(settings, f"read {subject!r}", exc))))
            continue
        try:
            ok = client.test_compatibility(subject, schema, latest.version or "latest")
        except Exception as exc:
            out.append(Check(owner, topic, subject, "error",
                             str(registry_failure(settings, f"check {subject!r}", exc))))
            continue
        level = _level(client, subject)
        if ok:
            out.append(Check(owner, topic, subject, "compatible",
                             f"with version {latest.version} under {level}"))
        else:
            out.append(Check(owner, topic, subject, "incompatible",
                             f"not {level} compatible with version {latest.version} "
                             f"(id {latest.schema_id})"))
    return out + unchecked
