"""confluent-kafka's schema registry client, one per URL and credentials per process, shared by
every registry-backed schema plugin (Avro, Protobuf, JSON Schema), and the errors of its calls.

One client per URL matters for ``mock://`` registries: confluent-kafka keeps a mock registry's
store inside the client object, so producers, consumers, tests and *different schema plugins*
of one process must share it to see each other's schemas and get the same ids. That is why this
lives in core rather than in one plugin: before it, ``deimos_avro.registry`` owned the cache,
and a second plugin would have had to depend on ``deimos-avro`` (and fastavro) for it.

``file://PATH`` URLs are the development registry (:mod:`deimos.schema.devregistry`): a store
in one file that every local process shares.

Credentials never travel in the URL: confluent-kafka's HTTP client (httpx) logs every request
URL at INFO, user info included, so ``http://user:secret@host`` is split here into the bare URL
and ``basic.auth.user.info``.

confluent-kafka's ``schema_registry`` package is imported lazily: core does not depend on its
``schemaregistry`` extra, the plugins that call this module do.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from deimos.config import Settings, get_settings, mask_url
from deimos.errors import SchemaError, TransientError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient


@contextlib.contextmanager
def quiet_authlib() -> Iterator[None]:
    """Within the block, authlib's deprecation warnings are not shown.

    confluent-kafka's registry client imports authlib, whose modules warn at import time
    (``AuthlibDeprecationWarning``: its httpx fallback, ``authlib.jose``) and whose
    ``authlib.deprecate`` installs an ``always`` filter for them, so ``-W ignore`` and
    ``PYTHONWARNINGS`` cannot hide them: every ``deimos`` command printed one. They concern
    confluent-kafka's use of authlib, nothing a deimos user can change. The filters in force
    before the block (authlib's ``always`` included, when it installs it here) are restored.
    """
    with warnings.catch_warnings():
        try:
            from authlib.deprecate import AuthlibDeprecationWarning
        except ImportError:  # confluent-kafka without its schemaregistry extra
            pass
        else:
            warnings.simplefilter("ignore", AuthlibDeprecationWarning)
        yield


def import_client_module() -> None:
    """Import ``confluent_kafka.schema_registry`` with :func:`quiet_authlib` (once; every
    later import finds it in ``sys.modules``). Registry-backed plugins call it first."""
    with quiet_authlib(), contextlib.suppress(ImportError):
        import confluent_kafka.schema_registry  # noqa: F401


class RegistryError(SchemaError):
    """The schema registry refused a request, or answered with something unusable: permanent
    (a consumer's ``on_error`` applies to the message)."""


class RegistryUnavailableError(RegistryError, TransientError):
    """The schema registry could not be reached, timed out or answered 408, 429 or 5xx:
    retriable (a consumer pauses and retries; a producer's caller may publish again)."""


#: HTTP statuses that say "not now" rather than "no" (confluent-kafka retries the same ones)
RETRIABLE_STATUSES = frozenset((408, 429, 500, 502, 503, 504))

_clients: dict[tuple[Any, ...], SchemaRegistryClient] = {}
_lock = threading.Lock()


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``http://u:p@h:1,http://h2`` -> ``("http://h:1,http://h2", "u:p")``: the URLs without
    user info, and the (first) user info, percent-decoded as confluent-kafka decodes it."""
    bare: list[str] = []
    info: str | None = None
    for part in url.split(","):
        part = part.strip()
        parts = urlsplit(part)
        if "@" in parts.netloc:
            creds, _, host = parts.netloc.rpartition("@")
            user, _, password = creds.partition(":")
            if info is None:
                info = f"{unquote(user)}:{unquote(password)}"
            part = urlunsplit(parts._replace(netloc=host))
        bare.append(part)
    return ",".join(bare), info


def registry_conf(settings: Settings, extra: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration for ``settings.schema`` plus a plugin's own
    pass-through properties (``extra``: timeouts, TLS files ...). ``schema.user`` and
    ``schema.password`` win over user info in the URL."""
    url, info = split_userinfo(settings.schema.registry_url)
    conf: dict[str, Any] = {"url": url}
    user, password = settings.schema.user, settings.schema.password
    if user is not None or password is not None:
        secret = password.get_secret_value() if password is not None else ""
        info = f"{user or ''}:{secret}"
    if info is not None and not url.startswith(("mock://", "file://")):
        conf["basic.auth.user.info"] = info
    if extra:
        conf.update(extra)
    return conf


def registry_client(settings: Settings | None = None,
                    extra: Mapping[str, Any] | None = None) -> SchemaRegistryClient:
    """The shared client for ``schema.registry_url`` (``mock://name`` -> in-memory,
    ``file://path`` -> the development registry)."""
    conf = registry_conf(settings or get_settings(), extra)
    key = tuple(sorted((k, str(v)) for k, v in conf.items()))
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                if conf["url"].startswith("file://"):
                    from deimos.schema.devregistry import dev_registry_client

                    client = dev_registry_client(dict(conf))
                else:
                    import_client_module()
                    from confluent_kafka.schema_registry import SchemaRegistryClient

                    # new_client, not the constructor: only it returns the mock for mock://.
                    client = SchemaRegistryClient.new_client(dict(conf))
                _clients[key] = client
    return client


def reset_clients() -> None:
    """Drop every shared client (and with them every ``mock://`` registry's contents)."""
    with _lock:
        _clients.clear()


def safe_url(settings: Settings) -> str:
    """The registry URL without credentials, for messages."""
    return mask_url(settings.schema.registry_url)


def scrub(text: str, settings: Settings) -> str:
    """``text`` (an exception message) with registry credentials masked."""
    text = mask_url(text)
    pw = settings.schema.password
    secrets = [pw.get_secret_value()] if pw is not None else []
    info = split_userinfo(settings.schema.registry_url)[1]
    if info is not None:
        secrets.append(info.partition(":")[2])
    for s in secrets:
        if s:
            text = text.replace(s, "**********")
    return text


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Failures before any answer: connection refused or reset, DNS, TLS, timeouts."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for name in ("httpx2", "httpx"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        errors.append(mod.TransportError)
    return tuple(errors)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed registry call may succeed when tried again."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, SchemaRegistryError):
        return exc.http_status_code in RETRIABLE_STATUSES
    return isinstance(exc, _transport_errors())


def registry_failure(settings: Settings, action: str, exc: Exception) -> RegistryError:
    """The error for a failed registry call, with the URL and no credentials: unreachable or
    overloaded (:class:`RegistryUnavailableError`, retriable), refused (an HTTP error such as
    404 or 409) or answered with something that does not parse (:class:`RegistryError`)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, RegistryError):
        return exc
    url = safe_url(settings)
    cause = f"{type(exc).__name__}: {scrub(str(exc), settings)}"
    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        if status in RETRIABLE_STATUSES:
            return RegistryUnavailableError(
                f"Schema registry at {url} is unavailable (HTTP {status}) to {action}; "
                f"retriable: {cause}")
        return RegistryError(f"Schema registry at {url} refused to {action} "
                             f"(HTTP {status}): {cause}")
    if is_transient(exc):
        return RegistryUnavailableError(
            f"Cannot reach the schema registry at {url} to {action}; retriable: {cause}")
    return RegistryError(f"Schema registry at {url} answered a request to {action} with "
                         f"something unusable: {cause}")
