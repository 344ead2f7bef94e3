"""``deimos demo``: run the demo service end to end and print what happened.

Embedded defaults: the embedded broker when ``kafka.bootstrap_servers`` is unset, SQLite in
a temporary directory unless ``db.url`` is set (``DEIMOS_DB__URL=postgresql+psycopg://...``
runs the same service on PostgreSQL), and the development schema registry (a file every local
process shares, so ``deimos tail`` decodes what the demo wrote) unless ``schema.registry_url``
is set. Exits non-zero when the read model does not match the source.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.orm import Session

import deimos
import deimos_db
from deimos import config as _config
from deimos.consumer import ConsumerLoop, resolve_settings
from deimos.lag import consumer_lag
from deimos.plugins import get_registry
from deimos.runner import Executor, Runnable
from deimos.schema import devregistry
from deimos.testing.broker import GROUP_TIMEOUTS, EmbeddedBroker, create_topic
from deimos_db import DbPoller, DbPollerSettings
from deimos_db.producer import factories as db_producer_factories
from deimos_demo import service
from deimos_demo.service import (
    Base,
    Gadget,
    GadgetConsumer,
    Widget,
    WidgetProducer,
    WidgetReadModel,
    WidgetReadModelConsumer,
    stats,
    utcnow_ms,
)

COLORS = ("RED", "GREEN", "BLUE")
TRANSACTION_SIZE = 200
BAD_GADGETS = 5


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Plan:
    """The workload: inserts, then updates and deletes of existing widgets, deterministic.

    No widget changes twice within one transaction of ``TRANSACTION_SIZE``: the outbox would
    send the two changes as one message (the later state), and the summary counts messages.
    """

    def __init__(self, changes: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        inserts = max(1, int(changes * 0.7))
        updates = int(changes * 0.2)
        deletes = changes - inserts - updates
        self.ops: list[tuple[str, int]] = [("insert", i) for i in range(1, inserts + 1)]
        self.ops += [("update", rng.randint(1, inserts)) for _ in range(updates)]
        deleted = rng.sample(range(1, inserts + 1), min(deletes, inserts))
        self.ops += [("delete", i) for i in deleted]
        for chunk in range(0, len(self.ops), TRANSACTION_SIZE):
            ops = self.ops[chunk:chunk + TRANSACTION_SIZE]
            taken = {wid for op, wid in ops if op != "update"}
            if len(ops) >= inserts:
                continue  # a tiny workload: fewer widgets than changes per transaction
            for j, (op, wid) in enumerate(ops):
                if op == "update":
                    while wid in taken:  # another change of it in this transaction
                        wid = rng.randint(1, inserts)
                    taken.add(wid)
                    self.ops[chunk + j] = (op, wid)
        self.changes = len(self.ops)
        self.gadgets = max(2 * BAD_GADGETS, changes // 100)


def apply_changes(engine: sa.Engine, plan: Plan, progress: Callable[[int], None]) -> None:
    """Write the workload through the ORM, in transactions of ``TRANSACTION_SIZE`` changes:
    each commit's flush publishes the changed widgets through the outbox, in the same
    transaction (several changes of one widget in a transaction make one message)."""
    rng = random.Random(11)
    deleted: set[int] = set()
    with deimos_db.track_changes(WidgetProducer):
        for start in range(0, plan.changes, TRANSACTION_SIZE):
            with Session(engine) as session, session.begin():
                for op, wid in plan.ops[start:start + TRANSACTION_SIZE]:
                    if op == "insert":
                        session.add(Widget(id=wid, name=f"widget-{wid}",
                                           color=rng.choice(COLORS),
                                           price=round(rng.uniform(1, 500), 2),
                                           quantity=rng.randint(0, 1000),
                                           updated_at=utcnow_ms()))
                    elif wid in deleted:
                        continue
                    elif op == "update":
                        w = session.get(Widget, wid)
                        assert w is not None
                        w.price = round(w.price + 1.0, 2)
                        w.quantity += 1
                        w.updated_at = utcnow_ms()
                    else:
                        w = session.get(Widget, wid)
                        assert w is not None
                        session.delete(w)
                        deleted.add(wid)
            progress(min(plan.changes, start + TRANSACTION_SIZE))


def write_gadgets(engine: sa.Engine, count: int) -> None:
    """Rows the DB poller picks up; a few carry a negative weight the consumer rejects."""
    rng = random.Random(13)
    bad = set(rng.sample(range(1, count + 1), BAD_GADGETS))
    with engine.begin() as conn:
        conn.execute(sa.insert(Gadget), [
            {"id": i, "name": f"gadget-{i}", "weight": -1.0 if i in bad else rng.uniform(1, 9),
             "updated_at": utcnow_ms()} for i in range(1, count + 1)])


def read_model_matches(engine: sa.Engine) -> tuple[bool, int, int]:
    cols = ("id", "name", "color", "price", "quantity", "updated_at")
    with engine.connect() as conn:
        src = conn.execute(sa.select(*(getattr(Widget, c) for c in cols))
                           .order_by(Widget.id)).all()
        dst = conn.execute(sa.select(*(getattr(WidgetReadModel, c) for c in cols))
                           .order_by(WidgetReadModel.id)).all()
    return [tuple(r) for r in src] == [tuple(r) for r in dst], len(src), len(dst)


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


@contextlib.contextmanager
def _kafka(bootstrap: str | None, console: Console) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    console.print("No [bold]kafka.bootstrap_servers[/] configured: starting the embedded "
                  "Kafka-compatible broker (Tansu, memory storage).")
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@contextlib.contextmanager
def _database(url: str | None, console: Console) -> Iterator[str]:
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="deimos-demo-") as d:
        path = os.path.join(d, "demo.sqlite3")
        console.print(f"No [bold]db.url[/] configured: using SQLite at {path}.")
        yield f"sqlite:///{path}"


@contextlib.contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    """Log records (the gadget consumer's expected retries, say) printed by the console, so
    they go above the live progress bars instead of into them."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    replaced = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    if not replaced:
        yield
        return
    rich = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False,
                       level=replaced[0].level)
    for h in replaced:
        root.removeHandler(h)
    root.addHandler(rich)
    try:
        yield
    finally:
        root.removeHandler(rich)
        for h in replaced:
            root.addHandler(h)


