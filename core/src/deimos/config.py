"""Settings: one validated model, set from Python, a TOML/YAML file and the environment.

Precedence, lowest first: defaults < file < Python (``deimos.configure(...)``) < environment
(``DEIMOS_<SECTION>__<KEY>``, ``__`` between levels). The environment wins so that operators
can override a deployed service without a code change. Every leaf value remembers where it
came from (``deimos config show``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from deimos.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "DEIMOS_"
ENV_FILE_VAR = "DEIMOS_CONFIG"
#: the settings file read when neither ``configure(file=...)`` (or ``--config``) nor
#: ``DEIMOS_CONFIG`` names one, if the current directory has it: the same rule for the CLI
#: and for an application that imports deimos (``uvicorn app:app`` next to its deimos.toml)
DEFAULT_FILE = "deimos.toml"
#: environment variables that are not settings
_ENV_RESERVED = {"DEIMOS_CONFIG", "DEIMOS_PLUGINS", "DEIMOS_PLUGINS_STRICT"}

_SECRET_KEY = re.compile(
    r"(password|secret|token(?!_provider)|credentials|sasl\.oauthbearer\.config)",
    re.I)
MASK = "**********"


def _mask_value(key: str, value: Any) -> Any:
    """``value`` as it may be shown: secrets by key name masked, URL credentials masked."""
    if value is None or isinstance(value, (SecretStr, BaseModel)):
        return value  # SecretStr and sections mask themselves
    if key and _SECRET_KEY.search(key):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value("", v) for v in value]
    return value


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors; secrets never reach a repr.

    Plugins should derive their own sections from it: a field holding a secret should be a
    ``SecretStr``, but fields and pass-through keys named like one (``password``, ``secret``,
    ``token``, ``credentials``) and credentials in URLs are masked in reprs anyway.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _mask_value(name or "", value)

    @model_serializer(mode="wrap")
    def _mask_credentials(self, handler: SerializerFunctionWrapHandler,
                          info: SerializationInfo) -> Any:
        """``model_dump()`` masks credentials in URLs too (``schema.registry_url``,
        ``db.url``): settings get dumped into logs and error reports. deimos itself reads
        them with ``context={REVEAL: True}`` (:func:`settings_data`)."""
        data = handler(self)
        if (info.context or {}).get(REVEAL) or not isinstance(data, dict):
            return data
        return {k: mask_url(v) if isinstance(v, str) else
                {ik: mask_url(iv) if isinstance(iv, str) else iv for ik, iv in v.items()}
                if isinstance(v, dict) else v for k, v in data.items()}


def _split_commas(v: Any) -> Any:
    """``"log,mock"`` -> ``["log", "mock"]`` (handy in environment variables)."""
    if isinstance(v, str):
        return [part.strip() for part in v.split(",") if part.strip()]
    return v


PassThrough = dict[str, str | int | float | bool]


#: the name of the ``kafka`` section itself among the clusters (``cluster = "default"``)
DEFAULT_CLUSTER = "default"


class ClusterSettings(Section):
    """Connection to one Kafka cluster: the ``kafka`` section (the default cluster) and each
    ``kafka.clusters.<name>``. A named cluster inherits nothing from ``kafka``: credentials
    of one cluster must never reach another."""

    #: where these settings are (``kafka``, ``kafka.clusters.analytics``), for errors
    _where: str = PrivateAttr(default="kafka")

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset means the embedded broker (demo)"
    )
    client_id: str = "deimos"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    config: PassThrough = Field(
        default_factory=dict, description="any librdkafka property, passed through as is"
    )
    error_summary_interval: float = Field(
        30.0, gt=0, description="seconds between log summaries while the brokers stay "
        "unreachable (the failure is logged once, then summarised, then its end)")
    sasl_oauth_token_provider: str | None = Field(
        None, description="'module:function' returning an OAUTHBEARER token: (token, expiry "
        "as seconds since the epoch[, principal[, extensions]]); given librdkafka's "
        "sasl.oauthbearer.config. Passed to every client as confluent-kafka's oauth_cb")

    @field_validator("sasl_oauth_token_provider")
    @classmethod
    def _provider_path(cls, v: str | None) -> str | None:
        if v is not None:
            module, sep, attr = v.partition(":")
            if not sep or not module.strip() or not attr.strip():
                raise ValueError(f"{v!r} is not 'module:function' (e.g. 'myapp.auth:token')")
        return v

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _join_list(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return v

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration these settings describe."""
        conf: dict[str, Any] = {"client.id": self.client_id}
        if self.bootstrap_servers:
            conf["bootstrap.servers"] = self.bootstrap_servers
        if self.security_protocol != "PLAINTEXT":
            conf["security.protocol"] = self.security_protocol
        for key, attr in (
            ("sasl.mechanism", "sasl_mechanism"),
            ("sasl.username", "sasl_username"),
            ("ssl.ca.location", "ssl_ca_location"),
            ("ssl.certificate.location", "ssl_certificate_location"),
            ("ssl.key.location", "ssl_key_location"),
        ):
            if getattr(self, attr):
                conf[key] = getattr(self, attr)
        for key, attr in (("sasl.password", "sasl_password"),
                          ("ssl.key.password", "ssl_key_password")):
            secret = getattr(self, attr)
            if secret is not None:
                conf[key] = secret.get_secret_value()
        conf.update(self.config)
        if self.sasl_oauth_token_provider:
            conf["oauth_cb"] = self.oauth_token_provider()
        return conf

    @property
    def where(self) -> str:
        """Where these settings are: ``kafka`` or ``kafka.clusters.<name>``."""
        return self._where

    def oauth_token_provider(self) -> Any:
        """The function ``sasl_oauth_token_provider`` names, imported; a
        :class:`~deimos.errors.ConfigError` naming the setting when it cannot be."""
        import importlib

        path = self.sasl_oauth_token_provider or ""
        module, _, attr = path.partition(":")
        where = f"{self._where}.sasl_oauth_token_provider"
        try:
            fn = importlib.import_module(module.strip())
            for part in attr.strip().split("."):
                fn = getattr(fn, part)
        except ImportError as exc:
            raise ConfigError([(where, f"cannot import {module!r} of {path!r}: {exc}")]
                              ) from None
        except AttributeError:
            raise ConfigError([(where, f"module {module!r} has no {attr!r} ({path!r})")]
                              ) from None
        if not callable(fn):
            raise ConfigError([(where, f"{path!r} is not callable")])
        return fn


