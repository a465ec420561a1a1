"""The ``xenabi`` command (click; rich tables; ``--json`` for automation).

One module per command group, each loaded only when its command runs (:data:`LAZY_COMMANDS`, click's lazy-group
pattern), so ``xenabi --help`` imports none of them; the shared helpers are in :mod:`xenabi.cli.common`, which
imports no command module. No command lets a traceback reach the user: an error the project raises on purpose is
one ``error:`` line (or an ``{"error": ...}`` document with ``--json``) and exit 1; anything else is reported as an
internal error with its type and message, exit 2 (``XENABI_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from xenabi import __version__
from xenabi.cli.common import expected_error, visible

LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "features": ("xenabi.cli.registry", "features", "The ABI feature registry: every feature, its flag and gates."),
    "demo": ("xenabi.cli.demo", "demo", "Run the scenarios that motivated ABI control, uncontrolled and controlled."),
    "config": ("xenabi.cli.config", "config", "Domain configurations (xl.cfg): what one means on a host."),
    "save": ("xenabi.cli.streams", "save", "Create and start the VM of CONFIG, then save it to OUT."),
    "restore": ("xenabi.cli.streams", "restore", "Restore an xl save file into a fresh model host."),
    "stream": ("xenabi.cli.streams", "stream", "Xen save and migration streams."),
    "host": ("xenabi.cli.streams", "host", "Run a model host."),
    "migrate": ("xenabi.cli.streams", "migrate", "Boot FILE on a local model host and migrate it to --to."),
    "fleet": ("xenabi.cli.fleet", "fleet", "Fleet planning: where VMs may run, levelled defaults, safe upgrades."),
    "releases": ("xenabi.cli.releases", "releases", "The Xen releases the model knows, and what changes between two."),
}
"""Command name -> (module, attribute, one-line help): loaded only when that command runs, so ``xenabi --help`` and
``xenabi stream verify`` import neither the fleet nor the toolstack (click's lazy-group pattern)."""


class XenabiGroup(click.Group):
    """The top-level group: commands load lazily, and every command runs inside the one place that turns exceptions
    into messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, attribute, _help = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the declared one-line helps, without importing the lazy modules."""
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][2]))
            else:
                command = super().get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if expected_error(exc):
                click.echo(f"error: {visible(str(exc))}", err=True)
                sys.exit(1)
            if os.environ.get("XENABI_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(exc).__name__}: {visible(str(exc))} (a bug in xenabi: please report it; "
                "XENABI_DEBUG=1 shows where)",
                err=True,
            )
            sys.exit(2)


@click.group(cls=XenabiGroup)
@click.version_option(__version__, prog_name="xenabi")
def main() -> None:
    """Per-domain guest ABI feature control for Xen: model and toolkit."""
