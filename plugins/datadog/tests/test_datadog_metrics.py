"""DogStatsD delivery over a Unix socket, and a hot path that never waits on the agent."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from datadog_helpers import flush_metrics, parse, wait_for

from deimos.config import build_settings
from deimos.runtime import Runtime


def _telemetry(**datadog: Any) -> Any:
    data = {"metrics": {"providers": ["datadog"]}, "datadog": datadog}
    return Runtime(build_settings(data, environ={}).settings).telemetry


def test_metrics_reach_a_unix_domain_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "dsd.socket")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(5)
        try:
            tel = _telemetry(socket_path=path, namespace="shop", client_telemetry=False)
            tel.increment("publish", 7, {"topic": "orders"})
            tel.gauge("consumer_lag", 12, {"topic": "orders", "partition": "1",
                                           "consumer_group": "g"})
            tel.timing("handler", 0.5, {"topic": "orders", "time": "consume"})
            flush_metrics()
            lines: list[str] = []

            def received() -> bool:
                lines.extend(server.recv(65535).decode().splitlines())
                return len(lines) >= 3

            wait_for(received, what="three datagrams")
        finally:
            server.close()
    got = {(p.name, p.type): p for p in map(parse, lines)}
    assert got[("shop.publish", "c")].value == 7
    assert got[("shop.publish", "c")].tags == {"topic": "orders"}
    assert got[("shop.consumer_lag", "g")].tags == {"topic": "orders", "partition": "1",
                                                    "consumer_group": "g"}
    assert got[("shop.handler", "ms")].value == 500.0


def test_the_hot_path_does_not_wait_for_a_missing_agent() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tel = _telemetry(socket_path=str(Path(tmp) / "nobody-listens"),
                         client_telemetry=False, aggregation=False, sender_queue_size=16)
        start = time.perf_counter()
        for i in range(20_000):
            tel.increment("publish", 1, {"topic": f"t{i % 10}"})
            tel.timing("handler", 0.001, {"topic": "t", "time": "consume"})
        elapsed = time.perf_counter() - start
    # buffered and queued (dropping when full): microseconds per call, never a socket wait
    assert elapsed < 5.0, elapsed
