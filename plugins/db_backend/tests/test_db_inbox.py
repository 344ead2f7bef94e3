"""``inbox = true`` on any consumer, on SQLite, PostgreSQL and MariaDB (no broker: the
consumer's processor is handed real confluent-kafka messages, as the broker loop does).

Each message's (each batch's) inbox row, the handler's own writes through
``deimos_db.session()`` and the outbox rows of its ``publish`` calls commit in one
transaction or not at all; a redelivered message repeats none of them; the error policy
(retries, dead letters) works as without an inbox.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Message as KafkaMessage

import deimos
import deimos_db
from deimos.consumer import BatchConsumer, BatchError, MessageProcessor, resolve_settings
from deimos.consumer.offline import drive
from deimos.errors import ConfigError, DeimosError
from deimos.runtime import get_runtime
from deimos_db import RecordConsumer, deimos_inbox, kafka_messages
from deimos_db_helpers import ALL_DATABASES, count_rows

pytestmark = [ALL_DATABASES]

TOPIC = "inbox.in"
effects = sa.Table("inbox_effects", sa.MetaData(),
                   sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("value", sa.String(50), nullable=False))
records = sa.Table("inbox_records", sa.MetaData(),
                   sa.Column("id", sa.String(20), primary_key=True),
                   sa.Column("value", sa.String(50)))


class Relayed(deimos.Producer):
    topic = "inbox.out"
    key_config = "plain"


class Effects(deimos.Consumer):
    """Writes a row and publishes a message per input; fails on the values in ``failing``
    (each value fails ``fails_left[value]`` times, after its writes and its publish)."""

    topic = TOPIC
    group_id = "effects"
    inbox = True
    fails_left: dict[str, int] = {}
    calls: list[str] = []

    def consume(self, payload: Any, metadata: Any) -> None:
        type(self).calls.append(payload)
        deimos_db.session().execute(effects.insert().values(value=payload))
        Relayed.publish(payload, key=payload)
        if self.fails_left.get(payload, 0) > 0:
            self.fails_left[payload] -= 1
            raise RuntimeError(f"failing on {payload}")


class BatchEffects(BatchConsumer):
    topic = TOPIC
    group_id = "batch-effects"
    inbox = True
    seen: list[list[str]] = []
    fail_at: int | None = None

    def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
        type(self).seen.append(list(payloads))
        session = deimos_db.session()
        for i, p in enumerate(payloads):
            if i == self.fail_at:
                type(self).fail_at = None
                raise BatchError(i, RuntimeError(f"failing on {p}"))
            session.execute(effects.insert().values(value=p))
            Relayed.publish(p, key=p)


class Records(RecordConsumer):
    """A record consumer whose batch hook publishes through the db backend."""

    model = records
    topic = TOPIC
    group_id = "records"
    inbox = True
    fail_after_publish = False

    def post_process_batch(self, conn: sa.Connection, upserted: list[Any],
                           deleted: list[Any]) -> None:
        Relayed.publish_list([m.payload["value"] for m in upserted],
                             keys=[m.payload["id"] for m in upserted])
        if self.fail_after_publish:
            raise RuntimeError("post_process_batch failed after publishing")


@pytest.fixture
def setup(db: sa.Engine) -> sa.Engine:
    effects.create(db)
    records.create(db)
    deimos.configure(producers={"backend": "db"},
                     db={"url": db.url.render_as_string(hide_password=False)})
    Effects.fails_left = {}
    Effects.calls = []
    BatchEffects.seen = []
    BatchEffects.fail_at = None
    return db


def _messages(values: list[str], start: int = 0) -> list[Any]:
    return [KafkaMessage(topic=TOPIC, partition=0, offset=start + i, key=v.encode(),
                         value=v.encode()) for i, v in enumerate(values)]


def _processor(cls: type, **settings: Any) -> MessageProcessor:
    processor = MessageProcessor(cls(), resolve_settings(cls, **settings), get_runtime())
    processor.dead_letters.sender = dead.extend  # dead letters kept here, not sent
    return processor


dead: list[Any] = []


def _column(engine: sa.Engine, column: Any) -> list[Any]:
    with engine.connect() as conn:
        return sorted(r[0] for r in conn.execute(sa.select(column)))


def _outbox(engine: sa.Engine) -> list[str]:
    return sorted(bytes(v).decode() for v in _column(engine, kafka_messages.c.message))


def test_effects_inbox_and_outbox_commit_together_and_a_redelivery_repeats_none(setup):
    db = setup
    values = [f"v{i}" for i in range(8)]
    drive(_processor(Effects), _messages(values[:5]), wait=False)
    # redelivered: the first five again (a crash before the Kafka commit), then three new
    drive(_processor(Effects), _messages(values), wait=False)
    assert _column(db, effects.c.value) == values
    assert _outbox(db) == values
    assert _column(db, deimos_inbox.c.offset) == list(range(8))
    assert Effects.calls == values  # the redelivered ones never reached the handler


def test_a_failing_handler_rolls_back_its_writes_publishes_and_inbox_row_then_retries(setup):
    db = setup
    Effects.fails_left = {"v1": 2}
    drive(_processor(Effects, on_error="retry", retry={"attempts": 5, "backoff": 0.0}),
         _messages(["v0", "v1", "v2"]), wait=False)
    assert Effects.calls == ["v0", "v1", "v1", "v1", "v2"]  # two failures, then it held
    assert _column(db, effects.c.value) == ["v0", "v1", "v2"]
    assert _outbox(db) == ["v0", "v1", "v2"]
    assert _column(db, deimos_inbox.c.offset) == [0, 1, 2]


def test_a_dead_lettered_message_leaves_no_effect_and_no_inbox_row(setup):
    db = setup
    dead.clear()
    Effects.fails_left = {"v1": 99}
    drive(_processor(Effects, on_error="dead_letter", dead_letter_topic="inbox.dlq",
                     retry={"attempts": 2, "backoff": 0.0}),
          _messages(["v0", "v1", "v2"]), wait=False)
    assert [m.topic for m in dead] == ["inbox.dlq"]
    assert dead[0].payload == b"v1"
    assert _column(db, effects.c.value) == ["v0", "v2"]
    assert _outbox(db) == ["v0", "v2"]
    assert _column(db, deimos_inbox.c.offset) == [0, 2]


def test_batch_consumer_one_transaction_per_batch_only_new_messages_on_redelivery(setup):
    db = setup
    values = [f"b{i}" for i in range(10)]
    drive(_processor(BatchEffects), _messages(values[:6]), wait=False)
    drive(_processor(BatchEffects), _messages(values), wait=False)
    assert BatchEffects.seen == [values[:6], values[6:]]
    assert _column(db, effects.c.value) == values
    assert _outbox(db) == values
    assert _column(db, deimos_inbox.c.offset) == list(range(10))


def test_batch_error_rolls_back_the_whole_batch_and_it_is_retried_from_its_first_message(
        setup):
    db = setup
    values = [f"b{i}" for i in range(5)]
    BatchEffects.fail_at = 3  # after b0..b2 were written and published
    drive(_processor(BatchEffects, on_error="retry", retry={"attempts": 3, "backoff": 0.0}),
         _messages(values), wait=False)
    # nothing of the failed call committed, so the retry starts at b0, not at b3
    assert BatchEffects.seen == [values, values]
    assert _column(db, effects.c.value) == values
    assert _outbox(db) == values
    assert _column(db, deimos_inbox.c.offset) == list(range(5))


def _record_messages(ids: list[str]) -> list[Any]:
    return [KafkaMessage(topic=TOPIC, partition=0, offset=i, key=k.encode(),
                         value=f'{{"id": "{k}", "value": "x{k}"}}'.encode())
            for i, k in enumerate(ids)]


def test_record_consumer_rows_inbox_and_outbox_rows_share_its_transaction(setup):
    db = setup
    deimos.configure(producers={"backend": "db"}, schema={"backend": "mock"},
                     db={"url": db.url.render_as_string(hide_password=False)})
    failing = _processor(Records, on_error="raise")
    failing.handler.fail_after_publish = True
    with pytest.raises(RuntimeError, match="after publishing"):
        drive(failing, _record_messages(["a", "b"]), wait=False)
    # the failure after the publish took the rows, the inbox rows and the outbox rows back
    assert count_rows(db, "inbox_records") == 0
    assert count_rows(db) == 0
    assert count_rows(db, "deimos_inbox") == 0
    drive(_processor(Records), _record_messages(["a", "b"]), wait=False)
    # a redelivery, and one more
    drive(_processor(Records), _record_messages(["a", "b", "c"]), wait=False)
    assert _column(db, records.c.id) == ["a", "b", "c"]
    assert _outbox(db) == ['"xa"', '"xb"', '"xc"']  # JSON: the mock schema
    assert _column(db, deimos_inbox.c.offset) == [0, 1, 2]


def test_inbox_from_consumer_settings_and_the_errors_that_name_the_fix(setup):
    class Plain(deimos.Consumer):
        topic = TOPIC
        group_id = "plain"

        def consume(self, payload: Any, metadata: Any) -> None:
            deimos_db.session().execute(effects.insert().values(value=payload))

    drive(_processor(Plain, inbox=True), _messages(["s0"]), wait=False)
    assert _column(setup, deimos_inbox.c.consumer) == ["plain"]

    class Async(deimos.AsyncConsumer):
        topic = TOPIC
        group_id = "async"
        inbox = True

        async def consume(self, payload: Any, metadata: Any) -> None:
            pass

    with pytest.raises(ConfigError, match="asyncio consumer cannot have an inbox"):
        _processor(Async)
    with pytest.raises(DeimosError, match="outside a transaction"):
        deimos_db.session()


def test_an_inbox_consumer_warns_when_publishes_would_bypass_the_transaction(setup, caplog):
    deimos.configure(producers={"backend": "test"},
                     db={"url": setup.url.render_as_string(hide_password=False)})
    _processor(Effects)
    assert "producers.backend is 'test'" in caplog.text


def test_test_mode_runs_the_inbox_transaction_and_sends_publishes_to_the_test_backend(setup):
    from deimos.testing import consume_message, sent_messages, test_mode

    with test_mode():
        consume_message(Effects, "t0")
        assert [m.payload for m in sent_messages("inbox.out")] == ["t0"]
    assert _column(setup, effects.c.value) == ["t0"]
    assert count_rows(setup) == 0  # the test backend, not the outbox
    assert count_rows(setup, "deimos_inbox") == 1
