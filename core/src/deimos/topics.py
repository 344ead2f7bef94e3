"""Declarative topics: the topics the configuration implies, compared with the cluster.

``deimos topics plan`` prints what :func:`apply` would change; ``deimos topics apply`` does
it. The wanted topics are every name the settings imply (consumer topics, dead-letter
topics, ``producers.topics``, the topics of the DB pollers' producer classes) plus every name
under ``topics.overrides``, each with ``topics.defaults`` overridden by its own entry
(partitions, replication factor, topic configs). The topic prefix applies as producers and
consumers apply it.

Changes are only ever additive, as with Karafka's declarative topics: a missing topic is
created, partitions are raised (never lowered: Kafka cannot), declared configs that differ
are set (``IncrementalAlterConfigs`` SET; undeclared configs are left alone, nothing is
deleted). A replication factor that differs is reported but not changed (that needs a
partition reassignment, an operator's decision).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from deimos.config import DEFAULT_CLUSTER, Settings
from deimos.errors import DeimosError
from deimos.kafka.config import cluster_settings

log = logging.getLogger("deimos.topics")

Action = Literal["create", "update", "ok", "warn"]


@dataclass
class TopicSpec:
    """A topic as the settings want it."""

    name: str
    #: None: the broker's default (``num.partitions``); never a reason to change a topic
    partitions: int | None
    #: None: the broker's default (``default.replication.factor``)
    replication_factor: int | None
    config: dict[str, str]
    #: where the settings imply it (``consumer orders``, ``topics.overrides``, ...)
    sources: list[str] = field(default_factory=list)


@dataclass
class TopicChange:
    """What the plan says about one wanted topic."""

    spec: TopicSpec
    action: Action
    #: partitions on the cluster (None: the topic does not exist)
    current_partitions: int | None = None
    #: partitions to raise to (update only)
    add_partitions_to: int | None = None
    #: declared configs that differ: name -> (cluster value or None, wanted value)
    config_changes: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    #: what cannot or will not be changed (fewer partitions wanted, replication factor)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> list[str]:
        """Lines for ``deimos topics plan``."""
        s = self.spec
        if self.action == "create":
            parts = [f"{s.partitions if s.partitions else 'broker default'} partition(s)",
                     f"replication factor {s.replication_factor or 'broker default'}"]
            parts += [f"{k}={v}" for k, v in sorted(s.config.items())]
            lines = [f"+ {s.name}: create ({', '.join(parts)})"]
        elif self.action == "update":
            lines = []
            if self.add_partitions_to is not None:
                lines.append(f"~ {s.name}: partitions {self.current_partitions} -> "
                             f"{self.add_partitions_to}")
            for k, (old, new) in sorted(self.config_changes.items()):
                lines.append(f"~ {s.name}: config {k} {old if old is not None else '(unset)'}"
                             f" -> {new}")
        else:
            lines = [f"= {s.name}: up to date ({self.current_partitions} partition(s))"]
        lines += [f"! {s.name}: {w}" for w in self.warnings]
        return lines


def _str(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _producer_class_topic(path: str) -> str | None:
    from deimos.consumer import import_class

    topic = getattr(import_class(path), "topic", None)
    return topic if isinstance(topic, str) and topic else None


def implied_topics(settings: Settings, cluster: str | None = None) -> dict[str, list[str]]:
    """``topic -> sources``: every topic name the settings imply on ``cluster`` (a name under
    ``kafka.clusters``; default: the ``kafka`` section), prefix applied. DB pollers relay
    through the outbox to the default cluster, and a name only in ``topics.overrides`` is
    declared there too."""
    from deimos.consumer import import_class, resolve_settings

    prefix = settings.producers.topic_prefix
    out: dict[str, list[str]] = {}
    cluster = cluster or DEFAULT_CLUSTER
    default = cluster == DEFAULT_CLUSTER

    def add(name: str, source: str, prefixed: bool = True, on: str | None = None) -> None:
        if (on or DEFAULT_CLUSTER) == cluster:
            out.setdefault(prefix + name if prefixed else name, []).append(source)

    for entry in settings.consumers:
        if entry.disabled:
            continue
        label = entry.name or entry.class_path or "?"
        try:
            cs = resolve_settings(import_class(entry.class_path), entry) if entry.class_path \
                else entry
        except Exception as exc:
            raise DeimosError(f"consumer {label}: {exc}") from exc
        for t in cs.topics:
            add(t, f"consumer {cs.name or label}", on=cs.cluster)
        if cs.on_error == "retry_topics":
            from deimos.consumer.retry_topics import Ladder

            for t in Ladder.topics(cs):
                add(t, f"retry topics of consumer {cs.name or label}", on=cs.cluster)
        if cs.dead_letter_topic:
            # dead letters are written to the name as configured (no prefix)
            add(cs.dead_letter_topic, f"dead letters of consumer {cs.name or label}",
                prefixed=False, on=cs.dead_letter_cluster or cs.cluster)
    for ts in settings.producers.topics:
        add(ts.topic, "producers.topics", on=ts.cluster)
    db = getattr(settings, "db", None)
    for poller in (getattr(db, "pollers", None) or ()) if default else ():
        for path in poller.classes:
            try:
                topic = _producer_class_topic(path)
            except Exception as exc:
                raise DeimosError(f"DB poller {poller.poller_name}: {exc}") from exc
            if topic:
                add(topic, f"DB poller {poller.poller_name}")
    for name in settings.topics.overrides if default else ():
        if name not in out and prefix + name not in out:
            add(name, "topics.overrides")
    return out


def wanted_topics(settings: Settings, cluster: str | None = None) -> list[TopicSpec]:
    """The topics the settings want on ``cluster`` (default: the ``kafka`` section), sorted
    by name."""
    topics_settings = settings.topics
    defaults = topics_settings.defaults
    specs = []
    for name, sources in sorted(implied_topics(settings, cluster).items()):
        bare = name[len(settings.producers.topic_prefix):] if settings.producers.topic_prefix \
            and name.startswith(settings.producers.topic_prefix) else name
        override = topics_settings.overrides.get(name) or topics_settings.overrides.get(bare)
        config = {k: _str(v) for k, v in defaults.config.items()}
        partitions, rf = defaults.partitions, defaults.replication_factor
        if override is not None:
            config.update({k: _str(v) for k, v in override.config.items()})
            partitions = override.partitions or partitions
            rf = override.replication_factor or rf
        specs.append(TopicSpec(name, partitions, rf, config, sources))
    return specs


def _admin(settings: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    from deimos.inline import LastError, quiet
    from deimos.kafka.config import admin_config

    last = LastError()
    admin = AdminClient(quiet(admin_config(settings), last))
    admin.deimos_last_error = last  # type: ignore[attr-defined]
    return admin


def plan(settings: Settings, *, timeout: float = 10.0, admin: Any = None,
         cluster: str | None = None) -> list[TopicChange]:
    """Compare :func:`wanted_topics` with ``cluster`` (a name under ``kafka.clusters``;
    default: the ``kafka`` section)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource

    specs = wanted_topics(settings, cluster)
    settings = cluster_settings(settings, cluster, where="cluster")
    admin = admin or _admin(settings)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        from deimos.inline import unreachable

        last = getattr(admin, "deimos_last_error", None)
        raise unreachable(settings, "listing topics", getattr(last, "error", None) or exc
                          ) from None
    existing = {n: t for n, t in md.topics.items() if t.error is None}
    described: dict[str, dict[str, str | None]] = {}
    with_config = [s for s in specs if s.name in existing and s.config]
    if with_config:
        futures = admin.describe_configs(
            [ConfigResource("topic", s.name) for s in with_config], request_timeout=timeout)
        for resource, future in futures.items():
            entries = future.result(timeout)
            described[resource.name] = {k: e.value for k, e in entries.items()}
    changes = []
    for s in specs:
        t = existing.get(s.name)
        if t is None:
            changes.append(TopicChange(s, "create"))
            continue
        count = len(t.partitions)
        change = TopicChange(s, "ok", current_partitions=count)
        if s.partitions is not None and s.partitions > count:
            change.add_partitions_to = s.partitions
        elif s.partitions is not None and s.partitions < count:
            change.warnings.append(f"has {count} partitions, the settings say {s.partitions}: "
                                   "partitions are never removed (Kafka cannot)")
        if s.replication_factor is not None and t.partitions:
            rf = min(len(p.replicas) for p in t.partitions.values())
            if rf != s.replication_factor:
                change.warnings.append(
                    f"replication factor is {rf}, the settings say {s.replication_factor}: "
                    "not changed (that needs a partition reassignment)")
        current = described.get(s.name, {})
        for k, v in s.config.items():
            if current.get(k) != v:
                change.config_changes[k] = (current.get(k), v)
        if change.add_partitions_to is not None or change.config_changes:
            change.action = "update"
        elif change.warnings:
            change.action = "warn"
        changes.append(change)
    return changes


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    partitions_raised: list[str] = field(default_factory=list)
    configs_set: list[str] = field(default_factory=list)
    #: ``(topic, what failed and why)``
    errors: list[tuple[str, str]] = field(default_factory=list)