class KafkaSettings(ClusterSettings):
    """Connection to the default cluster, shared by producers and consumers, and the other
    clusters producers and consumers may choose (``cluster = "analytics"``)."""

    clusters: dict[str, ClusterSettings] = Field(
        default_factory=dict, description="name -> connection of another cluster "
        "(`[kafka.clusters.analytics]`, the same keys as `kafka`, nothing inherited)")

    @field_validator("clusters")
    @classmethod
    def _names(cls, v: dict[str, ClusterSettings]) -> dict[str, ClusterSettings]:
        if DEFAULT_CLUSTER in v:
            raise ValueError(f"{DEFAULT_CLUSTER!r} names the kafka section itself; give "
                             "the other clusters other names")
        for name, cluster in v.items():
            cluster._where = f"kafka.clusters.{name}"
        return v

    def cluster(self, name: str | None) -> ClusterSettings:
        """The settings of cluster ``name`` (None or ``"default"``: this section)."""
        if name is None or name == DEFAULT_CLUSTER:
            return self
        found = self.clusters.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def cluster_names(self) -> list[str]:
        return [DEFAULT_CLUSTER, *self.clusters]


class KeyConfig(Section):
    """How a topic's message key is made: ``none``, ``plain``, ``field`` or ``schema``."""

    kind: Literal["none", "plain", "field", "schema"] = "none"
    field: str | None = None
    schema_name: str | None = Field(None, alias="schema")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        # Accept the Ruby Deimos shapes: {"none": true}, {"plain": true}, {"field": "id"},
        # {"schema": "MyKey"}, and the strings "none" / "plain".
        if isinstance(v, KeyConfig):
            return v
        if v is None:
            return {"kind": "none"}
        if isinstance(v, str):
            return {"kind": v}
        if isinstance(v, Mapping) and "kind" not in v:
            if v.get("none"):
                return {"kind": "none"}
            if v.get("plain"):
                return {"kind": "plain"}
            if "field" in v:
                return {"kind": "field", "field": v["field"]}
            if "schema" in v:
                return {"kind": "schema", "schema": v["schema"]}
        return v

    @model_validator(mode="after")
    def _check(self) -> KeyConfig:
        if self.kind == "field" and not self.field:
            raise ValueError("key_config 'field' needs the field name, e.g. {field = 'id'}")
        if self.kind == "schema" and not self.schema_name:
            raise ValueError("key_config 'schema' needs the key schema name")
        return self

    def describe(self) -> str:
        if self.kind == "field":
            return f"field: {self.field}"
        if self.kind == "schema":
            return f"schema: {self.schema_name}"
        return self.kind


