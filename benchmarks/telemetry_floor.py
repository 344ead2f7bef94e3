"""What one producer span costs, in the SDKs themselves and through deimos.

The per-message telemetry benchmark (``produce_avro_message_telemetry``) makes a span and a
propagation per ``publish()``; this times exactly that work with no broker and no Kafka
client, so the floor the SDKs set is visible beside deimos's share: ddtrace alone (a span,
its tags, ``HTTPPropagator.inject``), the OpenTelemetry SDK alone (a current span,
``propagate.inject``), both nested as an application using both would, and deimos's
``Telemetry.span`` + ``inject`` + the ``publish`` counter with both providers on (the
providers set up as in ``bench_telemetry``). The publishing thread's CPU per span; rounds
alternate; medians with min and max.

    python -m uv run python benchmarks/telemetry_floor.py [--spans N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable

import bench_telemetry  # registers its benchmarks on run.py's table, harmless here

import deimos
from deimos.runtime import get_runtime

ATTRS = {"messaging.system": "kafka", "messaging.operation.type": "send",
         "messaging.destination.name": "floor", "messaging.batch.message_count": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.spans
    deimos.configure(**bench_telemetry._sections(True))
    bench_telemetry._warm()
    tel = get_runtime().telemetry

    from ddtrace.propagation.http import HTTPPropagator
    from ddtrace.trace import tracer as ddtracer
    from opentelemetry import propagate, trace

    otracer = trace.get_tracer("telemetry_floor")
    producer = trace.SpanKind.PRODUCER
    tags = {"topic": "floor"}

    def dd_span(then: Callable[[dict[str, str]], None] | None = None) -> None:
        carrier: dict[str, str] = {}
        with ddtracer.trace("kafka.produce", resource="floor") as sp:
            for k, v in ATTRS.items():
                sp.set_tag(k, v)
            HTTPPropagator.inject(sp.context, carrier)
            if then is not None:
                then(carrier)  # nested, as deimos's two providers' spans are

    def otel_span(carrier: dict[str, str] | None = None) -> None:
        with otracer.start_as_current_span("send floor", kind=producer, attributes=ATTRS):
            propagate.inject({} if carrier is None else carrier)

    def ddtrace_only() -> None:
        for _ in range(n):
            dd_span()

    def otel_only() -> None:
        for _ in range(n):
            otel_span()

    def both_sdks() -> None:
        for _ in range(n):
            dd_span(otel_span)
            tel.increment("publish", 1, tags)

    def via_deimos() -> None:
        for _ in range(n):
            headers: dict[str, bytes] = {}
            with tel.span("send floor", ATTRS) as spans:
                spans.inject(headers)
            tel.increment("publish", 1, tags)

    variants: dict[str, Callable[[], None]] = {
        "ddtrace_only": ddtrace_only, "otel_only": otel_only, "both_sdks": both_sdks,
        "deimos_both_providers": via_deimos}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            t = time.thread_time()
            variants[name]()
            cpu[name].append((time.thread_time() - t) / n * 1e6)
    for name, v in cpu.items():
        print(json.dumps({"bench": "telemetry_floor", "variant": name,
                          "cpu_us_per_span": round(statistics.median(v), 1),
                          "min": round(min(v), 1), "max": round(max(v), 1), "spans": n,
                          "rounds": args.rounds}), flush=True)


if __name__ == "__main__":
    main()
