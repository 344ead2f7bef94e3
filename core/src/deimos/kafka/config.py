"""Every librdkafka configuration deimos builds, from the settings.

One bootstrap default (:data:`DEFAULT_BOOTSTRAP`), one logger for librdkafka's own logs, and
the consumer properties that depend on the group protocol: librdkafka refuses
``session.timeout.ms`` and ``heartbeat.interval.ms`` under the new consumer rebalance protocol
(KIP-848, ``group.protocol = consumer``), where the broker owns both.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

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
    })
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