class OwnSchemaSettings(Section):
    """A producer's or consumer's own schema backend and registry (Ruby Deimos's per-topic
    ``schema_backend``, ``registry_url``, ``registry_user``, ``registry_password``), over the
    ``schema`` section. A ``registry_url`` of its own takes no credentials from ``schema``:
    those belong to the other registry."""

    schema_backend: str | None = Field(
        None, description="schema backend entry-point name (unset: schema.backend)")
    registry_url: str | None = Field(
        None, description="schema registry of this producer/consumer (unset: "
        "schema.registry_url)")
    registry_user: str | None = Field(None, description="its registry's user")
    registry_password: SecretStr | None = Field(None, description="its registry's password")

    def schema_overrides(self) -> dict[str, Any]:
        """What these settings change in the ``schema`` section (empty: nothing)."""
        out: dict[str, Any] = {}
        if self.schema_backend:
            out["backend"] = self.schema_backend
        if self.registry_url:
            out.update(registry_url=self.registry_url, user=None, password=None)
        if self.registry_user is not None:
            out["user"] = self.registry_user
        if self.registry_password is not None:
            out["password"] = self.registry_password
        return out


class TopicSettings(OwnSchemaSettings):
    """A topic producers can publish to without a producer class (``deimos.produce``)."""

    topic: str
    schema_name: str | None = Field(None, alias="schema")
    namespace: str | None = None
    key_config: KeyConfig = Field(default_factory=KeyConfig)
    backend: str | None = None
    cluster: str | None = Field(
        None, description="the cluster to publish to (a name under kafka.clusters; unset: "
        "the kafka section)")
    config: PassThrough = Field(
        default_factory=dict, description="librdkafka producer properties of this topic, "
        "over producers.config (Ruby's per-topic kafka(...)): its own shared producer")


class ProducerSettings(Section):
    backend: str = Field("kafka_async", description="producer backend entry-point name")
    topic_prefix: str = ""
    disabled: bool = False
    max_batch_size: int = Field(500, gt=0, description="messages per backend call for "
                                "backends that take a batch at a time (the outbox)")
    idempotence: bool = True
    sync_timeout: float = Field(30.0, gt=0, description="seconds a synchronous publish waits")
    flush_timeout: float = Field(30.0, ge=0, description="seconds to flush at shutdown")
    config: PassThrough = Field(default_factory=dict, description="librdkafka producer props")
    transactional_id: str | None = Field(
        None, description="transactional.id of deimos.transaction() (plain publishing in a "
        "Kafka transaction); unique per running process: two with the same id fence each "
        "other")
    topics: list[TopicSettings] = Field(default_factory=list)
    payload_log: Literal["full", "keys", "count", "headers"] | None = Field(
        None, description="log every published message on deimos.producer at DEBUG "
        "(full, keys, count, headers, as consumers[].payload_log); unset logs nothing, so "
        "the publish path does no logging work; a producer's payload_log attribute wins")


def rename_deprecated(data: Any, renames: Mapping[str, tuple[str, Any]], where: str) -> Any:
    """Old setting names still accepted, with a ``FutureWarning`` naming the new one.

    ``renames`` maps an old key of ``data`` to ``("retry.backoff", convert)``: a dotted new
    name (one level of nesting) and a function converting the old value, or None. A value
    given under both names is a settings error rather than a silent choice.
    """
    if not isinstance(data, Mapping) or not any(old in data for old in renames):
        return data
    import warnings

    data = dict(data)
    for old, (new, convert) in renames.items():
        if old not in data:
            continue
        value = data.pop(old)
        value = convert(value) if convert is not None else value
        outer, _, inner = new.partition(".")
        nested = dict(data.get(outer) or {}) if inner else None
        if (nested is not None and inner in nested) or (nested is None and outer in data):
            raise ValueError(f"{where}.{old} and {where}.{new} are both set; keep {new}")
        # FutureWarning, not DeprecationWarning: settings are written by the people running
        # the service, and Python shows FutureWarning to them by default
        warnings.warn(f"{where}.{old} is deprecated; use {where}.{new}", FutureWarning,
                      stacklevel=2)
        if nested is not None:
            nested[inner] = value
            data[outer] = nested
        else:
            data[outer] = value
    return data


