"""Core commands: ``deimos run`` and ``deimos demo``."""

from __future__ import annotations

import logging
import os
import sys

import click

from deimos import commands_ops, commands_tools  # noqa: F401  (topics, dlq, tail, lag, schemas)
from deimos import config as _config
from deimos.cli import cli, health_port_option, load_settings, log_level_option, start_app
from deimos.cli import setup_logging as _logging
from deimos.errors import FatalError


@cli.command()
@click.argument("consumers", nargs=-1)
@log_level_option("info")
@health_port_option
@click.pass_context
def run(ctx: click.Context, consumers: tuple[str, ...], log_level: str,
        health_port: int | None) -> None:
    """Run every configured consumer (or the CONSUMERS named) until SIGINT/SIGTERM."""
    from deimos import lag, runner

    _logging(log_level)
    from deimos.schema import devregistry

    load_settings(ctx, dev_registry=True)
    start_app(ctx)
    loaded = _config.current()
    if loaded.settings.schema.registry_url == devregistry.default_url():
        logging.getLogger("deimos").info(
            "schema.registry_url is not set: using the development registry %s (shared by "
            "local processes; set schema.registry_url in production)",
            loaded.settings.schema.registry_url)
    try:
        clean = runner.run(list(consumers) or None, extra=lag.reporter_factories(),
                           health_port=health_port)
    except FatalError as fatal:
        click.echo(f"deimos: stopped: {fatal}", err=True)
        sys.exit(1)
    if not clean:
        click.echo("deimos: shutdown timed out; exiting anyway", err=True)
        sys.stdout.flush()
        os._exit(1)


@cli.command()
@click.option("--messages", "-n", default=None, type=int,
              help="widget changes in the workload [default: 100000; 10000 without the "
                   "demo service]")
@click.option("--keep-running", is_flag=True, help="stay up after the summary (Ctrl-C stops)")
@log_level_option("warning")
@click.pass_context
def demo(ctx: click.Context, messages: int | None, keep_running: bool, log_level: str) -> None:
    """Run the demo service end to end (embedded broker, SQLite and the development schema
    registry unless configured)."""
    import importlib.util

    _logging(log_level)
    file = (ctx.find_root().obj or {}).get("config_file")
    if importlib.util.find_spec("deimos_demo") is not None:
        from deimos_demo.run import run_demo as run_service

        sys.exit(run_service(messages=messages or 100_000, file=file,
                             keep_running=keep_running))
    from deimos.demo import run_demo

    click.echo("The demo service (deimos-demo, in this repository's examples/) is not "
               "installed: running the core produce/consume demo.")
    sys.exit(run_demo(messages=messages or 10_000, file=file))
