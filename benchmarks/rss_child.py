"""Child process of the ``consume_rss`` benchmark: drain a topic with a deimos batch consumer
and print RSS samples taken at every tenth of the way (flat = no growth with topic size)."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from typing import Any

import deimos
from deimos.consumer import BatchConsumer, ConsumerLoop, resolve_settings
from deimos.testing.broker import GROUP_TIMEOUTS


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    deimos.configure(kafka={"bootstrap_servers": bootstrap})
    samples: list[float] = []
    state = {"count": 0, "next": n // 10}
    done = threading.Event()

    class Drain(BatchConsumer):
        def consume_batch(self, payloads: list[Any], metadata: Any) -> None:
            state["count"] += len(payloads)
            if state["count"] >= state["next"]:
                samples.append(round(rss_mb(), 1))
                state["next"] += n // 10
            if state["count"] >= n:
                done.set()

    cs = resolve_settings(Drain, topics=[topic], group_id=f"rss-{uuid.uuid4().hex[:8]}",
                          config=dict(GROUP_TIMEOUTS))
    loop = ConsumerLoop(Drain, cs)
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    done.wait(600)
    loop.stop()
    t.join(30)
    print(json.dumps({"rss_mb": samples, "peak_mb": round(peak_mb(), 1)}))


if __name__ == "__main__":
    main()
