"""confluent-kafka's schema registry client, one per URL and credentials per process, shared by
every registry-backed schema plugin (Avro, Protobuf, JSON Schema).

One client per URL matters for ``mock://`` registries: confluent-kafka keeps a mock registry's
store inside the client object, so producers, consumers, tests and *different schema plugins*
of one process must share it to see each other's schemas and get the same ids. That is why this
lives in core rather than in one plugin: before it, ``deimos_avro.registry`` owned the cache,
and a second plugin would have had to depend on ``deimos-avro`` (and fastavro) for it.

confluent-kafka's ``schema_registry`` package is imported lazily: core does not depend on its
``schemaregistry`` extra, the plugins that call this module do.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deimos.config import Settings, get_settings, mask_url
from deimos.errors import SchemaError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient


class RegistryError(SchemaError):
    """The schema registry could not be reached or refused a request."""


_clients: dict[tuple[Any, ...], SchemaRegistryClient] = {}
_lock = threading.Lock()


def registry_conf(settings: Settings, extra: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration for ``settings.schema`` plus a plugin's own
    pass-through properties (``extra``: timeouts, TLS files ...)."""
    conf: dict[str, Any] = {"url": settings.schema.registry_url}
    user, password = settings.schema.user, settings.schema.password
    if user is not None or password is not None:
        secret = password.get_secret_value() if password is not None else ""
        conf["basic.auth.user.info"] = f"{user or ''}:{secret}"
    if extra:
        conf.update(extra)
    return conf


def registry_client(settings: Settings | None = None,
                    extra: Mapping[str, Any] | None = None) -> SchemaRegistryClient:
    """The shared client for ``schema.registry_url`` (``mock://name`` -> in-memory)."""
    conf = registry_conf(settings or get_settings(), extra)
    key = tuple(sorted((k, str(v)) for k, v in conf.items()))
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                from confluent_kafka.schema_registry import SchemaRegistryClient

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


def scrub(text: str, settings: Settings) -> str:
    """``text`` (an exception message) with registry credentials masked."""
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


def registry_failure(settings: Settings, action: str, exc: Exception) -> RegistryError:
    """The error for a failed registry call: refused (an HTTP error from the registry) or
    unreachable, with the URL and no credentials."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        what = f"Schema registry at {safe_url(settings)} refused to {action}"
    else:
        what = f"Cannot reach the schema registry at {safe_url(settings)} to {action}"
    return RegistryError(f"{what}: {type(exc).__name__}: {scrub(str(exc), settings)}")
