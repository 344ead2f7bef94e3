"""The floor of a publish written in Python, against deimos's ``publish()`` and
``publish_list()``.

No broker (messages only queue: the bootstrap address answers nothing), so what is timed is
the publishing thread's CPU per message and nothing else: a raw ``produce()`` loop, the same
with a delivery callback, then the least a Python ``publish()`` can do in layers: one
function frame around ``produce``; that plus a ``Message`` of deimos's seven slots, the
UTF-8 encoding of value and key and one call to a sender closure (the shape of deimos's
per-message path: the backend plugin's sender takes a ``Message``); and deimos's own
``publish()`` (``kafka_async``, plain, keyed). Then the same for lists of 500 (as
``produce_plain`` publishes): the least a ``publish_list`` returning its messages can do
(values and keys encoded with ``map``, a ``Message`` each made by ``map``, one ``produce``
with the callback per message) against deimos's ``publish_list``. Rounds alternate; medians,
with min and max.

    python -m uv run python benchmarks/publish_floor.py [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any

from confluent_kafka import Producer as RawProducer

import deimos
from deimos import config as _config
from deimos.kafka import producer_config
from deimos.message import Message

VALUE = "x" * 100
TOPIC = "floor"
CHUNK = 500  # messages per publish_list call, as in produce_plain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.messages
    values = [VALUE] * n
    keys = [f"key-{i % 1000}" for i in range(n)]
    # room for every message of every round: nothing is delivered, nothing is refused
    room = {"queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 4_000_000}
    _config.reset()
    deimos.configure(kafka={"bootstrap_servers": "127.0.0.1:9"},
                     producers={"backend": "kafka_async", "config": room})
    conf = producer_config(_config.get_settings())  # deimos's properties, for the raw side

    class Plain(deimos.Producer):
        topic = TOPIC
        key_config = "plain"

    def callback(err: Any, msg: Any) -> None:
        pass

    def raw_loop(p: RawProducer) -> None:
        produce = p.produce
        for i in range(n):
            produce(TOPIC, values[i], keys[i])

    def raw_callback_loop(p: RawProducer) -> None:
        produce = p.produce
        for i in range(n):
            produce(TOPIC, values[i], keys[i], -1, callback)

    def frame_loop(p: RawProducer) -> None:
        produce = p.produce

        def publish(payload: Any, key: Any = None, headers: Any = None) -> None:
            produce(TOPIC, payload, key, -1, callback)

        for i in range(n):
            publish(values[i], key=keys[i])

    def message_loop(p: RawProducer) -> None:
        produce = p.produce
        new = Message.__new__

        def send(m: Message) -> None:
            produce(m.topic, m.encoded_payload, m.encoded_key, -1, callback)

        def publish(payload: Any, key: Any = None, headers: Any = None) -> list[Message]:
            m = new(Message)
            m.topic, m.payload, m.key, m.partition_key, m.headers = (TOPIC, payload, key,
                                                                     None, None)
            m.encoded_key, m.encoded_payload = key.encode(), payload.encode()
            send(m)
            return [m]

        for i in range(n):
            publish(values[i], key=keys[i])

    def deimos_loop(p: RawProducer) -> None:
        publish = Plain.publish
        for i in range(n):
            publish(values[i], key=keys[i])

    chunks = [(values[i:i + CHUNK], keys[i:i + CHUNK]) for i in range(0, n, CHUNK)]

    def list_floor(p: RawProducer) -> None:
        produce = p.produce
        for vs, ks in chunks:
            encoded, encoded_keys = list(map(str.encode, vs)), list(map(str.encode, ks))
            messages = list(map(Message, repeat(TOPIC), vs, ks, repeat(None), repeat(None),
                                encoded_keys, encoded))
            for m in messages:
                produce(m.topic, m.encoded_payload, m.encoded_key, -1, callback)

    def deimos_list(p: RawProducer) -> None:
        publish_list = Plain.publish_list
        for vs, ks in chunks:
            publish_list(vs, keys=ks)

    Plain.publish("warm-up", key="w")  # the pipeline compiled, its producer made
    from deimos.kafka.producers import _pool

    (ours,) = [sp.producer for sp in _pool.values() if not sp.reports]
    # the purges below fail every queued message: not worth a log line each
    logging.getLogger("deimos.backends.kafka").disabled = True
    variants: dict[str, Callable[[RawProducer], None]] = {
        "raw": raw_loop, "raw_with_callback": raw_callback_loop,
        "one_frame": frame_loop, "frame_message_sender": message_loop,
        "deimos_publish": deimos_loop, "list_floor": list_floor,
        "deimos_publish_list": deimos_list}
    raw = RawProducer({**conf, "log_level": 0})
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            gc.collect()
            gc.disable()
            t = time.thread_time()
            variants[name](raw)
            cpu[name].append((time.thread_time() - t) / n * 1e6)
            gc.enable()
            # an empty queue for the next round (a queue of millions costs each produce more)
            for p in (raw, ours):
                p.purge()
                while len(p):
                    p.poll(0.01)
    base = statistics.median(cpu["raw"])
    for name, v in cpu.items():
        med = statistics.median(v)
        print(json.dumps({"bench": "publish_floor", "variant": name,
                          "cpu_us_per_message": round(med, 3),
                          "min": round(min(v), 3), "max": round(max(v), 3),
                          "vs_raw": round(med / base, 3), "messages": n,
                          "rounds": args.rounds}), flush=True)
    # nothing can be delivered: skip librdkafka's teardown, which would wait for the queue
    os._exit(0)


if __name__ == "__main__":
    main()
