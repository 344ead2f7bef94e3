"""Core commands: ``deimos run`` and ``deimos demo``."""

from __future__ import annotations

import logging
import os
import sys

import click

from deimos import commands_tools  # noqa: F401  (tail, lag, schemas)
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
    load_settings(ctx)
    clean = runner.run(list(consumers) or None, extra=lag.reporter_factories())
    if not clean:
        click.echo("deimos: shutdown timed out; exiting anyway", err=True)
        sys.stdout.flush()
        os._exit(1)


@cli.command()
@click.option("--messages", "-n", default=10_000, show_default=True,
              help="how many messages the workload produces")
@click.option("--log-level", default="warning", show_default=True)
@click.pass_context
def demo(ctx: click.Context, messages: int, log_level: str) -> None:
    """Run the demo service end to end (embedded broker unless one is configured)."""
    from deimos.demo import run_demo

    _logging(log_level)
    code = run_demo(messages=messages, file=(ctx.find_root().obj or {}).get("config_file"))
    sys.exit(code)
