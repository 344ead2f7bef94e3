"""``deimos protobuf key-protos`` (added through ``deimos_cli_commands``)."""

from __future__ import annotations

import sys

import click


@click.group("protobuf")
def protobuf_group() -> None:
    """Protobuf schema tools of deimos-protobuf."""


@protobuf_group.command("key-protos")
@click.option("--output", default=None,
              help="directory to write to (default: protobuf.key_proto_path, else schema.path)")
@click.pass_context
def key_protos(ctx: click.Context, output: str | None) -> None:
    """Write the key message of every Protobuf producer and consumer with a `field` key
    config as a .proto file (`com/example/Widget_key.proto`), the message registered under
    its key subject."""
    from deimos.cli import load_settings, start_app
    from deimos.errors import DeimosError
    from deimos.runtime import get_runtime

    from .key_protos import key_messages, write_key_protos
    from .settings import ProtobufSettings

    settings = load_settings(ctx).settings
    start_app(ctx)  # the application's producer classes are defined by its imports
    section = getattr(settings, "protobuf", None)
    configured = section.key_proto_path if isinstance(section, ProtobufSettings) else None
    root = output or configured or settings.schema.path
    try:
        runtime = get_runtime()
        found = key_messages(runtime)
        changed = write_key_protos(runtime, root)
    except DeimosError as exc:
        click.echo(f"deimos protobuf key-protos: {exc}", err=True)
        sys.exit(2)
    for path in changed:
        click.echo(f"wrote {path}")
    for name, (desc, users) in sorted(found.items()):
        click.echo(f"{desc.full_name} ({name}): {', '.join(users)}")
    click.echo(f"{len(found)} key message(s) in {root}, {len(changed)} file(s) changed")
