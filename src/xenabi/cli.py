"""The ``xenabi`` command (click; rich tables; ``--json`` for automation).

Output is literal: every string a user supplied (VM, host and pool names, file names, config values, messages that
quote them) is printed as it is, never read as Rich markup or emoji codes, and its control characters are shown
escaped (``\x1b``) so that a name cannot move the cursor or recolour the terminal. Colour comes only from styles
the code sets on :class:`~rich.text.Text`. No command lets a traceback reach the user: an error the project raises on
purpose is one ``error:`` line (or an ``{"error": ...}`` document with ``--json``) and exit 1; anything else is
reported as an internal error with its type and message, exit 2 (``XENABI_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import unicodedata
from functools import cache
from typing import TYPE_CHECKING, Any

import click

from xenabi import __version__
from xenabi.abi.evtchn import EvtchnOp
from xenabi.abi.features import REGISTRY
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERCALL_NAMES, HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


def _op_name(op: int, cmd: int) -> str:
    if op == HYPERVISOR_event_channel_op and cmd in EvtchnOp._value2member_map_:
        return f"EVTCHNOP_{EvtchnOp(cmd).name}"
    if op == HYPERVISOR_hvm_op and cmd == HVMOP_set_evtchn_upcall_vector:
        return "HVMOP_set_evtchn_upcall_vector"
    return f"{HYPERCALL_NAMES.get(op, op)}:{cmd}"


def visible(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1, and the bidirectional overrides) written as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf"):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


@cache
def _literal_console_class() -> type[Console]:
    """Rich is imported only by a command that prints a table (``--help`` and the JSON paths never load it)."""
    from rich.console import Console

    class LiteralConsole(Console):
        """A console that prints strings literally: no markup, no emoji codes, no highlighting, control characters
        escaped."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

        def render_str(self, text: str, **kwargs: Any) -> Text:
            return super().render_str(visible(text), **kwargs)

    return LiteralConsole


def _console() -> Console:
    """On a terminal, tables fit it; piped, prose is never wrapped (soft wrap) and tables are 120 columns wide."""
    literal = _literal_console_class()
    probe = literal()
    if probe.is_terminal:
        return literal(soft_wrap=False)
    return literal(soft_wrap=True, width=120)


def styled(text: str, style: str) -> Text:
    """A user-visible string in a style, printed literally."""
    from rich.text import Text

    return Text(visible(text), style=style)


def table_(**kwargs: Any) -> Any:
    """A rich Table (imported on first use)."""
    from rich.table import Table

    return Table(**kwargs)


LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "save": ("xenabi.cli_streams", "save", "Create and start the VM of CONFIG, then save it to OUT."),
    "restore": ("xenabi.cli_streams", "restore", "Restore an xl save file into a fresh model host."),
    "stream": ("xenabi.cli_streams", "stream", "Xen save and migration streams."),
    "host": ("xenabi.cli_streams", "host", "Run a model host."),
    "migrate": ("xenabi.cli_streams", "migrate", "Boot FILE on a local model host and migrate it to --to."),
    "fleet": ("xenabi.cli_fleet", "fleet", "Fleet planning: where VMs may run, levelled defaults, safe upgrades."),
    "releases": ("xenabi.cli_releases", "releases", "The Xen releases the model knows, and what changes between two."),
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
            if _expected(exc):
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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
@click.option(
    "--release",
    default=None,
    help="Show each create flag's bit on this release (4.3 to 4.22, or a point release such as 4.14.1).",
)
def features(as_json: bool, release: str | None) -> None:
    """The ABI feature registry: every feature, its create flag and the operations it gates. With --release, the
    bit each feature's create flag takes on that release: the series' bit (7, 8) unless Xen gave it to a flag of
    its own there (vpmu 4.16, trap_unmapped_accesses 4.21), which is the review's scalability objection."""
    from xenabi.errors import PolicyError
    from xenabi.releases import get_release

    try:
        host = get_release(release) if release is not None else None
    except PolicyError as exc:
        _fail(exc, as_json)
    placed = host.series_cdf_bits() if host is not None else {}
    rows: list[dict[str, Any]] = [
        {
            "name": row.name,
            "bit": row.bit,
            "since": row.since_name,
            "cdf_flag": f"XEN_DOMCTL_CDF_{row.name}",
            "cdf_bit": row.cdf_bit if host is None else placed.get(row.name),
            "guest_types": sorted(t.value for t in row.guest_types),
            "gates": sorted(_op_name(op, cmd) for op, cmd in row.gates),
            "summary": row.summary,
        }
        for row in REGISTRY
    ]
    if host is not None:
        for doc in rows:
            owner = next((name for name, bit in host.cdf_bits.items() if bit == REGISTRY[doc["name"]].cdf_bit), None)
            doc["release"] = host.name
            doc["series_bit_taken_by"] = owner
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    title = "ABI feature registry" + (f" on Xen {host.name} (with ABI control)" if host is not None else "")
    table = table_(title=title)
    for column in ("feature", "bit", "since", "create flag", "guest types", "gates"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            str(row["bit"]),
            f"Xen {row['since']}",
            _flag_cell(row),
            ", ".join(row["guest_types"]),
            "\n".join(row["gates"]),
        )
    _console().print(table)


