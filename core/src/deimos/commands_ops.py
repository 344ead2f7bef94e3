"""Operations commands: ``deimos topics plan|apply`` and ``deimos dlq replay``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deimos.cli import cli, cluster_option, load_settings
from deimos.errors import DeimosError

if TYPE_CHECKING:
    from deimos.topics import TopicChange


@cli.group("topics")
def topics_group() -> None:
    """The topics the settings imply (consumers, dead letters, producers, DB pollers,
    topics.overrides), compared with the cluster; apply only ever adds."""


def _plan(ctx: click.Context, timeout: float, cluster: str | None) -> list[TopicChange]:
    from deimos import topics

    settings = load_settings(ctx).settings
    try:
        return topics.plan(settings, timeout=timeout, cluster=cluster)
    except DeimosError as exc:
        raise click.ClickException(str(exc)) from None


def _print_plan(changes: list[TopicChange], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{
            "topic": c.name, "action": c.action, "sources": c.spec.sources,
            "partitions": c.spec.partitions, "current_partitions": c.current_partitions,
            "add_partitions_to": c.add_partitions_to,
            "replication_factor": c.spec.replication_factor, "config": c.spec.config,
            "config_changes": {k: {"current": old, "wanted": new}
                               for k, (old, new) in c.config_changes.items()},
            "warnings": c.warnings} for c in changes], indent=2))
        return
    for c in changes:
        for line in c.describe():
            click.echo(line)
    todo = sum(1 for c in changes if c.action in ("create", "update"))
    click.echo(f"{len(changes)} topic(s): {sum(c.action == 'create' for c in changes)} to "
               f"create, {sum(c.action == 'update' for c in changes)} to update, "
               f"{len(changes) - todo} unchanged")


@topics_group.command("plan")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--detailed-exitcode", is_flag=True,
              help="exit 2 when there are changes to apply (for CI, as terraform does)")
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait")
@cluster_option
@click.pass_context
def topics_plan(ctx: click.Context, as_json: bool, detailed_exitcode: bool,
                timeout: float, cluster: str | None) -> None:
    """Print what `deimos topics apply` would change: + create, ~ update, = up to date,
    ! cannot or will not change (fewer partitions, replication factor). One cluster at a
    time: the topics of the producers and consumers on it."""
    changes = _plan(ctx, timeout, cluster)
    _print_plan(changes, as_json)
    if detailed_exitcode and any(c.action in ("create", "update") for c in changes):
        sys.exit(2)


@topics_group.command("apply")
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait")
@cluster_option
@click.pass_context
def topics_apply(ctx: click.Context, timeout: float, cluster: str | None) -> None:
    """Create missing topics, raise partitions, set declared configs; never deletes or
    lowers anything. One cluster at a time (--cluster; default: the kafka section)."""
    from deimos import topics

    changes = _plan(ctx, timeout, cluster)
    _print_plan(changes, False)
    result = topics.apply(load_settings(ctx).settings, changes, timeout=timeout,
                          cluster=cluster)
    for name in result.created:
        click.echo(f"created {name}")
    for name in result.partitions_raised:
        click.echo(f"raised the partitions of {name}")
    for name in result.configs_set:
        click.echo(f"set the configs of {name}")
    for name, error in result.errors:
        click.echo(f"error: {name}: {error}", err=True)
    if result.errors:
        sys.exit(1)


@cli.group("dlq")
def dlq_group() -> None:
    """Dead-letter topics."""


@dlq_group.command("replay")
@click.argument("topic")
@click.option("--partition", type=int, default=None, help="only this partition")
@click.option("--from-offset", type=int, default=None, help="first offset (included)")
@click.option("--to-offset", type=int, default=None, help="last offset (included)")
@click.option("--error-class", default=None,
              help="only this deimos-error-class (full name or last part: ValueError)")
@click.option("--key", default=None, help="only messages with this key (raw, as text)")
@click.option("--dry-run", is_flag=True, help="print what would be replayed; publish nothing")
@click.option("--max-replays", type=int, default=3, show_default=True,
              help="refuse a message already replayed this many times")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait")
@click.pass_context
def dlq_replay(ctx: click.Context, topic: str, partition: int | None,
               from_offset: int | None, to_offset: int | None, error_class: str | None,
               key: str | None, dry_run: bool, max_replays: int, as_json: bool,
               timeout: float) -> None:
    """Republish the dead letters of TOPIC to their original topics (deimos-original-topic
    header), key and headers kept, deimos-replay-count raised by one."""
    from deimos import dlq

    settings = load_settings(ctx).settings
    selection = dlq.ReplayFilter(partition, from_offset, to_offset, error_class, key)
    try:
        result = dlq.replay(settings, topic, selection, dry_run=dry_run,
                            max_replays=max_replays, timeout=timeout)
    except DeimosError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(dlq.as_rows(result), indent=2))
    else:
        table = Table(title=f"{topic}: {len(result.selected)} of {result.read} dead "
                            f"letter(s) selected" + (" (dry run)" if dry_run else ""))
        for col in ("partition", "offset", "key", "error class", "replays", "outcome"):
            table.add_column(col, overflow="fold")
        for row in dlq.as_rows(result):
            table.add_row(str(row["partition"]), str(row["offset"]), escape(str(row["key"])),
                          escape(str(row["error_class"])), str(row["replays"]),
                          escape(f"{row['outcome']}: {row['reason']}"))
        Console(width=200).print(table)
        done = result.count("would replay" if dry_run else "replayed")
        click.echo(f"{done} {'would be ' if dry_run else ''}replayed, "
                   f"{result.count('refused')} refused, {result.count('skipped')} skipped")
    if result.count("refused"):
        sys.exit(3)