class BackoffSettings(Section):
    """How long to wait between retries (:class:`deimos.retry.Backoff`): the same names
    wherever deimos retries."""

    backoff: float = Field(0.5, ge=0, description="seconds before the first retry")
    max_backoff: float = Field(30.0, ge=0, description="longest wait between retries")
    multiplier: float = Field(2.0, ge=1, description="growth of the wait per retry")
    jitter: float = Field(0.0, ge=0, lt=1, description="waits spread by this fraction "
                          "either way (0.2: 80 % to 120 %), capped at max_backoff")


class RetrySettings(BackoffSettings):
    """A retry schedule: how many deliveries, and the waits between them."""

    attempts: int = Field(3, ge=1, description="deliveries before the message is given up")


class ConsumerSettings(OwnSchemaSettings):
    name: str | None = None
    cluster: str | None = Field(
        None, description="the cluster to consume from (a name under kafka.clusters; unset: "
        "the kafka section)")
    class_path: str | None = Field(
        None, alias="class", description="'module:Class' of the consumer"
    )
    topics: list[str] = Field(default_factory=list)
    topic_pattern: str | None = None
    group_id: str | None = None
    schema_name: str | None = Field(None, alias="schema")
    namespace: str | None = None
    key_config: KeyConfig | None = None
    start_from_beginning: bool = True
    max_batch_size: int = Field(500, gt=0)
    max_wait_time: float = Field(1.0, gt=0, description="seconds to wait to fill a batch")
    session_timeout_ms: int = Field(45000, gt=0, description="classic group protocol only")
    group_protocol: Literal["classic", "consumer"] = Field(
        "classic", description="'consumer': the rebalance protocol of KIP-848 (Kafka 4's "
        "default; the broker then decides session and heartbeat timeouts)")
    concurrency: int = Field(1, ge=1, description="threads, each with its own partitions")
    max_concurrency: int = Field(
        1, ge=1, description="messages of one partition's batch handled at once (coroutines "
        "of an AsyncConsumer, worker threads of a Consumer); same key never at once, offsets "
        "stored up to the lowest unfinished one")
    payload_log: Literal["full", "keys", "count", "headers"] = "full"
    on_error: Literal["raise", "retry", "dead_letter", "skip", "retry_topics"] = Field(
        "raise", description="once a message's retry.attempts are used up: raise (stop; "
        "restart from the committed offset), retry (never give up), dead_letter, skip, "
        "retry_topics (forward to the retry_topics ladder, then dead_letter_topic)")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    retry_topics: list[str] = Field(
        default_factory=list, description="on_error = 'retry_topics': the delays of the "
        "ladder (\"5s\", \"1m\", \"10m\"; ms, s, m, h), one topic <topic>.retry.<n> each; "
        "a retry consumer started by deimos run handles each message once it is due")
    dead_letter_topic: str | None = None
    dead_letter_cluster: str | None = Field(
        None, description="the cluster dead letters are written to (unset: the consumer's)")
    dead_letter_error_bytes: int = Field(
        1024, ge=16, description="longest deimos-error-message header of a dead letter "
        "(bytes; SQL errors never carry their bound parameters)")
    use_schema_classes: bool | None = None
    inbox: bool = Field(
        False, description="database exactly-once: each message (each batch of a batch "
        "consumer) handled in one database transaction with its inbox row, the handler's own "
        "writes and the outbox rows of its publishes; redelivered messages skipped (needs a "
        "plugin that keeps an inbox, such as deimos-db; docs/exactly-once.md)")
    transactional: bool = Field(
        False, description="Kafka exactly-once: what the handler publishes through the kafka "
        "backends and the consumed offsets commit together in Kafka transactions (needs "
        "transactional_id; docs/exactly-once.md)")
    transaction_interval: float = Field(
        0.1, ge=0, description="seconds a transactional consumer's transaction stays open "
        "over polled batches before it commits (Kafka Streams' commit.interval.ms under "
        "exactly-once, 100 ms): the commit's round trips are paid once per interval instead "
        "of once per batch; a failure rewinds every batch of the open transaction; 0 commits "
        "each polled batch")
    transactional_id: str | None = Field(
        None, description="prefix of the transactional.id of a transactional consumer: the "
        "id is '<prefix>-<consumer name>-<thread index>'; unique per running instance of the "
        "service (two processes with the same id fence each other)")
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed", description="librdkafka's isolation.level: read_committed skips "
        "messages of open and aborted transactions")
    disabled: bool = False
    config: PassThrough = Field(default_factory=dict, description="librdkafka consumer props")

    _split = field_validator("topics", mode="before")(_split_commas)
    @field_validator("retry_topics", mode="before")
    @classmethod
    def _ladder_items(cls, v: Any) -> Any:
        """``"5s,1m"`` (an environment variable) split; plain numbers are seconds."""
        v = _split_commas(v)
        if isinstance(v, (list, tuple)):
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x
                    for x in v]
        return v

    @field_validator("retry_topics")
    @classmethod
    def _durations(cls, ladder: list[str]) -> list[str]:
        from deimos.consumer.retry_topics import parse_duration

        for i, value in enumerate(ladder):
            try:
                parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"rung {i + 1} ({value!r}): {exc}") from None
        return ladder

    @model_validator(mode="after")
    def _check(self) -> ConsumerSettings:
        if self.on_error == "dead_letter" and not self.dead_letter_topic:
            raise ValueError("on_error 'dead_letter' needs dead_letter_topic")
        # on_error = "retry_topics" is checked once the class's attributes are merged in
        # (deimos.consumer.retry_topics.check_settings): an entry may set only the ladder
        if self.transactional:
            if not self.transactional_id:
                raise ValueError(
                    "transactional = true needs transactional_id: a prefix unique per running "
                    "instance of the service (e.g. the host name), since two processes with "
                    "the same transactional.id fence each other")
            if self.max_concurrency > 1:
                raise ValueError(
                    f"transactional = true handles a batch in one transaction, in order: "
                    f"max_concurrency {self.max_concurrency} cannot be used with it (use "
                    "concurrency for more partitions at once)")
            bad = [k for k in ("enable.auto.commit", "isolation.level", "transactional.id")
                   if k in self.config]
            if bad:
                raise ValueError(
                    f"config {', '.join(bad)} cannot be set with transactional = true: offsets "
                    "commit with the transaction (use isolation_level, transactional_id)")
        return self


