"""deimos's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures for users' and deimos's own tests:

* ``deimos_kafka``: bootstrap servers of a real broker for the session (the cluster in
  ``DEIMOS_TEST_BOOTSTRAP_SERVERS`` or the embedded one, started once and stopped at the end).
* ``deimos_topic``: a factory making fresh topics on that broker.
* ``deimos_database``: an isolated database; parametrise it indirectly with ``sqlite``,
  ``postgresql`` or ``mariadb``.
* ``deimos_reset``: settings and registry restored after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def deimos_kafka() -> Iterator[str]:
    from deimos.testing.broker import broker

    with broker() as bootstrap:
        yield bootstrap


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