def apply(settings: Settings, changes: Iterable[TopicChange] | None = None, *,
          timeout: float = 30.0, cluster: str | None = None) -> ApplyResult:
    """Make the cluster match the plan, additively: create, raise partitions, set declared
    configs. Each topic's failure is collected (the others still go ahead)."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    admin = _admin(cluster_settings(settings, cluster, where="cluster"))
    changes = list(changes) if changes is not None else plan(settings, admin=admin,
                                                             timeout=timeout, cluster=cluster)
    result = ApplyResult()

    def wait(futures: dict[Any, Any], done: list[str], what: str) -> None:
        for key, future in futures.items():
            name = key if isinstance(key, str) else key.name
            try:
                future.result(timeout)
                done.append(name)
            except Exception as exc:
                err = exc.args[0] if exc.args else exc
                text = err.str() if hasattr(err, "str") else str(err)
                result.errors.append((name, f"{what}: {text}"))

    new = [NewTopic(c.name, c.spec.partitions or -1, c.spec.replication_factor or -1,
                    config=dict(c.spec.config)) for c in changes if c.action == "create"]
    if new:
        wait(admin.create_topics(new, request_timeout=timeout), result.created, "create")
    raise_ = [NewPartitions(c.name, c.add_partitions_to) for c in changes
              if c.add_partitions_to is not None]
    if raise_:
        wait(admin.create_partitions(raise_, request_timeout=timeout),
             result.partitions_raised, "raise partitions")
    alter = [ConfigResource("topic", c.name, incremental_configs=[
        ConfigEntry(k, new_value, incremental_operation=AlterConfigOpType.SET)
        for k, (_, new_value) in sorted(c.config_changes.items())])
        for c in changes if c.config_changes]
    if alter:
        wait(admin.incremental_alter_configs(alter, request_timeout=timeout),
             result.configs_set, "set configs")
    for name, error in result.errors:
        log.error("topics apply: %s: %s", name, error)
    return result