class SchemaSettings(Section):
    backend: str = Field("plain", description="schema backend entry-point name")
    registry_url: str = "mock://deimos"
    user: str | None = None
    password: SecretStr | None = None
    path: str = "schemas"
    use_schema_classes: bool = False
    generated_class_path: str = "schemas"

    @model_validator(mode="after")
    def _one_credential_source(self) -> SchemaSettings:
        if (self.user is not None or self.password is not None) and re.search(
                r"://[^/@]+@", self.registry_url):
            raise ValueError(
                "schema.registry_url carries credentials (user:password@) and schema.user/"
                "schema.password are set too: give them one way")
        return self


class MetricsSettings(Section):
    providers: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict, description="added to every metric")
    kafka_statistics: bool = Field(
        True, description="forward librdkafka's statistics (broker round trips, queue "
        "depths, consumer lag as librdkafka sees it) as gauges, every statistics.interval.ms "
        "(default 2000), from the shared producers and the group consumers")

    _split = field_validator("providers", mode="before")(_split_commas)


class TracingSettings(Section):
    providers: list[str] = Field(default_factory=list)

    _split = field_validator("providers", mode="before")(_split_commas)


class RunnerSettings(Section):
    shutdown_timeout: float = Field(30.0, gt=0, description="seconds to stop gracefully")
    restart_delay: float = Field(
        5.0, ge=0, description="seconds before a crashed runnable restarts"
    )
    cancel_handlers_after: float | None = Field(
        None, ge=0, description="seconds after a stop request at which asyncio handlers "
        "still running are cancelled (their messages not committed); default: half of "
        "shutdown_timeout, leaving the rest to commit and close")