def run_demo(messages: int = 100_000, file: str | None = None, keep_running: bool = False,
             console: Console | None = None) -> int:
    console = console or Console()
    loaded = _config.build_settings(file=file)
    base = loaded.settings
    db_url = base.section("db").url if "db.url" in loaded.sources else None
    registry = base.schema.registry_url if "schema.registry_url" in loaded.sources else None
    with _kafka(base.kafka.bootstrap_servers, console) as bootstrap, \
            _database(db_url, console) as url:
        return _run(console, base, bootstrap, url, registry, messages, keep_running)


def _run(console: Console, base: Any, bootstrap: str, url: str, registry: str | None,
         changes: int, keep_running: bool) -> int:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"demo-{run_id}."
    widgets_topic = create_topic(bootstrap, prefix + "demo.widgets", partitions=3)
    gadgets_topic = create_topic(bootstrap, prefix + "demo.gadgets")
    dlq_topic = create_topic(bootstrap, prefix + "demo.gadgets.dlq")
    # log: the demo's metrics and spans at INFO/DEBUG; mock: the counts the summary reads
    providers = ["log"] + (["otel"] if _has("deimos_otel") else [])
    metric_providers = [*providers, "mock"]
    deimos.configure(
        base,
        kafka={"bootstrap_servers": bootstrap},
        producers={"topic_prefix": prefix},
        schema={"backend": "avro_schema_registry", "path": service.SCHEMA_PATH,
                "registry_url": registry or devregistry.default_url()},
        db={"url": url, "producer": {"workers": 2, "poll_interval": 0.05}},
        metrics={"providers": metric_providers, "tags": {"service": "deimos-demo"}},
        tracing={"providers": providers},
    )
    settings = deimos.get_settings()
    engine = deimos_db.get_engine(url)
    Base.metadata.drop_all(engine)
    deimos_db.create_tables(engine)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:  # an interrupted earlier demo's rows must not leak in
        conn.execute(sa.delete(deimos_db.kafka_messages)
                     .where(deimos_db.kafka_messages.c.topic.like("demo-%.demo.%")))
    stats.reset()
    counts = get_registry().get("metrics", "mock").obj
    counts.clear()
    plan = Plan(changes)
    console.print(f"Topics {widgets_topic}, {gadgets_topic}, {dlq_topic}; database "
                  f"{engine.url.render_as_string(hide_password=True)}; metrics and tracing: "
                  f"{', '.join(providers)}.")

    group = f"deimos-demo-{run_id}"
    consumer_conf: dict[str, Any] = {"config": {**GROUP_TIMEOUTS, "fetch.queue.backoff.ms": 50},
                     "max_wait_time": 0.2}
    read_cs = resolve_settings(WidgetReadModelConsumer, group_id=f"{group}-read-model",
                               **consumer_conf)
    gadget_cs = resolve_settings(GadgetConsumer, group_id=f"{group}-gadgets",
                                 dead_letter_topic=dlq_topic, **consumer_conf)
    loops = [ConsumerLoop(WidgetReadModelConsumer, read_cs),
             ConsumerLoop(GadgetConsumer, gadget_cs)]
    poller = DbPoller(DbPollerSettings(name=f"gadgets-{run_id}",
                                       producer_class="deimos_demo.service:GadgetProducer",
                                       run_every=0.5, delay_time=0))
    runnables: list[Callable[[], Runnable]] = [*db_producer_factories(settings)]
    runnables += [lambda lp=lp: lp for lp in loops]  # type: ignore[misc]
    runnables.append(lambda: poller)
    executor = Executor(runnables, restart_delay=1.0, name="deimos-demo")
    executor.start()
    for lp in loops:
        lp.assigned.wait(60)

    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    with _logs_through(console), Progress(
            TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, TaskID] = {
            "write": progress.add_task("write widgets (outbox)", total=plan.changes),
            "relay": progress.add_task("DB producer → Kafka", total=plan.changes),
            "read": progress.add_task("read model (upserts)", total=plan.changes),
            "poll": progress.add_task("DB poller → gadgets", total=plan.gadgets),
        }
        write_gadgets(engine, plan.gadgets)
        apply_changes(engine, plan, lambda n: progress.update(tasks["write"], completed=n))
        marks["write"] = time.perf_counter()
        produced = int(counts.total("db_producer.insert", topic=widgets_topic))
        progress.update(tasks["write"], total=produced, completed=produced)
        for name in ("relay", "read"):
            progress.update(tasks[name], total=produced)
        deadline = time.monotonic() + max(120.0, produced / 500)
        while time.monotonic() < deadline:
            pending = sum(p.count for p in deimos_db.producer.pending_messages(engine).values())
            progress.update(tasks["relay"], completed=produced - pending)
            if not pending and "relay" not in marks:
                marks["relay"] = time.perf_counter()
            with stats.lock:
                read = stats.read_model_messages
                gadgets_done = stats.gadgets_ok
            progress.update(tasks["read"], completed=min(read, produced))
            progress.update(tasks["poll"], completed=min(gadgets_done + _dead(loops),
                                                        plan.gadgets))
            if read >= produced and "read" not in marks:
                marks["read"] = stats.read_model_done_at or time.perf_counter()
            if "read" in marks and gadgets_done + _dead(loops) >= plan.gadgets:
                marks.setdefault("poll", time.perf_counter())
                break
            time.sleep(0.1)

    if keep_running:
        console.print(f"\nThe demo keeps running. Kafka: [bold]{bootstrap}[/]; try\n"
                      f"  DEIMOS_KAFKA__BOOTSTRAP_SERVERS={bootstrap} deimos lag\n"
                      f"  DEIMOS_KAFKA__BOOTSTRAP_SERVERS={bootstrap} "
                      f"DEIMOS_SCHEMA__BACKEND=avro_schema_registry deimos tail "
                      f"{widgets_topic} --key-config field:id\n"
                      f"(the schemas are in the development registry "
                      f"{settings.schema.registry_url}, which every local process shares). "
                      "Ctrl-C stops it.")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)

    executor.stop()
    executor.join(30)
    matches, n_src, n_dst = read_model_matches(engine)
    lag_rows = []
    for g, topic in ((read_cs.group_id, widgets_topic), (gadget_cs.group_id, gadgets_topic)):
        lag_rows += consumer_lag(str(g), [topic], settings=settings)
    total_lag = sum(r.lag for r in lag_rows)
    dead = _dead(loops)

    table = Table(title=f"deimos demo: {plan.changes:,} widget changes, {plan.gadgets} gadgets")
    table.add_column("stage")
    table.add_column("messages", justify="right")
    table.add_column("msgs/s", justify="right")
    for label, key, count in (("write widgets → outbox", "write", produced),
                              ("DB producer → Kafka", "relay", produced),
                              ("Kafka → read model", "read", stats.read_model_messages),
                              ("DB poller → gadget consumer (with retries)", "poll",
                               stats.gadgets_ok + dead)):
        end = marks.get(key)
        rate = f"{count / (end - t0):,.0f}" if end else "did not finish"
        table.add_row(label, f"{count:,}", rate)
    console.print(table)
    lat = stats.latencies
    console.print(f"end-to-end latency, write → read model: p50 "
                  f"{_percentile(lat, 50) * 1000:.0f} ms, p95 {_percentile(lat, 95) * 1000:.0f} "
                  f"ms, p99 {_percentile(lat, 99) * 1000:.0f} ms (the workload writes as fast "
                  "as it can, so this includes the backlog it builds)")
    console.print(f"gadget retries then dead letters: {dead} dead-lettered "
                  f"(expected {BAD_GADGETS}), {stats.gadgets_ok} handled")
    console.print(f"final consumer lag (committed vs high watermark): {total_lag}")
    console.print(f"widgets in source {n_src:,}, in read model {n_dst:,}")
    console.print(f"read model matches source: {'yes' if matches else 'NO'}")
    ok = matches and dead == BAD_GADGETS
    _config.reset()
    return 0 if ok else 1


def _dead(loops: list[ConsumerLoop]) -> int:
    """Messages the gadget consumer dead-lettered so far (its ``dead_lettered`` counter)."""
    return loops[1].processor.dead_lettered
