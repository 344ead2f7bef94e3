"""Liveness and readiness over HTTP for ``deimos run``, ``deimos db-producer`` and
``deimos db-poller`` (``--health-port`` or ``health.port``), plus the pages metrics providers
serve there (``/metrics`` of ``deimos-prometheus``).

The server is the standard library's :class:`http.server.ThreadingHTTPServer` in a daemon
thread: probes are a few requests a minute, so an extra dependency (and its event loop) would
buy nothing, and the process's own threads are never blocked by a slow scraper.

Paths (every answer is JSON with each runnable's state; 200 when the check passes, 503 when
it does not):

* ``/livez``: every runnable's loop completed an iteration within its bound (a consumer:
  ``max.poll.interval.ms`` plus twice its ``max_wait_time`` and a second; a DB producer
  worker or poller: a bound
  derived from its own intervals). A failing liveness probe means "restart me".
* ``/readyz``: live, and every runnable is ready: consumers have partitions assigned and
  reach the brokers; DB producer workers hold a topic lock or are idle while connected to
  the brokers, with the database reachable; pollers reach the database. A runnable that
  crashed and waits for its restart is not ready.
* ``/health``: both (200 only when live and ready).

A runnable takes part by having a ``health()`` method returning a mapping with at least
``live`` and ``ready`` (booleans); runnables without one count as live and ready while they
run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deimos.runner import Executor

log = logging.getLogger("deimos.health")

#: a route: () -> (HTTP status, content type, body)
Route = Callable[[], "tuple[int, str, bytes]"]


def runnable_health(runnable: Any) -> dict[str, Any]:
    """What one runnable says about itself (``health()``), or "running"."""
    fn = getattr(runnable, "health", None)
    if fn is None:
        return {"name": repr(runnable), "state": "running", "live": True, "ready": True}
    try:
        state = dict(fn())
    except Exception as exc:  # a broken check must not take the endpoint down
        log.warning("health check of %r failed", runnable, exc_info=True)
        return {"name": repr(runnable), "state": f"health check failed: {exc}",
                "live": True, "ready": False}
    state.setdefault("name", repr(runnable))
    return state


def executor_health(executor: Executor) -> list[dict[str, Any]]:
    """The state of each of an executor's slots (one per runnable factory)."""
    current = executor.current()
    out = []
    for index in range(len(executor.factories)):
        runnable = current.get(index)
        if runnable is None:
            out.append({"name": f"{executor.name}-{index}", "state": "not running "
                        "(starting, or restarting after a crash)", "live": True,
                        "ready": False})
        else:
            out.append(runnable_health(runnable))
    return out


def report(executor: Executor) -> dict[str, Any]:
    """The JSON body: overall ``live``/``ready``, each runnable, each Kafka connection."""
    from deimos.kafka.connection import connections

    runnables = executor_health(executor)
    live = all(r["live"] for r in runnables)
    ready = live and bool(runnables) and all(r["ready"] for r in runnables) \
        and not executor.stopping
    return {"live": live, "ready": ready, "stopping": executor.stopping,
            "runnables": runnables, "kafka": [c.state() for c in connections()]}


class HealthServer:
    """The HTTP server of one process: health paths plus ``routes`` (``/metrics``)."""

    def __init__(self, executor: Executor, host: str = "0.0.0.0", port: int = 0,
                 routes: Mapping[str, Route] | None = None) -> None:
        self.executor = executor
        self.routes: dict[str, Route] = {
            "/livez": lambda: self._answer("live"),
            "/readyz": lambda: self._answer("ready"),
            "/health": lambda: self._answer("both"),
            **(routes or {}),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "application/json", json.dumps(
                        {"error": "not found", "paths": sorted(server.routes)}).encode()
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:
                        log.exception("serving %s failed", self.path)
                        status, ctype, body = 500, "text/plain", str(exc).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    def _answer(self, which: str) -> tuple[int, str, bytes]:
        body = report(self.executor)
        ok = {"live": body["live"], "ready": body["ready"],
              "both": body["live"] and body["ready"]}[which]
        return (200 if ok else 503), "application/json", json.dumps(body, default=str).encode()

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="deimos-health",
                                        daemon=True)
        self._thread.start()
        log.info("health endpoints on http://%s:%d (/livez, /readyz, /health%s)", self.host,
                 self.port, "".join(f", {p}" for p in self.routes
                                    if p not in ("/livez", "/readyz", "/health")))
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def plugin_routes() -> dict[str, Route]:
    """The pages the enabled metrics providers serve (``deimos_http_routes``)."""
    from deimos.runtime import get_runtime

    runtime = get_runtime()
    routes: dict[str, Route] = {}
    for name in runtime.settings.metrics.providers:
        fn = runtime.registry.caller("metrics", name, "deimos_http_routes")
        if fn is not None:
            runtime.configure_plugin("metrics", name)
            routes.update(fn() or {})
    return routes


def serve(executor: Executor, port: int | None = None, host: str | None = None
          ) -> HealthServer | None:
    """Start the health server for ``executor`` when a port is given (``--health-port``) or
    set (``health.port``); None otherwise."""
    from deimos.runtime import get_runtime

    settings = get_runtime().settings.health
    port = settings.port if port is None else port
    if port is None:
        return None
    return HealthServer(executor, host or settings.host, port, plugin_routes()).start()


class Heartbeat:
    """A loop's last completed iteration, for liveness: ``beat()`` in the loop,
    ``age()`` in the check."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = time.monotonic()

    def beat(self) -> None:
        self.at = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self.at
