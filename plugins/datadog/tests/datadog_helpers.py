"""Helpers of the deimos-datadog tests: a real DogStatsD endpoint (a UDP socket on loopback
that collects datagrams) and a ddtrace trace processor that keeps finished spans in memory
instead of sending them to an agent."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from deimos.consumer import ConsumerLoop, resolve_settings
from deimos.plugins import get_registry
from deimos.testing.broker import GROUP_TIMEOUTS

# ddtrace reads these when first imported (lazily, later): no agent-side features here
for _k, _v in {"DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
               "DD_REMOTE_CONFIGURATION_ENABLED": "false", "DD_TRACE_STARTUP_LOGS": "false",
               "DD_CRASHTRACKING_ENABLED": "false", "DD_DATA_STREAMS_ENABLED": "false"}.items():
    os.environ.setdefault(_k, _v)


class StatsdServer:
    """A UDP socket on 127.0.0.1 reading DogStatsD datagrams in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(line for line in data.decode().split("\n") if line)

    def metrics(self, prefix: str = "deimos.") -> list[Parsed]:
        """Datagrams whose name starts with ``prefix`` (the client's own telemetry aside)."""
        return [p for p in map(parse, list(self.lines)) if p.name.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Parsed:
    """``name:value|type|#k:v,...`` split up."""

    def __init__(self, name: str, value: float, type: str, tags: dict[str, str]) -> None:
        self.name, self.value, self.type, self.tags = name, value, type, tags

    def __repr__(self) -> str:
        return f"{self.name}:{self.value}|{self.type}|{self.tags}"


def parse(line: str) -> Parsed:
    head, *fields = line.split("|")
    name, _, value = head.rpartition(":")
    tags: dict[str, str] = {}
    for f in fields[1:]:
        if f.startswith("#"):
            for t in f[1:].split(","):
                k, _, v = t.partition(":")
                tags[k] = v
    return Parsed(name, float(value), fields[0], tags)


def flush_metrics() -> None:
    get_registry().get("metrics", "datadog").obj.flush()


def wait_for(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class SpanCollector:
    """A ddtrace trace processor (public ``TraceFilter`` API) keeping finished spans."""

    def __init__(self) -> None:
        from ddtrace.trace import TraceFilter

        collector = self
        self.spans: list[Any] = []

        class _Keep(TraceFilter):  # type: ignore[misc]
            def process_trace(self, trace: list[Any]) -> None:
                collector.spans.extend(trace)
                return None  # dropped: nothing goes to an agent

        self.filter = _Keep()


def run_consumer(cls: type, topic: str, until: Callable[[], bool], what: str,
                 **overrides: Any) -> None:
    """Run a consumer of ``cls`` on ``topic`` in a thread until ``until()`` holds."""
    cs = resolve_settings(cls, topics=[topic], group_id=f"g-{uuid.uuid4().hex[:10]}",
                          config=dict(GROUP_TIMEOUTS), max_wait_time=0.2, **overrides)
    loop = ConsumerLoop(cls, cs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_for(lambda: until() or bool(errors), what=what)
    finally:
        loop.stop()
        t.join(30)
    assert not errors, errors
