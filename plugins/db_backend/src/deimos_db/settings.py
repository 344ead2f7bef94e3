"""The ``db`` settings section (``[db]`` in deimos.toml, ``DEIMOS_DB__*`` in the environment).

``db.url`` is shared by everything in deimos-db (the outbox backend, the DB producer, and
the DB pollers); the DB producer's options live in ``[db.producer]``, the pollers' in
``[[db.pollers]]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from deimos.config import (
    BackoffSettings,
    PassThrough,
    RetrySettings,
    Section,
    _split_commas,
    rename_deprecated,
)


class DbProducerRetrySettings(BackoffSettings):
    """How long a topic whose batch failed waits before it is tried again (it is never given
    up on: the rows stay in the table)."""

    backoff: float = Field(1.0, ge=0, description="seconds before a failed topic retries")
    max_backoff: float = Field(60.0, ge=0, description="longest wait between retries")
    jitter: float = Field(0.2, ge=0, lt=1, description="waits spread by this fraction either "
                          "way, so workers do not retry in step; capped at max_backoff")


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
    log_topics: list[str] | Literal["all"] = Field(
        default_factory=list,
        description="topics whose messages are logged (keys and encoded values) at INFO on "
        "deimos_db.producer as each batch is sent; 'all'")
    split_topics: dict[str, int] = Field(
        default_factory=dict,
        description="topic -> shards: a hot topic drained by several workers at once, "
        "every key always in the same shard (per-key order kept)")
    retry: DbProducerRetrySettings = Field(
        default_factory=DbProducerRetrySettings,
        description="the waits of a failed topic (formerly retry_backoff, max_retry_backoff)")
    delivery_timeout: float = Field(
        30.0, gt=0, description="seconds a batch may wait for the broker's acknowledgement")
    dead_letter: bool = Field(
        True, description="move messages the broker can never take (too large) to "
        "kafka_dead_letters; false keeps them, with the topic's error recorded")
    listen: bool = Field(True, description="PostgreSQL: wake idle workers with LISTEN/NOTIFY")
    metrics_interval: float = Field(
        10.0, gt=0, description="seconds between pending_db_messages_* gauges")

    _split = field_validator("compact_topics", "log_topics", mode="before")(
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

    def logs(self, topic: str) -> bool:
        return self.log_topics == "all" or topic in self.log_topics

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return rename_deprecated(data, {"retry_backoff": ("retry.backoff", None),
                                        "max_retry_backoff": ("retry.max_backoff", None)},
                                 "db.producer")


class DbPollerSettings(Section):
    """One DB poller (``[[db.pollers]]``): which record producers it feeds and how it reads.

    Option names follow Ruby Deimos's ``db_poller`` block.
    """

    name: str | None = Field(
        None, description="key of the poller's row in deimos_poll_info (default: the first "
        "producer class path); keep it stable, or the poller starts over")
    producer_class: str | None = Field(
        None, description="'module:Class' of a RecordProducer whose model is polled")
    producer_classes: list[str] = Field(
        default_factory=list, description="several RecordProducers fed the same rows (the "
        "first one's model and poll_query are used)")
    poller_class: str | None = Field(
        None, description="'module:Class' of a DbPoller subclass to run instead of DbPoller "
        "(its producer_classes attribute may name the producers)")
    mode: Literal["time_based", "state_based"] = Field(
        "time_based", description="time_based: rows changed since the last (timestamp, id) "
        "sent; state_based: rows the producer's poll_query says are unpublished, marked "
        "afterwards")
    run_every: float = Field(60.0, gt=0, description="seconds between polls")
    delay_time: float = Field(
        2.0, ge=0, description="seconds behind now a time-based poll stops, so rows of "
        "transactions still open when it ran are not skipped")
    timestamp_column: str = Field("updated_at", description="the row's last-change time "
                                  "(naive UTC, or timezone-aware)")
    id_column: str | None = Field(
        None, description="tie-breaker for rows sharing a timestamp (default: the primary key)")
    full_table: bool = Field(False, description="publish every row on every run")
    start_from_beginning: bool = Field(
        True, description="a new poller publishes existing rows; false starts from now")
    batch_size: int = Field(1000, gt=0, description="rows per published batch")
    retry: RetrySettings = Field(
        default_factory=RetrySettings,
        description="a failed batch: attempts before its rows are tried one by one and the "
        "failing ones skipped and recorded, and the waits between them (formerly retries, "
        "retry_backoff)")
    skip_too_large_messages: bool = Field(
        True, description="a row whose message the broker refuses as too large is skipped "
        "and recorded at once (no retries); false stops the poller at that row")
    state_column: str | None = Field(None, description="state_based: column set after "
                                     "publishing")
    published_state: str | None = Field(None, description="state_based: value for rows "
                                        "published")
    failed_state: str | None = Field(None, description="state_based: value for rows that "
                                     "could not be published")
    publish_timestamp_column: str | None = Field(
        None, description="state_based: column set to the publish time")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return rename_deprecated(data, {"retries": ("retry.attempts", lambda n: int(n) + 1),
                                        "retry_backoff": ("retry.backoff", None)},
                                 "db.pollers[]")

    @model_validator(mode="after")
    def _check(self) -> DbPollerSettings:
        if not (self.producer_class or self.producer_classes or self.poller_class):
            raise ValueError("a DB poller needs producer_class, producer_classes or a "
                             "poller_class with producer_classes")
        if self.mode == "state_based" and not (self.state_column or
                                               self.publish_timestamp_column):
            raise ValueError("a state_based poller needs state_column or "
                             "publish_timestamp_column to mark published rows")
        return self

    @property
    def classes(self) -> list[str]:
        return ([self.producer_class] if self.producer_class else []) + [
            c for c in self.producer_classes if c != self.producer_class]

    @property
    def poller_name(self) -> str:
        return self.name or (self.classes[0] if self.classes else str(self.poller_class))


class DbSettings(Section):
    """Where the outbox tables live."""

    url: str = Field("sqlite:///deimos.sqlite3",
                     description="SQLAlchemy URL of the database holding kafka_messages")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for sqlalchemy.create_engine")
    producer: DbProducerSettings = Field(default_factory=DbProducerSettings)
    pollers: list[DbPollerSettings] = Field(
        default_factory=list, description="DB pollers ``deimos db-poller`` runs")


__all__ = ["DbPollerSettings", "DbProducerSettings", "DbSettings", "PassThrough"]
