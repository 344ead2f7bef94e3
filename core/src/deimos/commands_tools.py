"""Tool commands: ``deimos tail``, ``deimos lag`` and ``deimos schemas generate|check``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deimos.cli import cli, cluster_option, load_settings


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def iso_time(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 in UTC (``2026-05-01T12:00:00.123Z``)."""
    if ms is None:
        return None
    from datetime import datetime, timezone

    when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cli.command()
@click.argument("topic")
@click.option("-n", "--num-messages", default=10, show_default=True,
              help="how many of the last messages (across all partitions)")
@click.option("--schema", default=None, help="schema of the values (default: the consumer "
              "configured for TOPIC, else the default schema backend with no schema)")
@click.option("--namespace", default=None, help="namespace of --schema")
@click.option("--key-config", default=None,
              help='"plain", "none", "field:NAME" or "schema:NAME"')
@click.option("--raw", is_flag=True, help="do not decode; print bytes")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait")
@cluster_option
@click.pass_context
def tail(ctx: click.Context, topic: str, num_messages: int, schema: str | None,
         namespace: str | None, key_config: str | None, raw: bool, as_json: bool,
         timeout: float, cluster: str | None) -> None:
    """Print the last messages of TOPIC, decoded, oldest first. Joins no consumer group and
    commits nothing, so it is safe against a live service's topics."""
    from deimos.inline import get_messages_for

    load_settings(ctx, dev_registry=True)
    kc: Any = key_config
    if key_config and ":" in key_config:
        kind, _, name = key_config.partition(":")
        kc = {kind: name}
    from deimos.errors import DeimosError

    try:
        msgs = get_messages_for(topic, num_messages, schema=schema, namespace=namespace,
                                key_config=kc, decode=not raw, timeout=timeout,
                                cluster=cluster)
    except DeimosError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for m in msgs:
            click.echo(json.dumps({
                "topic": m.topic, "partition": m.partition, "offset": m.offset,
                "timestamp": iso_time(m.timestamp), "timestamp_ms": m.timestamp,
                "key": _show(m.key), "payload": m.payload
                if not isinstance(m.payload, bytes) else _show(m.payload),
                "headers": {k: _show(v) for k, v in m.headers.items()},
            }, default=str, sort_keys=True))
        return
    table = Table(title=f"{topic}: last {len(msgs)} message(s)")
    for col in ("partition", "offset", "timestamp", "key", "payload", "headers"):
        table.add_column(col, overflow="fold")
    for m in msgs:
        table.add_row(str(m.partition), str(m.offset), iso_time(m.timestamp) or "-",
                      escape(_show(m.key)), escape(_show(m.payload)),
                      escape(", ".join(f"{k}={_show(v)}" for k, v in m.headers.items())))
    Console(width=200).print(table)


@cli.command()
@click.argument("group", required=False)
@click.option("--topic", "topics", multiple=True, help="only these topics (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--timeout", default=10.0, show_default=True, help="seconds to wait")
@cluster_option
@click.pass_context
def lag(ctx: click.Context, group: str | None, topics: tuple[str, ...], as_json: bool,
        timeout: float, cluster: str | None) -> None:
    """Print the lag of consumer GROUP (default: every configured consumer's group) per
    topic and partition: committed offset, high watermark and the difference. Each group is
    measured on the cluster its consumers read, unless --cluster names one."""
    from deimos.errors import DeimosError
    from deimos.kafka.config import cluster_settings
    from deimos.lag import PartitionLag, consumer_lag, group_clusters, group_topics

    settings = load_settings(ctx).settings
    configured = group_topics(settings, cluster)
    groups = {group: group_topics(settings).get(group)} if group else dict(configured)
    if not groups:
        raise click.ClickException("no consumer group is configured" + (
            f" on cluster {cluster!r}" if cluster else "") + "; name one: deimos lag GROUP")
    from confluent_kafka import KafkaException

    from deimos.inline import unreachable

    clusters = group_clusters(settings)
    rows: list[PartitionLag] = []
    for g, g_topics in groups.items():
        try:
            on = cluster_settings(settings, cluster or clusters.get(g), where="--cluster")
        except DeimosError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            rows += consumer_lag(g, list(topics) or g_topics, settings=on, timeout=timeout)
        except KafkaException as exc:
            raise click.ClickException(str(unreachable(
                on, f"measuring the lag of group {g}", exc.args[0] if exc.args
                else exc))) from None
    if as_json:
        click.echo(json.dumps([{"group": r.group, "topic": r.topic, "partition": r.partition,
                                "committed": r.committed, "high_watermark": r.high,
                                "lag": r.lag, "inconsistent": r.inconsistent}
                               for r in rows], indent=2))
        return
    table = Table(title="consumer lag")
    for col in ("group", "topic", "partition", "committed", "high watermark", "lag"):
        table.add_column(col, justify="right" if col not in ("group", "topic") else "left")
    for r in rows:
        table.add_row(escape(r.group), escape(r.topic), str(r.partition),
                      "-" if r.committed is None else str(r.committed), str(r.high),
                      f"{r.lag} (!)" if r.inconsistent else str(r.lag))
    table.add_section()
    table.add_row("total", "", "", "", "", str(sum(r.lag for r in rows)))
    Console(width=160).print(table)
    for r in rows:
        if r.inconsistent:
            click.echo(
                f"warning: {r.topic}[{r.partition}]: the broker reports high watermark "
                f"{r.high}, below group {r.group}'s committed offset {r.committed}; the "
                "broker's figure is inconsistent (a broker defect, or the topic was recreated "
                "or truncated), so its lag of 0 is not a measurement", err=True)


