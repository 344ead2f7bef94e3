"""Core commands: ``deimos run`` and ``deimos demo``."""

from __future__ import annotations

import logging
import os
import sys

import click

from deimos import commands_ops, commands_tools  # noqa: F401  (topics, dlq, tail, lag, schemas)
from deimos.cli import cli, load_settings


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("consumers", nargs=-1)
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def run(ctx: click.Context, consumers: tuple[str, ...], log_level: str) -> None:
    """Run every configured consumer (or the CONSUMERS named) until SIGINT/SIGTERM."""
    from deimos import lag, runner

    _logging(log_level)
    from deimos.schema import devregistry

    loaded = load_settings(ctx, dev_registry=True)
    if loaded.settings.schema.registry_url == devregistry.default_url():
        logging.getLogger("deimos").info(
            "schema.registry_url is not set: using the development registry %s (shared by "
            "local processes; set schema.registry_url in production)",
            loaded.settings.schema.registry_url)
    clean = runner.run(list(consumers) or None, extra=lag.reporter_factories())
    if not clean:
        click.echo("deimos: shutdown timed out; exiting anyway", err=True)
        sys.stdout.flush()
        os._exit(1)


@cli.command()
@click.option("--messages", "-n", default=None, type=int,
              help="widget changes in the workload [default: 100000; 10000 without the "
                   "demo service]")
@click.option("--keep-running", is_flag=True, help="stay up after the summary (Ctrl-C stops)")
@click.option("--log-level", default="warning", show_default=True)
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