def _flag_cell(row: dict[str, Any]) -> str:
    if row["cdf_bit"] is None:
        return "not implemented"
    cell = f"{row['cdf_flag']} (bit {row['cdf_bit']})"
    if row.get("series_bit_taken_by"):
        cell += f"; the series' bit {REGISTRY[row['name']].cdf_bit} is {row['series_bit_taken_by']} here"
    return cell


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--scenario", "names", multiple=True, help="Run only this scenario (repeatable).")
@click.option("--rounds", default=50, show_default=True, help="Rounds of traffic in each phase of a scenario.")
@click.option("-v", "--verbose", is_flag=True, help="Print each run's steps.")
def demo(as_json: bool, names: tuple[str, ...], rounds: int, verbose: bool) -> None:
    """Run the scenarios that motivated ABI control on uncontrolled and controlled hosts; exit 0 when every
    controlled run is safe (fine, or refused before anything changed)."""
    from xenabi.scenarios import SCENARIO_NAMES, SCENARIOS, run_all

    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIO_NAMES)})")
    results = run_all(tuple(names) or SCENARIO_NAMES, rounds=rounds)
    safe = all(r.safe for r in results if r.host == "controlled")
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
        sys.exit(0 if safe else 1)
    summaries = {s.name: s.summary for s in SCENARIOS}
    table = table_(title="xenabi demo: what each guest went through (every figure computed by the model)")
    for column in ("scenario", "host", "kernel", "sent", "handled", "lost", "ABI changed", "outcome"):
        table.add_column(column, justify="right" if column in ("sent", "handled", "lost") else "left")
    colours = {"fine": "green", "refused": "yellow", "hung": "red", "crashed": "red"}
    for r in results:
        table.add_row(
            r.scenario,
            r.host,
            r.kernel,
            str(r.sent),
            str(r.handled),
            str(r.lost),
            "yes" if r.fingerprint_changed else "no",
            styled(r.outcome, colours[r.outcome]),
        )
    console = _console()
    console.print(table)
    for r in results:
        console.print(styled(r.scenario, "bold"), f"({summaries[r.scenario]}), {r.host}: {r.outcome}: {r.detail}")
        if verbose:
            for step in r.steps:
                console.print(f"    {step}")
    verdict = "every controlled run is safe" if safe else "a controlled run was NOT safe"
    console.print(f"\n{verdict}")
    sys.exit(0 if safe else 1)


@main.group()
def config() -> None:
    """Domain configurations (xl.cfg)."""


@config.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--release", default="4.14", show_default=True,
              help="Xen release of the host: 4.3 to 4.22, or a point release such as 4.14.1.")  # fmt: skip