@cli.group("schemas")
def schemas_group() -> None:
    """Typed schema classes generated from the Avro schemas under ``schema.path``."""


def _paths(ctx: click.Context, schema_path: str | None, output: str | None) -> tuple[str, str]:
    settings = load_settings(ctx).settings
    return (schema_path or settings.schema.path,
            output or settings.schema.generated_class_path)


@schemas_group.command("generate")
@click.option("--schema-path", default=None, help="default: schema.path")
@click.option("--output", default=None, help="package directory; default: "
              "schema.generated_class_path")
@click.pass_context
def schemas_generate(ctx: click.Context, schema_path: str | None, output: str | None) -> None:
    """Write typed dataclasses for every Avro schema (one module per namespace)."""
    from deimos.schema_classes import generate, write

    src, out = _paths(ctx, schema_path, output)
    changed = write(generate(src), out)
    for path in changed:
        click.echo(f"wrote {path}")
    click.echo(f"schema classes in {out} are up to date ({len(changed)} file(s) changed)")


@schemas_group.command("check")
@click.option("--schema-path", default=None, help="default: schema.path")
@click.option("--output", default=None, help="default: schema.generated_class_path")
@click.option("--against-registry", is_flag=True,
              help="instead: check every producer's and consumer's schema against the "
              "registry's latest version of its subject, under the subject's compatibility "
              "level")
@click.pass_context
def schemas_check(ctx: click.Context, schema_path: str | None, output: str | None,
                  against_registry: bool) -> None:
    """Exit 1 when the generated classes differ from what the schemas generate, or (with
    ``--against-registry``) when a local schema is not compatible with its subject (for CI)."""
    if against_registry:
        _check_registry(ctx)
        return
    from deimos.schema_classes import generate, stale

    src, out = _paths(ctx, schema_path, output)
    problems = stale(generate(src), out)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        click.echo("schema classes are stale: run `deimos schemas generate`", err=True)
        sys.exit(1)
    click.echo(f"schema classes in {out} are up to date")


def _check_registry(ctx: click.Context) -> None:
    from deimos.cli import start_app
    from deimos.errors import DeimosError
    from deimos.runtime import get_runtime
    from deimos.schema.compatibility import check_registry

    load_settings(ctx)
    start_app(ctx)  # the application's producer classes are defined by its imports
    try:
        checks = check_registry(get_runtime())
    except DeimosError as exc:
        click.echo(f"deimos schemas check: {exc}", err=True)
        sys.exit(2)
    for c in checks:
        where = f"{c.subject} ({c.owner}, topic {c.topic})" if c.subject else \
            f"{c.owner}, topic {c.topic}"
        click.echo(f"{c.status:>12}  {where}: {c.detail}", err=c.failed)
    bad = [c for c in checks if c.status == "incompatible"]
    errors = [c for c in checks if c.status == "error"]
    if bad:
        click.echo(f"{len(bad)} schema(s) not compatible with the registry", err=True)
        sys.exit(1)
    if errors:
        click.echo(f"{len(errors)} schema(s) could not be checked", err=True)
        sys.exit(2)
    click.echo(f"{len(checks)} subject(s) checked, none incompatible")
