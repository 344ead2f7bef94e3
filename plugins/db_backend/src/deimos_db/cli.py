"""``deimos db init``, ``deimos db-producer`` and ``deimos db-poller`` (added through
``deimos_cli_commands``)."""

from __future__ import annotations

import os
import sys

import click

from deimos.cli import health_port_option, log_level_option, setup_logging


def _settings(ctx: click.Context) -> None:
    from deimos.cli import load_settings

    load_settings(ctx)


def _start(ctx: click.Context) -> None:
    """Settings, then the application hook (``--app``/``app``) before anything runs."""
    from deimos.cli import start_app

    _settings(ctx)
    start_app(ctx)


@click.group("db")
def db_group() -> None:
    """The outbox tables of deimos-db."""


@db_group.command("init")
@click.option("--url", default=None, help="SQLAlchemy URL (default: db.url of the settings)")
@click.pass_context
def init(ctx: click.Context, url: str | None) -> None:
    """Create kafka_messages, kafka_topic_info, kafka_dead_letters, deimos_poll_info and
    deimos_inbox where missing.

    With Alembic, include deimos_db's migrations in your history instead (see the outbox
    guide)."""
    from deimos.config import get_settings

    from .engine import get_engine
    from .models import create_tables

    _settings(ctx)
    db = get_settings().section("db")
    engine = get_engine(url or db.url, db.engine_options)
    create_tables(engine)
    click.echo(f"deimos-db tables ready in {engine.url.render_as_string()}")


@db_group.command("model")
@click.argument("schema")
@click.option("--namespace", default=None, help="the schema's namespace/package, when SCHEMA "
              "is not a full name")
@click.option("--table", default=None, help="table name (default: the schema's name in "
              "snake case, plural)")
@click.option("--class-name", default=None, help="model class (default: the schema's name)")
@click.option("--primary-key", default=None, help="field to key by (default: id, if any)")
@click.option("--base", default=None, help="'package.module:Base' to import the declarative "
              "base from (default: the module declares one)")
@click.option("--schema-backend", default=None, help="default: schema.backend")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="file to write (default: print)")
@click.pass_context
def model(ctx: click.Context, schema: str, namespace: str | None, table: str | None,
          class_name: str | None, primary_key: str | None, base: str | None,
          schema_backend: str | None, output: str | None) -> None:
    """Write an SQLAlchemy model for SCHEMA's fields, for a record consumer's table (then
    `alembic revision --autogenerate` for the migration)."""
    import re

    from deimos.config import KeyConfig
    from deimos.errors import DeimosError
    from deimos.runtime import get_runtime

    from .modelgen import model_source

    _settings(ctx)
    short = schema.rsplit(".", 1)[-1]
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", short).lower()
    try:
        sb = get_runtime().schema_backend(topic="", schema=schema, namespace=namespace,
                                          key_config=KeyConfig(kind="none"),
                                          backend=schema_backend)
        if sb.fields is None:
            raise DeimosError(f"schema backend {sb.name} does not describe its fields")
        fields = sb.fields(sb.context)
        if not fields:
            raise DeimosError(f"schema {sb.context.full_name} has no fields (is it a record?)")
        text = model_source(fields, schema=sb.context.full_name or schema,
                            table=table or (snake if snake.endswith("s") else snake + "s"),
                            class_name=class_name or short, primary_key=primary_key,
                            base=base)
    except (DeimosError, ValueError) as exc:
        click.echo(f"deimos db model: {exc}", err=True)
        sys.exit(2)
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {output}")


@click.command("db-producer")
@click.option("--workers", "-w", type=int, default=None,
              help="worker threads (default: db.producer.workers)")
@log_level_option("info")
@health_port_option
@click.pass_context
def db_producer(ctx: click.Context, workers: int | None, log_level: str,
                health_port: int | None) -> None:
    """Send the outbox's messages to Kafka until SIGINT/SIGTERM."""
    from .producer import run_db_producer

    setup_logging(log_level)
    _start(ctx)
    if not run_db_producer(workers, health_port=health_port):
        click.echo("deimos db-producer: shutdown timed out; exiting anyway", err=True)
        sys.stdout.flush()
        os._exit(1)


@click.command("db-poller")
@click.argument("names", nargs=-1)
@log_level_option("info")
@health_port_option
@click.pass_context
def db_poller(ctx: click.Context, names: tuple[str, ...], log_level: str,
              health_port: int | None) -> None:
    """Run the DB pollers of [[db.pollers]] (or only NAMES) until SIGINT/SIGTERM."""
    from .poller import run_db_pollers

    setup_logging(log_level)
    _start(ctx)
    if not run_db_pollers(list(names) or None, health_port=health_port):
        click.echo("deimos db-poller: shutdown timed out; exiting anyway", err=True)
        sys.stdout.flush()
        os._exit(1)


def commands() -> list[click.Command]:
    return [db_group, db_producer, db_poller]
