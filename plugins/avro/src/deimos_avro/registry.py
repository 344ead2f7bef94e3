"""confluent-kafka's schema registry client, one per URL and credentials per process.

One client per URL matters for ``mock://`` registries: confluent-kafka keeps a mock
registry's store inside the client object, so producers, consumers and tests of one process
must share it to see each other's schemas (:func:`registry_client` gives tests that client).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from fastavro.schema import expand_schema

from deimos.config import Settings, get_settings, mask_url
from deimos.errors import SchemaError

from .schemas import AvroSchema, from_dict


class RegistryError(SchemaError):
    """The schema registry could not be reached or refused a request."""


_clients: dict[tuple[Any, ...], SchemaRegistryClient] = {}
_lock = threading.Lock()


def _conf(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {"url": settings.schema.registry_url}
    user, password = settings.schema.user, settings.schema.password
    if user is not None or password is not None:
        secret = password.get_secret_value() if password is not None else ""
        conf["basic.auth.user.info"] = f"{user or ''}:{secret}"
    avro = getattr(settings, "avro", None)
    if avro is not None:
        conf.update(avro.registry_config)
    return conf


def registry_client(settings: Settings | None = None) -> SchemaRegistryClient:
    """The shared client for ``schema.registry_url`` (``mock://name`` -> in-memory)."""
    conf = _conf(settings or get_settings())
    key = tuple(sorted((k, str(v)) for k, v in conf.items()))
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                # new_client, not the constructor: only it returns the mock for mock:// URLs.
                client = _clients[key] = SchemaRegistryClient.new_client(dict(conf))
    return client


def reset_clients() -> None:
    """Drop every shared client (and with them every ``mock://`` registry's contents)."""
    with _lock:
        _clients.clear()


def safe_url(settings: Settings) -> str:
    """The registry URL with any credentials masked, for messages."""
    return mask_url(settings.schema.registry_url)


def _scrub(text: str, settings: Settings) -> str:
    text = mask_url(text)
    pw = settings.schema.password
    secrets = [pw.get_secret_value()] if pw is not None else []
    url = settings.schema.registry_url
    if "@" in url.split("//", 1)[-1]:
        userinfo = url.split("//", 1)[-1].split("@", 1)[0]
        secrets.append(userinfo.partition(":")[2])
    for s in secrets:
        if s:
            text = text.replace(s, "**********")
    return text


def _fail(settings: Settings, action: str, exc: Exception) -> RegistryError:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        what = f"Schema registry at {safe_url(settings)} refused to {action}"
    else:
        what = f"Cannot reach the schema registry at {safe_url(settings)} to {action}"
    return RegistryError(f"{what}: {type(exc).__name__}: {_scrub(str(exc), settings)}")


def schema_id(settings: Settings, subject: str, schema: AvroSchema, register: bool) -> int:
    """Register (or only look up) ``schema`` under ``subject``; the client caches ids."""
    client = registry_client(settings)
    sch = Schema(schema.text, "AVRO")
    try:
        if register:
            return int(client.register_schema(subject, sch))
        return int(client.lookup_schema(subject, sch).schema_id or 0)
    except Exception as exc:
        action = "register" if register else "look up"
        raise _fail(settings, f"{action} subject {subject!r}", exc) from None


def writer_schema(settings: Settings, sid: int) -> AvroSchema:
    """The schema a message was written with, references resolved."""
    client = registry_client(settings)
    try:
        sch = client.get_schema(sid)
        named: list[Any] = []
        _collect_refs(client, sch, named, set())
    except Exception as exc:
        raise _fail(settings, f"fetch schema id {sid}", exc) from None
    raw = json.loads(sch.schema_str or "null")
    if named:
        # Schema references: inline the referenced definitions (fastavro's expand_schema
        # over a union that defines them first) so the writer schema stands alone.
        raw = expand_schema([*named, raw])[-1]
    return from_dict(raw)


def _collect_refs(client: Any, sch: Schema, out: list[Any], seen: set[str]) -> None:
    for ref in sch.references or []:
        if ref.name is None or ref.name in seen:
            continue
        seen.add(ref.name)
        registered = client.get_version(ref.subject, ref.version)
        _collect_refs(client, registered.schema, out, seen)
        out.append(json.loads(registered.schema.schema_str))