class HealthSettings(Section):
    """The HTTP server of ``deimos run``, ``deimos db-producer`` and ``deimos db-poller``:
    ``/livez``, ``/readyz``, ``/health`` and the pages metrics providers add (``/metrics``)."""

    port: int | None = Field(
        None, ge=0, le=65535, description="port to serve on (unset: no server; "
        "`--health-port` overrides; 0 picks a free port)")
    host: str = Field("0.0.0.0", description="address to listen on")


class TopicSpecSettings(Section):
    """How a topic is created by ``deimos topics apply`` (unset: the broker's default)."""

    partitions: int | None = Field(None, gt=0, description="partitions (raised, never "
                                   "lowered); unset: the broker's num.partitions")
    replication_factor: int | None = Field(
        None, gt=0, description="replicas per partition at creation; unset: the broker's "
        "default.replication.factor")
    config: PassThrough = Field(default_factory=dict, description="topic configs "
                                "(retention.ms, cleanup.policy, ...), set when they differ")


class TopicsSettings(Section):
    """Declared topics for ``deimos topics plan|apply``: ``defaults`` for every topic the
    settings imply, ``overrides`` per topic name (a name only here is declared too)."""

    defaults: TopicSpecSettings = Field(
        default_factory=TopicSpecSettings, description="partitions, replication_factor and "
        "config of every declared topic")
    overrides: dict[str, TopicSpecSettings] = Field(
        default_factory=dict, description="topic name (without the prefix) -> its own "
        "partitions, replication_factor and config")


class Settings(Section):
    """Every deimos setting; plugins add their own sections."""

    app: str | None = Field(
        None, description="'module:function' imported and called once before any runnable "
        "starts, in every deimos CLI process (logging, the OpenTelemetry SDK, ...)")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    producers: ProducerSettings = Field(default_factory=ProducerSettings)
    consumers: list[ConsumerSettings] = Field(default_factory=list)
    schema_: SchemaSettings = Field(default_factory=SchemaSettings, alias="schema")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    topics: TopicsSettings = Field(default_factory=TopicsSettings)

    @model_validator(mode="after")
    def _clusters_exist(self) -> Settings:
        known = self.kafka.cluster_names()
        refs = [(f"producers.topics.{i}.cluster", t.cluster)
                for i, t in enumerate(self.producers.topics)]
        for i, c in enumerate(self.consumers):
            refs += [(f"consumers.{i}.cluster", c.cluster),
                     (f"consumers.{i}.dead_letter_cluster", c.dead_letter_cluster)]
        for path, name in refs:
            if name is not None and name not in known:
                # ConfigError passes through pydantic: the error names the field, not <root>
                raise ConfigError([(path, f"cluster {name!r} is not configured under "
                                          f"kafka.clusters (configured: {', '.join(known)})")])
        return self

    @property
    def schema(self) -> SchemaSettings:  # type: ignore[override]
        return self.schema_

    def section(self, name: str) -> Any:
        """A plugin's own section (``settings.section("avro")``)."""
        return getattr(self, name)


# ---------------------------------------------------------------------------------------------
# Loading and merging
# ---------------------------------------------------------------------------------------------


def _plugin_sections() -> dict[str, type[BaseModel]]:
    from deimos.plugins import call_all, get_registry

    sections: dict[str, type[BaseModel]] = {}
    for result in call_all(get_registry().all(), "deimos_settings_sections"):
        sections.update(result or {})
    return sections


def settings_model() -> type[Settings]:
    """The settings model including every installed plugin's sections."""
    sections = _plugin_sections()
    if not sections:
        return Settings
    fields: dict[str, Any] = {
        name: (model, Field(default_factory=model)) for name, model in sections.items()
    }
    return create_model("Settings", __base__=Settings, **fields)


