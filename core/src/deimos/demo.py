"""``deimos demo``: produce and consume a workload end to end through deimos's classes.

Uses the configured cluster, or starts the embedded broker when ``kafka.bootstrap_servers``
is unset. The workload is keyed JSON widgets; the consumer checks that every widget arrived
and that per-key order held, and the command exits non-zero when either check fails.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import deimos
from deimos import config as _config
from deimos.consumer import BatchConsumer, BatchMetadata, ConsumerLoop, resolve_settings
from deimos.producer import Producer


class WidgetProducer(Producer):
    topic = "demo.widgets"
    key_config = "plain"


class WidgetConsumer(BatchConsumer):
    """Counts widgets and checks per-key order (each key's versions must arrive ascending)."""

    topic = "demo.widgets"
    group_id = "deimos-demo"
    seen: set[int]
    last_version: dict[str, int]
    out_of_order = 0
    latencies: list[float]
    done = threading.Event()
    target = 0
    progress: Any = None

    def consume_batch(self, payloads: list[Any], metadata: BatchMetadata) -> None:
        cls = type(self)
        now = time.time()
        for payload, key in zip(payloads, metadata.keys):
            w = json.loads(payload)
            cls.seen.add(w["id"])
            if w["version"] < cls.last_version.get(key, -1):
                cls.out_of_order += 1
            cls.last_version[key] = w["version"]
            cls.latencies.append(now - w["sent_at"])
        if cls.progress is not None:
            cls.progress(len(cls.seen))
        if len(cls.seen) >= cls.target:
            cls.done.set()


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def run_demo(messages: int = 10_000, file: str | None = None) -> int:
    console = Console()
    with ExitStack() as stack:
        base = _config.build_settings(file=file).settings
        bootstrap = base.kafka.bootstrap_servers
        if not bootstrap:
            from deimos.testing.broker import EmbeddedBroker

            console.print("No kafka.bootstrap_servers configured: starting the embedded "
                          "Kafka-compatible broker (Tansu, memory storage).")
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        from deimos.testing.broker import create_topic

        run_id = uuid.uuid4().hex[:8]
        topic = f"demo.widgets.{run_id}"
        create_topic(bootstrap, topic, partitions=3)
        deimos.configure(
            base,
            kafka={"bootstrap_servers": bootstrap},
        )
        WidgetProducer.topic = topic
        WidgetConsumer.topic = topic
        WidgetConsumer.seen, WidgetConsumer.last_version = set(), {}
        WidgetConsumer.latencies, WidgetConsumer.out_of_order = [], 0
        WidgetConsumer.done = threading.Event()
        WidgetConsumer.target = messages
        cs = resolve_settings(
            WidgetConsumer, group_id=f"deimos-demo-{run_id}",
            config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
        loop = ConsumerLoop(WidgetConsumer, cs)
        thread = threading.Thread(target=loop.run, name="demo-consumer", daemon=True)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            produce_task = progress.add_task("produce", total=messages)
            consume_task = progress.add_task("consume", total=messages)
            WidgetConsumer.progress = lambda n: progress.update(consume_task, completed=n)
            thread.start()
            loop.assigned.wait(60)  # measure the pipeline, not the group join
            t0 = time.perf_counter()
            chunk = 1000
            for start in range(0, messages, chunk):
                batch = []
                for i in range(start, min(messages, start + chunk)):
                    batch.append(json.dumps({"id": i, "version": i, "name": f"widget-{i}",
                                             "sent_at": time.time()}))
                keys = [f"w{i % 100}" for i in range(start, start + len(batch))]
                WidgetProducer.publish_list(batch, keys=keys)
                progress.update(produce_task, completed=start + len(batch))
            deimos.flush()
            produce_s = time.perf_counter() - t0
            finished = WidgetConsumer.done.wait(max(60.0, messages / 1000))
            consume_s = time.perf_counter() - t0
            loop.stop()
            thread.join(30)

        ok = finished and len(WidgetConsumer.seen) == messages
        ordered = WidgetConsumer.out_of_order == 0
        table = Table(title="deimos demo")
        table.add_column("stage")
        table.add_column("messages", justify="right")
        table.add_column("msgs/s", justify="right")
        table.add_row("produce", str(messages), f"{messages / produce_s:,.0f}")
        table.add_row("consume", str(len(WidgetConsumer.seen)),
                      f"{len(WidgetConsumer.seen) / consume_s:,.0f}")
        console.print(table)
        lat = WidgetConsumer.latencies
        console.print(f"end-to-end latency p50 {_percentile(lat, 50) * 1000:.1f} ms, "
                      f"p99 {_percentile(lat, 99) * 1000:.1f} ms")
        console.print(f"every message consumed: {'yes' if ok else 'NO'}")
        console.print(f"per-key order preserved: {'yes' if ordered else 'NO'}")
        _config.reset()
        return 0 if ok and ordered else 1