@click.option("--no-abi-control", is_flag=True, help="The host cannot hide features (a Xen without the series).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def config_show(file: str, release: str, no_abi_control: bool, as_json: bool) -> None:
    """Parse FILE and show what it means on a host: policy, create flags, CPUID leaves, hypfs view."""
    from xenabi.errors import XenabiError
    from xenabi.policy import get_release
    from xenabi.toolstack import DomainConfig, xlcfg
    from xenabi.toolstack.report import config_report

    try:
        get_release(release)
        parsed = xlcfg.parse(xlcfg.read_file(file), file)
        cfg = DomainConfig.from_xlcfg(parsed)
        report = config_report(cfg, release, not no_abi_control) | {"warnings": parsed.warnings}
    except (XenabiError, OSError) as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for warning in parsed.warnings:
            click.echo(f"warning: {warning}", err=True)
        _print_config_report(report)
    sys.exit(1 if report["refused"] else 0)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _fail(exc: Exception, as_json: bool) -> None:
    """Report an error (structured with --json, with every admission reason) and exit 1."""
    doc = _error_json(exc)
    reasons = getattr(exc, "reasons", None)
    if reasons is not None:
        doc["reasons"] = [r.to_json() for r in reasons]
    if as_json:
        click.echo(json.dumps({"error": doc}, indent=2))
    else:
        click.echo(f"error: {visible(str(exc))}", err=True)
    sys.exit(1)


def _error_json(exc: Exception) -> dict[str, object]:
    doc: dict[str, object] = {"type": type(exc).__name__, "message": str(exc)}
    for attr in ("line", "column", "key", "value", "source", "name"):
        if getattr(exc, attr, None) is not None:
            doc[attr] = getattr(exc, attr)
    return doc


def _print_config_report(report: dict[str, object]) -> None:
    console = _console()
    host = report["host"]
    assert isinstance(host, dict)
    kind = "with ABI control" if host["abi_control"] else "without ABI control"
    cfg = report["config"]
    assert isinstance(cfg, dict)
    console.print(styled(cfg["c_info"]["name"], "bold"), f"({cfg['c_info']['type']}) on Xen {host['release']} {kind}")
    requested = report["requested_policy"]
    assert isinstance(requested, dict)
    console.print(f"requested features: {', '.join(requested['features']) or '(none)'}")
    refused = report["refused"]
    assert isinstance(refused, list)
    if refused:
        console.print(styled("refused before anything was created:", "red"))
        for reason in refused:
            console.print(f"  - {reason['reason']}")
        return
    policy = report["policy"]
    assert isinstance(policy, dict)
    table = table_(title="effective policy")
    table.add_column("field")
    table.add_column("value")
    table.add_row("features", ", ".join(policy["features"]) or "(none)")
    for key in ("max_evtchn_port", "max_grant_frames", "max_maptrack_frames"):
        table.add_row(key, str(policy[key]))
    flags = report["create_flags"]
    assert isinstance(flags, dict)
    table.add_row("create flags", f"{flags['value']} = " + (" | ".join(flags["names"]) or "(none)"))
    table.add_row("stored config", "pinned" if report["pinned"] else "not pinned (legacy toolstack)")
    console.print(table)
    cpuid = table_(title="hypervisor CPUID leaves (vCPU 0)")
    for column in ("leaf", "eax", "ebx", "ecx", "edx"):
        cpuid.add_column(column)
    leaves = report["cpuid"]
    assert isinstance(leaves, list)
    for row in leaves:
        cpuid.add_row(row["leaf"], *row["regs"])
    console.print(cpuid)
    nodes = report["hypfs"]
    assert isinstance(nodes, list)
    if nodes:
        hypfs = table_(title="hypfs (as dom0 reads it)")
        for column in ("path", "type", "value", "writable"):
            hypfs.add_column(column)
        for node in nodes:
            hypfs.add_row(
                node["path"], node["type"], str(node["value"]), "until first unpause" if node["writable"] else "no"
            )
        console.print(hypfs)
    else:
        console.print("hypfs: no per-domain abi-features tree on this host")
    console.print(styled("stored config", "bold"))
    console.print(str(report["stored_config"]))


def _expected(exc: Exception) -> bool:
    """An error raised on purpose (the project's own, the operating system's, the inventory database's): a clear
    one-line message, not an internal error."""
    from xenabi.errors import XenabiError

    sqlite3 = sys.modules.get("sqlite3")  # only a command that opened an inventory can raise its errors
    return isinstance(exc, XenabiError | OSError) or (sqlite3 is not None and isinstance(exc, sqlite3.Error))


# The command groups in their own modules are loaded on demand (LAZY_COMMANDS).