def _yaml_error() -> type[Exception]:
    """PyYAML's error base class (a settings error like any other parse error), or a class
    nothing raises when PyYAML is not installed."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        return ValueError
    return yaml.YAMLError


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` settings file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([("<file>", f"settings file {str(p)!r} does not exist")])
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError([("<file>", f"{str(p)!r}: use a .toml, .yaml or .yml file")])
    except (tomllib.TOMLDecodeError, ValueError, _yaml_error()) as exc:
        raise ConfigError([("<file>", f"{str(p)!r} is not valid: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([("<file>", f"{str(p)!r} must hold a table/mapping at the top")])
    return data.get("deimos", data) if set(data) == {"deimos"} else data


def _parse_env_value(raw: str) -> Any:
    """JSON for lists and tables (``["a","b"]``, ``{"k": 1}``); anything else stays a string,
    which validation converts to the setting's type (``"100"`` -> 100, ``"true"`` -> True),
    so a numeric-looking password or client id is not turned into a number."""
    if raw.strip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


#: top-level settings that are values, not sections: ``DEIMOS_APP`` sets ``app``
_ENV_TOP_LEVEL = {"DEIMOS_APP": "app"}


def _env_items(environ: Mapping[str, str]) -> Iterator[tuple[list[str], Any, str]]:
    for name, raw in sorted(environ.items()):
        if name in _ENV_TOP_LEVEL:
            yield [_ENV_TOP_LEVEL[name]], raw, name
            continue
        if not name.startswith(ENV_PREFIX) or name in _ENV_RESERVED or "__" not in name:
            continue
        if name.startswith("DEIMOS_TEST_"):
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if "config" in parts[:-1]:
            # librdkafka properties are dotted: DEIMOS_KAFKA__CONFIG__SASL_PASSWORD sets
            # kafka.config["sasl.password"]
            i = parts.index("config")
            parts = [*parts[:i + 1], ".".join(parts[i + 1:]).replace("_", ".")]
        yield parts, _parse_env_value(raw), name


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """``DEIMOS_KAFKA__BOOTSTRAP_SERVERS=x`` -> {"kafka.bootstrap_servers": (x, name)}."""
    environ = os.environ if environ is None else environ
    return {".".join(parts): (value, name) for parts, value, name in _env_items(environ)}


def _set_path(data: dict[str, Any], path: str | list[str], value: Any) -> None:
    parts = path.split(".") if isinstance(path, str) else path
    cur: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt_is_index = parts[i + 1].isdigit()
        if isinstance(cur, list):
            idx = int(part)
            while len(cur) <= idx:
                cur.append({})
            cur = cur[idx]
            continue
        if part not in cur or not isinstance(cur[part], (dict, list)):
            cur[part] = [] if nxt_is_index else {}
        cur = cur[part]
    last = parts[-1]
    if isinstance(cur, list):
        idx = int(last)
        while len(cur) <= idx:
            cur.append({})
        cur[idx] = value
    else:
        cur[last] = value


def _leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for i, v in enumerate(data):
            yield from _leaves(v, f"{prefix}.{i}")
    else:
        yield prefix, data


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


#: ``model_dump(context={REVEAL: True})`` keeps credentials in URLs (deimos's own reads)
REVEAL = "deimos_reveal_credentials"


def settings_data(settings: BaseModel, *, exclude_unset: bool = True) -> dict[str, Any]:
    """Settings as plain data that builds the same settings again (credentials kept: not for
    showing; :func:`masked_dict` is)."""
    data: dict[str, Any] = settings.model_dump(by_alias=True, exclude_unset=exclude_unset,
                                               context={REVEAL: True})
    return data


def _to_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return settings_data(value)
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def format_errors(exc: ValidationError, sources: Mapping[str, str], prefix: str = ""
                  ) -> ConfigError:
    """A settings validation error as a :class:`ConfigError` naming each setting (under
    ``prefix``, for a section validated on its own) and where its value came from."""
    errors = []
    for err in exc.errors():
        loc = [prefix] * bool(prefix) + [str(p) for p in err["loc"]]
        path = ".".join("schema" if p == "schema_" else p for p in loc) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif "input" in err and err["type"] not in ("missing",):
            inp = err["input"]
            shown = MASK if _SECRET_KEY.search(path) else repr(inp)
            if not isinstance(inp, (dict, list)):
                msg += f" (got {shown} of type {type(inp).__name__})"
        src = sources.get(path) or next(
            (v for k, v in sources.items() if k.startswith(path + ".")), None)
        if src:
            msg += f" [from {src}]"
        errors.append((path, msg))
    return ConfigError(errors)


class LoadedSettings:
    """Validated settings plus where each value came from, and what they were built from (a
    later ``configure`` merges onto it)."""

    def __init__(self, settings: Settings, sources: dict[str, str],
                 python: dict[str, Any] | None = None,
                 file: str | os.PathLike[str] | None = None):
        self.settings = settings
        self.sources = sources
        self.python = python or {}
        self.file = file


def build_settings(
    python: Mapping[str, Any] | None = None,
    *,
    file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Merge defaults < file < python < environment and validate (the file: ``file``, else
    ``DEIMOS_CONFIG``, else ./deimos.toml when it exists)."""
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    data: dict[str, Any] = {}
    file = file or environ.get(ENV_FILE_VAR) or (
        DEFAULT_FILE if os.path.isfile(DEFAULT_FILE) else None)
    pdata: dict[str, Any] = {}
    if file:
        fdata = load_file(file)
        data = _deep_merge(data, fdata)
        for path, _ in _leaves(fdata):
            sources[path] = f"file {file}"
    if python:
        pdata = _to_plain(python)
        data = _deep_merge(data, pdata)
        for path, _ in _leaves(pdata):
            sources[path] = "python"
    for parts, value, name in _env_items(environ):
        _set_path(data, parts, value)
        sources[".".join(parts)] = f"env {name}"
    model = settings_model()
    try:
        settings = model.model_validate(data)
    except ValidationError as exc:
        raise format_errors(exc, sources) from None
    return LoadedSettings(settings, sources, pdata, file)


