"""The consumer of the inbox fault tests (``deimos run`` in a subprocess).

For each message it inserts a row into ``inbox_fault_effects`` through ``deimos_db.session()``
and publishes the payload through the ``db`` backend to ``$INBOX_APP_OUT``: with ``inbox =
true`` both commit with the message's inbox row.

The kill is the test's own, never a production switch: with ``$INBOX_APP_KILL_AT`` set to
``partition:offset``, a subscriber of the ``deimos.inbox.committed`` event SIGKILLs this
process as soon as the database transaction holding that message has committed, i.e. before
the handler call returns and so before its offset can be stored or committed to Kafka.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

import deimos
import deimos_db
from deimos import events
from deimos.consumer import BatchConsumer, Consumer

effects = sa.Table("inbox_fault_effects", sa.MetaData(),
                   sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("value", sa.Integer, nullable=False))


class Relayed(deimos.Producer):
    topic = os.environ.get("INBOX_APP_OUT", "inbox-app-out")
    key_config = "plain"


def _effect(payload: str) -> None:
    deimos_db.session().execute(effects.insert().values(value=int(payload)))
    Relayed.publish(payload, key=payload)


class InboxEffects(Consumer):
    inbox = True

    def consume(self, payload: Any, metadata: Any) -> None:
        _effect(payload)


class InboxBatchEffects(BatchConsumer):
    inbox = True

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        for p in payloads:
            _effect(p)


def _kill_at(spec: str) -> None:
    partition, offset = (int(x) for x in spec.split(":"))

    def on_commit(name: str, payload: Mapping[str, Any]) -> None:
        if payload["partition"] == partition and offset in payload["offsets"]:
            os.kill(os.getpid(), signal.SIGKILL)

    events.subscribe(on_commit, events.INBOX_COMMITTED)


if os.environ.get("INBOX_APP_KILL_AT"):
    _kill_at(os.environ["INBOX_APP_KILL_AT"])
