"""The ``db`` settings section (``[db]`` in deimos.toml, ``DEIMOS_DB__*`` in the environment).

``db.url`` is shared by everything in deimos-db (the outbox backend, the DB producer, and
later the poller); the DB producer's own options live in ``[db.producer]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from deimos.config import PassThrough, Section, _split_commas


class DbProducerSettings(Section):
    """Options of the DB producer (``deimos db-producer``)."""

    workers: int = Field(1, ge=1, description="worker threads per process")
    batch_size: int = Field(1000, gt=0, description="rows read, sent and deleted per batch")
    poll_interval: float = Field(
        0.5, gt=0, description="seconds an idle worker waits before looking again "
        "(PostgreSQL wakes it at once through LISTEN/NOTIFY)")
    lock_timeout: float = Field(
        60.0, gt=0, description="seconds after which a topic lock nobody renewed is taken over")
    heartbeat_interval: float = Field(
        10.0, gt=0, description="seconds between renewals of a held topic lock")
    compact_topics: list[str] | Literal["all"] = Field(
        default_factory=list,
        description="topics where only the last message per key of a batch is sent; 'all'")
    split_topics: dict[str, int] = Field(
        default_factory=dict,
        description="topic -> shards: a hot topic drained by several workers at once, "
        "every key always in the same shard (per-key order kept)")
    retry_backoff: float = Field(1.0, ge=0, description="seconds before a failed topic retries")
    max_retry_backoff: float = Field(60.0, ge=0, description="longest wait between retries")
    delivery_timeout: float = Field(
        30.0, gt=0, description="seconds a batch may wait for the broker's acknowledgement")
    dead_letter: bool = Field(
        True, description="move messages the broker can never take (too large) to "
        "kafka_dead_letters; false keeps them, with the topic's error recorded")
    listen: bool = Field(True, description="PostgreSQL: wake idle workers with LISTEN/NOTIFY")
    metrics_interval: float = Field(
        10.0, gt=0, description="seconds between pending_db_messages_* gauges")

    _split = field_validator("compact_topics", mode="before")(
        lambda v: v if v == "all" else _split_commas(v))

    @model_validator(mode="after")
    def _check(self) -> DbProducerSettings:
        if self.heartbeat_interval >= self.lock_timeout:
            raise ValueError("heartbeat_interval must be shorter than lock_timeout")
        if any(n < 1 for n in self.split_topics.values()):
            raise ValueError("split_topics: every topic needs at least 1 shard")
        return self

    def compacts(self, topic: str) -> bool:
        return self.compact_topics == "all" or topic in self.compact_topics


class DbSettings(Section):
    """Where the outbox tables live."""

    url: str = Field("sqlite:///deimos.sqlite3",
                     description="SQLAlchemy URL of the database holding kafka_messages")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for sqlalchemy.create_engine")
    producer: DbProducerSettings = Field(default_factory=DbProducerSettings)


__all__ = ["DbProducerSettings", "DbSettings", "PassThrough"]
