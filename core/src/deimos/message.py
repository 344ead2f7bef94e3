"""The message a producer builds and a backend delivers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.config import Settings
    from deimos.telemetry import Telemetry

Headers = list[tuple[str, bytes]]


class Message:
    """One message on its way out.

    ``key``/``payload`` are what the caller gave (after coercion); ``encoded_key``/
    ``encoded_payload`` are the bytes the backend sends. A ``None`` payload is a tombstone.
    Plain ``__slots__`` rather than a dataclass: producers make one per message on the hot path.
    """

    __slots__ = (
        "encoded_key",
        "encoded_payload",
        "headers",
        "key",
        "partition_key",
        "payload",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: Any,
        key: Any = None,
        headers: Headers | None = None,
        partition_key: bytes | None = None,
        encoded_key: bytes | None = None,
        encoded_payload: bytes | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.key = key
        self.headers = headers
        self.partition_key = partition_key
        self.encoded_key = encoded_key
        self.encoded_payload = encoded_payload

    @property
    def tombstone(self) -> bool:
        return self.payload is None

    def as_dict(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, key={self.key!r}, payload={self.payload!r}, "
            f"partition_key={self.partition_key!r}, headers={self.headers!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass
class ProduceContext:
    """Everything a producer backend may need about the call that produced a batch."""

    topic: str
    producer: str
    settings: Settings
    telemetry: Telemetry
    #: async backends call this for every message that failed after ``execute`` returned
    on_error: Callable[[Message, BaseException], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the producer's cluster (a name under ``kafka.clusters``), None for the default one:
    #: a backend that sends later (the outbox) must send to the cluster the producer chose
    cluster: str | None = None