def masked_dict(settings: BaseModel) -> dict[str, Any]:
    """Settings as plain data with every secret replaced by ``**********``."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, SecretStr):
            return MASK
        if key and value is not None and _SECRET_KEY.search(key) and not isinstance(
                value, BaseModel):
            return MASK
        if isinstance(value, BaseModel):
            return {
                (f.alias or name): walk(getattr(value, name), name)
                for name, f in type(value).model_fields.items()
            }
        if isinstance(value, dict):
            return {k: (MASK if _SECRET_KEY.search(str(k)) and v is not None else walk(v, k))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return mask_url(value)
        return value

    return walk(settings)


_URL_CREDS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@", re.I)


def mask_url(value: str) -> str:
    """``http://u:secret@host`` -> ``http://u:**********@host``."""
    return _URL_CREDS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)


# ---------------------------------------------------------------------------------------------
# The process-wide settings
# ---------------------------------------------------------------------------------------------

_lock = threading.RLock()
_current: LoadedSettings | None = None
_listeners: list[Any] = []


def configure(
    settings: Mapping[str, Any] | Settings | None = None,
    *,
    file: str | os.PathLike[str] | None = None,
    replace: bool = False,
    **sections: Any,
) -> Settings:
    """Set deimos's settings for this process and return them.

    ``deimos.configure(kafka={"bootstrap_servers": "k:9092"}, schema={"backend": "avro_local"})``
    or ``deimos.configure(file="deimos.toml")``; the environment still overrides both.

    A later call **merges** onto what earlier calls gave (tables merged key by key, a list
    such as ``consumers`` replaced whole; the file stays unless a new one is given), so a
    library configuring ``metrics`` does not drop an application's ``schema``. Pass
    ``replace=True`` to start over from defaults, the file and the environment.
    """
    python: dict[str, Any] = {}
    if isinstance(settings, BaseModel):
        python = _to_plain(settings)
    elif settings:
        python = _to_plain(dict(settings))
    python = _deep_merge(python, _to_plain(sections))
    previous = _current
    if previous is not None and not replace:
        python = _deep_merge(previous.python, python)
        file = file or previous.file
    loaded = build_settings(python, file=file)
    _install(loaded)
    return loaded.settings


def _install(loaded: LoadedSettings | None) -> None:
    global _current
    with _lock:
        _current = loaded
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def on_change(listener: Any) -> None:
    """Call ``listener()`` whenever settings are replaced (runtime caches reset)."""
    with _lock:
        _listeners.append(listener)


def current() -> LoadedSettings:
    """The loaded settings, configuring from file/environment on first use."""
    global _current
    loaded = _current  # read without the lock: publish() asks on every call
    if loaded is not None:
        return loaded
    with _lock:
        if _current is None:
            _current = build_settings()
        return _current


def get_settings() -> Settings:
    return current().settings


def reset() -> None:
    """Forget the configured settings (tests)."""
    _install(None)
