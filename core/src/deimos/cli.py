"""The ``deimos`` command line. Plugins add commands through ``deimos_cli_commands``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import deimos
from deimos import config as _config
from deimos.errors import DeimosError

F = TypeVar("F", bound=Callable[..., Any])

#: the settings file read when neither --config nor DEIMOS_CONFIG names one
DEFAULT_CONFIG_FILE = _config.DEFAULT_FILE


@click.group()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              envvar="DEIMOS_CONFIG", help="settings file (.toml/.yaml); env DEIMOS_CONFIG; "
              "default ./deimos.toml when it exists")
@click.option("--app", "app", default=None, metavar="MODULE:FUNCTION",
              help="application start-up code, called once before anything runs (setting "
              "app; env DEIMOS_APP)")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, app: str | None) -> None:
    """deimos: Kafka producers and consumers with schemas, outbox, metrics and tracing."""
    ctx.ensure_object(dict)
    if config_file is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        config_file = DEFAULT_CONFIG_FILE
    ctx.obj["config_file"] = config_file
    ctx.obj["app"] = app


#: ``--health-port`` of every command that runs runnables (run, db-producer, db-poller)
cluster_option = click.option(
    "--cluster", default=None, metavar="NAME",
    help="the cluster to use: a name under kafka.clusters (default: the kafka section)")

health_port_option = click.option(
    "--health-port", type=int, default=None, metavar="PORT",
    help="serve /livez, /readyz, /health (and /metrics of a metrics provider) on PORT "
         "(setting health.port)")

_app_started: set[str] = set()


def start_app(ctx: click.Context) -> None:
    """Before any runnable starts (``deimos run``, ``db-producer``, ``db-poller``): put the
    current directory on ``sys.path`` (as uvicorn, Celery and FastStream do, so the project's
    own modules import), then import and call the application hook (``--app`` or the ``app``
    setting) once per process."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    spec = (ctx.find_root().obj or {}).get("app") or _config.get_settings().app
    if not spec or spec in _app_started:
        return
    from deimos.errors import ConfigError

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError([("app", f"{spec!r} is not 'module:function'")])
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError([("app", f"cannot import {module_name!r} of {spec!r}: {exc} "
                                   f"(sys.path starts with {sys.path[:3]})")]) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError([("app", f"{module_name!r} has no function {attr!r}")])
    _app_started.add(spec)
    fn()


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level_option(default: str) -> Callable[[F], F]:
    """``--log-level`` as every deimos command takes it (plugins' commands too)."""
    return click.option("--log-level", default=default, show_default=True,
                        type=click.Choice(LOG_LEVELS, case_sensitive=False),
                        help="level of the log written to stderr")


def setup_logging(level: str) -> None:
    """The log format of every long-running deimos command."""
    import logging

    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_settings(ctx: click.Context, *, dev_registry: bool = False
                  ) -> _config.LoadedSettings:
    """Configure deimos from the command line's file and the environment.

    ``dev_registry``: when no source sets ``schema.registry_url``, use the development
    registry (:mod:`deimos.schema.devregistry`, a file every local process shares) instead of
    the in-process ``mock://`` default, so what ``deimos run``, the demo and an app wrote can be
    decoded by ``deimos tail`` in another process.
    """
    file = (ctx.find_root().obj or {}).get("config_file")
    _config.configure(file=file) if file else _config.configure()
    loaded = _config.current()
    if dev_registry and "schema.registry_url" not in loaded.sources:
        from deimos.schema import devregistry

        schema = {"registry_url": devregistry.default_url()}
        _config.configure(file=file, schema=schema) if file else _config.configure(
            schema=schema)
        loaded = _config.current()
    return loaded


@cli.command()
def version() -> None:
    """Print the versions of deimos and its Kafka client."""
    import confluent_kafka

    click.echo(f"deimos-kafka {deimos.__version__}")
    # confluent_kafka.version() is a plain string (indexing it gave "2"); libversion() is a
    # (string, int) pair
    click.echo(f"confluent-kafka {confluent_kafka.__version__}, "
               f"librdkafka {confluent_kafka.libversion()[0]}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def plugins(as_json: bool) -> None:
    """List every installed plugin: kind, name, distribution, version, hooks."""
    from deimos.plugins import get_registry

    infos = get_registry().all()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    table = Table(title="deimos plugins")
    for col in ("kind", "name", "distribution", "version", "hooks"):
        table.add_column(col)
    for i in infos:
        hooks = ", ".join(h.removeprefix("deimos_") for h in i.hooks)
        table.add_row(i.kind, escape(i.name), escape(i.distribution or "-"),
                      escape(i.version or "-"),
                      f"[red]ERROR: {escape(i.error)}[/red]" if i.error else hooks)
    Console().print(table)


@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True,
              help="print JSON: the settings and each value's source")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings (secrets masked) and where each value came from."""
    loaded = load_settings(ctx)
    data = _config.masked_dict(loaded.settings)
    rows = list(_config._leaves(data))
    if as_json:
        click.echo(json.dumps({"settings": data, "sources": loaded.sources}, indent=2,
                              default=str))
        return
    table = Table(title="deimos settings")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source")
    for path, value in rows:
        table.add_row(escape(path), escape(json.dumps(value, default=str)),
                      escape(loaded.sources.get(path, "default")))
    Console(width=160).print(table)


def _add_plugin_commands() -> None:
    """Add the commands plugins contribute; one failing plugin only loses its own."""
    from deimos.plugins import call_all, get_registry

    for info in get_registry().all():
        try:
            contributed = call_all([info], "deimos_cli_commands")
        except Exception as exc:
            click.echo(f"warning: {info.kind} {info.name!r} ({info.distribution}) failed to "
                       f"add its commands: {type(exc).__name__}: {exc}", err=True)
            continue
        for commands in contributed:
            for command in commands or ():
                if command.name not in cli.commands:
                    cli.add_command(command)


def main(argv: list[str] | None = None) -> Any:
    from deimos import commands  # noqa: F401  (core commands: run, demo, ...)

    try:
        _add_plugin_commands()
        return cli.main(args=argv, prog_name="deimos", standalone_mode=True)
    except DeimosError as exc:  # pragma: no cover - click handles most exits
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
