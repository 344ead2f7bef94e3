"""The shipped migrations, ``deimos db init``, and the producer backend conformance suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

from deimos.cli import _add_plugin_commands, cli
from deimos.testing.conformance.producer_backend import Delivered, ProducerBackendConformance
from deimos_db import dispose_engines, get_engine, kafka_messages, metadata
from deimos_db.engine import decode_headers
from deimos_db.migrations import BRANCH, VERSIONS, alembic_config
from deimos_db_helpers import ALL_DATABASES


@ALL_DATABASES
def test_shipped_migrations_create_exactly_the_model_schema(deimos_database: str) -> None:
    cfg: Any = alembic_config(deimos_database)
    command.upgrade(cfg, f"{BRANCH}@head")
    engine = sa.create_engine(deimos_database)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        command.downgrade(cfg, "base")
        left = set(sa.inspect(engine).get_table_names())
        assert not {"kafka_messages", "kafka_topic_info", "deimos_poll_info",
                    "deimos_inbox"} & left
    finally:
        engine.dispose()


def test_migrations_carry_a_branch_label_to_join_an_application_history() -> None:
    from alembic.script import ScriptDirectory

    cfg: Any = alembic_config("sqlite://")
    script = ScriptDirectory.from_config(cfg)
    assert BRANCH in script.get_revision(f"{BRANCH}@head").branch_labels
    assert Path(VERSIONS).is_dir()


@ALL_DATABASES
def test_deimos_db_init_creates_the_tables(deimos_database: str, deimos_reset: None,
                                           tmp_path: Path) -> None:
    _add_plugin_commands()
    config = tmp_path / "deimos.toml"
    config.write_text(f'[db]\nurl = "{deimos_database}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "db", "init"])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(deimos_database)
    assert {"kafka_messages", "kafka_topic_info", "kafka_dead_letters", "deimos_poll_info",
            "deimos_inbox"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
    dispose_engines()


class TestDbBackendConformance(ProducerBackendConformance):
    @pytest.fixture(params=["db", "outbox"])
    def backend_name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def extra_settings(self, tmp_path: Path) -> Iterator[dict[str, Any]]:
        yield {"db": {"url": f"sqlite:///{tmp_path / 'outbox.sqlite'}"}}
        dispose_engines()

    @pytest.fixture
    def delivered(self, tmp_path: Path) -> Callable[[], Delivered]:
        url = f"sqlite:///{tmp_path / 'outbox.sqlite'}"
        metadata.create_all(get_engine(url))

        def rows() -> Delivered:
            with get_engine(url).connect() as conn:
                return [(r.topic, r.key, r.message) for r in conn.execute(
                    sa.select(kafka_messages).order_by(kafka_messages.c.id))]
        return rows

    def test_headers_are_stored_with_the_row(self, backend, context, topic, delivered) -> None:
        backend.execute(context, self.batch(topic), True)
        url = context.settings.section("db").url
        with get_engine(url).connect() as conn:
            stored = conn.execute(sa.select(kafka_messages.c.headers)
                                  .order_by(kafka_messages.c.id)).scalars().first()
        assert decode_headers(stored) == [("h", b"1")]


@pytest.mark.kafka
def test_the_documented_example_runs(deimos_kafka: str, deimos_reset: None) -> None:
    import os
    import subprocess
    import sys

    example = Path(__file__).parents[1] / "examples" / "outbox_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                         timeout=120, env={**os.environ,
                                           "DEIMOS_TEST_BOOTSTRAP_SERVERS": deimos_kafka})
    assert out.returncode == 0, out.stderr
    assert "sent 1 message(s)" in out.stdout and "value=b'teapot'" in out.stdout


def test_deimos_db_poller_runs_only_configured_pollers(deimos_reset: None,
                                                      tmp_path: Path) -> None:
    _add_plugin_commands()
    config = tmp_path / "deimos.toml"
    config.write_text(f'[db]\nurl = "sqlite:///{tmp_path / "p.sqlite"}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "db-poller", "nope"])
    assert result.exit_code != 0
    assert "no DB poller named nope" in str(result.exception)
    help_text = CliRunner().invoke(cli, ["db-poller", "--help"]).output
    assert "[[db.pollers]]" in help_text


def test_the_records_example_runs() -> None:
    import os
    import subprocess
    import sys

    example = Path(__file__).parents[1] / "examples" / "records_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "outbox after the producer demo: 1", "poller published: 1",
        "poller published on its next run: 0", "prices: [(1, 12.5)]"]


def test_the_multi_table_example_runs() -> None:
    import os
    import subprocess
    import sys

    example = Path(__file__).parents[1] / "examples" / "multi_table_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "1 teapot False acme ['green']", "2 a widget with a rath True None ['x']",
        "renamed: 1"]
