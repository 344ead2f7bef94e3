from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import deimos
from deimos.plugins import get_registry
from deimos_db import create_tables, dispose_engines, get_engine
from deimos_db_helpers import FAST


@pytest.fixture
def db(deimos_database: str, deimos_reset: None) -> Iterator[sa.Engine]:
    """The outbox tables in an isolated database (no broker)."""
    engine = get_engine(deimos_database)
    create_tables(engine)
    yield engine
    dispose_engines()


@pytest.fixture
def outbox(db: sa.Engine, deimos_kafka: str) -> Callable[..., Any]:
    """``outbox(**producer_settings)`` configures deimos: backend ``db`` on the test database,
    the test broker, fast DB producer timings, mock metrics."""

    def configure(**producer: Any) -> Any:
        settings = deimos.configure(
            kafka={"bootstrap_servers": deimos_kafka},
            producers={"backend": "db"},
            metrics={"providers": ["mock"]},
            db={"url": db.url.render_as_string(hide_password=False),
                "producer": {**FAST, **producer}},
        )
        get_registry().get("metrics", "mock").obj.clear()
        return settings

    configure()
    return configure


