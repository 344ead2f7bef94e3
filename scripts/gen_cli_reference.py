"""Write docs/cli.md from the ``deimos`` command line (core and plugin commands).

    uv run python scripts/gen_cli_reference.py          # rewrite the page
    uv run python scripts/gen_cli_reference.py --check  # exit 1 when the page is stale

core/tests/test_docs.py runs the check, so a command or option cannot be added, renamed or
re-documented without the reference following.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click
import generated_page

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/gen_cli_reference.py -->"
END = "<!-- END GENERATED -->"


def _root() -> click.Group:
    from deimos import cli, commands  # noqa: F401  (core commands register on import)

    cli._add_plugin_commands()
    return cli.cli


def _param_row(param: click.Parameter, command: str) -> str | None:
    if not isinstance(param, click.Option) or param.hidden:
        return None
    if not param.help:
        raise SystemExit(f"option {'/'.join(param.opts)} of `{command}` has no help text: "
                         "users read it in --help and in docs/cli.md")
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    kind = "flag" if param.is_flag else param.type.name.lower()
    if isinstance(param.type, click.Choice):
        kind = " \\| ".join(f"`{c}`" for c in param.type.choices)
    default = param.default
    unset = default in (None, False, ()) or callable(default) or "UNSET" in repr(default)
    shown = "" if unset or param.is_flag else f"`{default}`"
    help_text = param.help
    if param.envvar and "env " not in help_text:
        env = param.envvar if isinstance(param.envvar, str) else ", ".join(param.envvar)
        help_text = f"{help_text} (env `{env}`)"
    help_text = help_text.replace("|", "\\|").replace("\n", " ")
    return f"| {names} | {kind} | {shown} | {help_text} |"


def _section(cmd: click.Command, path: list[str], ctx: click.Context) -> list[str]:
    name = " ".join(path)
    out = [f"## `{name}`", ""]
    doc = inspect.cleandoc(cmd.help or "").split("\f")[0].strip()
    if doc:
        out += [click.unstyle(doc), ""]
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    out += ["```text", f"{name} {usage}".rstrip(), "```", ""]
    args = [p for p in cmd.params if isinstance(p, click.Argument)]
    if args:
        out += ["Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in args), ""]
    rows = [r for p in cmd.params if (r := _param_row(p, name))]
    if rows:
        out += ["| option | type | default | description |", "|---|---|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        for sub_name in sorted(cmd.commands):
            sub = cmd.commands[sub_name]
            if sub.hidden:
                continue
            out += _section(sub, [*path, sub_name], click.Context(sub, parent=ctx,
                                                                   info_name=sub_name))
    return out


def generate() -> str:
    root = _root()
    ctx = click.Context(root, info_name="deimos")
    return "\n".join(_section(root, ["deimos"], ctx)).rstrip() + "\n"


def main(argv: list[str]) -> int:
    return generated_page.main(argv, PAGE, BEGIN, END, generate, "scripts/gen_cli_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
