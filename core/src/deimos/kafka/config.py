"""Every librdkafka configuration deimos builds, from the settings.

One bootstrap default (:data:`DEFAULT_BOOTSTRAP`), one logger for librdkafka's own logs, and
the consumer properties that depend on the group protocol: librdkafka refuses
``session.timeout.ms`` and ``heartbeat.interval.ms`` under the new consumer rebalance protocol
(KIP-848, ``group.protocol = consumer``), where the broker owns both.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from deimos.config import DEFAULT_CLUSTER
from deimos.errors import ConfigError
from deimos.kafka import connection as _connection

if TYPE_CHECKING:
    from deimos.config import ConsumerSettings, Settings

#: where clients connect when ``kafka.bootstrap_servers`` is not set
DEFAULT_BOOTSTRAP = "localhost:9092"

#: librdkafka logs go through Python logging under this logger (connect failures through
#: :mod:`deimos.kafka.connection`, which logs each condition once)
LIBRDKAFKA_LOGGER = _connection.LIBRDKAFKA_LOGGER

#: consumer properties the broker owns under the consumer group protocol (KIP-848)
CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")


# (settings object, cluster, producer properties) -> (settings, their view): views are
# immutable like the settings they derive from, made once; bounded because tests make many
_views: dict[tuple[int, str, str], tuple[Settings, Settings]] = {}


def cluster_settings(settings: Settings, cluster: str | None = None,
                     producer_config: Mapping[str, Any] | None = None, *,
                     where: str = "cluster") -> Settings:
    """``settings`` as the clients of one cluster see them: cluster ``cluster`` (a name under
    ``kafka.clusters``; None or ``"default"``: the ``kafka`` section) as the ``kafka``
    section, and a producer's own librdkafka properties (``producer_config``: a topic's
    ``config``, a producer class's ``kafka_config``) over ``producers.config``.

    Everything that builds a client from settings (the configs below, the shared producers,
    dead letters, ``deimos tail``/``lag``/``topics``) then works on that cluster unchanged, and
    the shared producers are pooled per resulting configuration. ``settings`` itself when
    nothing changes. An unknown name is a :class:`ConfigError` at ``where``."""
    name = cluster or DEFAULT_CLUSTER
    if name == DEFAULT_CLUSTER and not producer_config:
        return settings
    extra = repr(sorted((k, repr(v)) for k, v in (producer_config or {}).items()))
    key = (id(settings), name, extra)
    hit = _views.get(key)
    if hit is not None and hit[0] is settings:
        return hit[1]
    kafka = settings.kafka
    try:
        chosen = kafka.cluster(name)
    except KeyError:
        raise ConfigError([(where, (
            f"cluster {name!r} is not configured under kafka.clusters (configured: "
            f"{', '.join(kafka.cluster_names())})"))]) from None
    view = settings
    if chosen is not kafka:
        fields = {f: getattr(chosen, f) for f in type(chosen).model_fields}
        as_kafka = type(kafka).model_construct(**fields, clusters=kafka.clusters)
        as_kafka._where = chosen._where
        view = view.model_copy(update={"kafka": as_kafka})
    if producer_config:
        producers = view.producers.model_copy(
            update={"config": {**view.producers.config, **producer_config}})
        view = view.model_copy(update={"producers": producers})
    if len(_views) > 256:
        _views.clear()
    _views[key] = (settings, view)
    return view


def client_config(settings: Settings) -> dict[str, Any]:
    """The connection part every client shares: ``kafka.*`` settings, the bootstrap default,
    librdkafka's logs through Python logging and connection failures through
    :mod:`deimos.kafka.connection` (logged once per condition, with a periodic summary)."""
    conf = settings.kafka.client_config()
    conf.setdefault("bootstrap.servers", DEFAULT_BOOTSTRAP)
    return _connection.instrument(conf, summary_interval=settings.kafka.error_summary_interval)


# settings object -> (settings, producer config, pool key): settings are immutable once
# built, so everything derived from them is computed once; bounded because tests make many
_producer_configs: dict[int, tuple[Settings, dict[str, Any], str]] = {}


def producer_entry(settings: Settings) -> tuple[Settings, dict[str, Any], str]:
    """``(settings, producer config, pool key)``, computed once per settings object."""
    entry = _producer_configs.get(id(settings))
    if entry is None or entry[0] is not settings:
        conf = settings.kafka.client_config()
        conf.setdefault("bootstrap.servers", DEFAULT_BOOTSTRAP)
        conf.update({
            "enable.idempotence": settings.producers.idempotence,
            # Java clients' default partitioner: keyed messages land where other clients
            # put them
            "partitioner": "murmur2_random",
            "delivery.report.only.error": True,
            "linger.ms": 5,
        })
        conf.update(settings.producers.config)
        key = repr(sorted((k, repr(v)) for k, v in conf.items()))
        if len(_producer_configs) > 64:
            _producer_configs.clear()
        entry = _producer_configs[id(settings)] = (settings, conf, key)
    return entry


def producer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka producer configuration deimos uses for ``settings`` (a fresh dict,
    without the logger and callbacks the shared producers add)."""
    return dict(producer_entry(settings)[1])


def consumer_config(settings: Settings, cs: ConsumerSettings) -> dict[str, Any]:
    """A group consumer's configuration: at-least-once (offsets stored by deimos after the
    handler succeeded, committed by librdkafka), the group protocol's own properties."""
    conf = client_config(settings)
    conf.update({
        "group.id": cs.group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if cs.start_from_beginning else "latest",
        # librdkafka waits 1000 ms before fetching again once its prefetch queue was full; a
        # consumer that drains the queue faster than that would sit idle for the rest
        "fetch.queue.backoff.ms": 50,
        "isolation.level": cs.isolation_level,
    })
    if cs.transactional:
        # offsets go with the transaction (send_offsets_to_transaction), never on their own
        conf["enable.auto.commit"] = False
    if cs.group_protocol == "consumer":
        conf["group.protocol"] = "consumer"
        bad = [k for k in CLASSIC_ONLY if k in cs.config]
        if bad:
            raise ConfigError([(f"consumers.{cs.name}.config", (
                f"{', '.join(bad)} cannot be set with group_protocol = 'consumer': under the "
                "consumer rebalance protocol the broker decides them (set "
                "group.consumer.session.timeout.ms on the broker instead)"))])
    else:
        conf["session.timeout.ms"] = cs.session_timeout_ms
        conf["heartbeat.interval.ms"] = max(100, min(3000, cs.session_timeout_ms // 6))
    conf.update(cs.config)
    return conf


def reader_config(settings: Settings, purpose: str = "inline", group: str | None = None
                  ) -> dict[str, Any]:
    """A consumer that only reads and can never commit (``deimos tail``, lag queries): the
    ``group`` whose offsets it looks at, else a throwaway group id (librdkafka needs one even
    for ``assign()``); nothing stored, nothing committed."""
    conf = client_config(settings)
    conf.update({
        "group.id": group or f"deimos-{purpose}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
    })
    return conf


def admin_config(settings: Settings) -> dict[str, Any]:
    return client_config(settings)
