"""``xenabi fleet``: the inventory and the planner (``xenabi.fleet``). Tables by default, ``--json`` for automation;
progress bars only on a terminal and never with ``--json``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.progress import Progress

from xenabi.cli.common import console, fail, json_option, new_table, styled, visible
from xenabi.errors import InventoryError, XenabiError


def _db_default() -> str:
    from xenabi.fleet.inventory import DEFAULT_DB

    return os.environ.get("XENABI_FLEET_DB", DEFAULT_DB)


db_option = click.option("--db", default=_db_default, show_default="$XENABI_FLEET_DB or xenabi-fleet.sqlite",
                         help="The inventory's SQLite file.")  # fmt: skip


@contextlib.contextmanager
def _progress(label: str, total: int | None, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    if quiet or not sys.stdout.isatty():
        yield None
        return
    with Progress(console=console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _open(db: str) -> Any:
    from xenabi.fleet.inventory import Inventory

    return Inventory(db)


@click.group()
def fleet() -> None:
    """Fleet planning: where VMs may run, levelled pool defaults, safe rolling upgrades."""


@fleet.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Empty the inventory first (in the same transaction as the import).")
@db_option
@json_option
def fleet_import(files: tuple[str, ...], replace: bool, db: str, as_json: bool) -> None:
    """Import hosts and VMs from CSV or JSON FILES, all of them or none: one command is one transaction."""
    try:
        with _open(db) as inv, _progress("importing", None, as_json) as tick:
            counts = inv.import_files(files, replace=replace, progress=tick)
            done = [{"file": path, "hosts": h, "vms": v} for path, (h, v) in zip(files, counts, strict=True)]
            totals = inv.counts()
    except (InventoryError, OSError) as exc:
        fail(exc, as_json)
    doc = {"imported": done, "inventory": {"hosts": totals[0], "vms": totals[1]}}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for item in done:
        click.echo(f"{visible(item['file'])}: {item['hosts']:,} hosts, {item['vms']:,} VMs")
    click.echo(f"inventory {visible(db)}: {totals[0]:,} hosts, {totals[1]:,} VMs")


@fleet.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--out", default="-", help="JSON output file (- for stdout); for csv, the prefix of two files.")
@db_option
def fleet_export(fmt: str, out: str, db: str) -> None:
    """Write the inventory as JSON, or as hosts and VMs CSV files (OUT-hosts.csv, OUT-vms.csv)."""
    with _open(db) as inv:
        if fmt == "json":
            text = json.dumps(inv.export_json(), indent=1)
            if out == "-":
                click.echo(text)
            else:
                with open(out, "w", encoding="utf-8") as stream:
                    stream.write(text + "\n")
            return
        prefix = "fleet" if out == "-" else out
        with open(f"{prefix}-hosts.csv", "w", encoding="utf-8") as hosts, open(f"{prefix}-vms.csv", "w",
                                                                                encoding="utf-8") as vms:  # fmt: skip
            inv.export_csv(hosts, vms)
        click.echo(f"wrote {prefix}-hosts.csv and {prefix}-vms.csv")


@fleet.command("synth")
@click.option("--vms", default=100_000, show_default=True, type=click.IntRange(0), help="How many VMs.")
@click.option("--hosts", default=1_000, show_default=True, type=click.IntRange(1),
              help="How many hosts (pools of about 500 each).")  # fmt: skip
@click.option("--seed", default=1, show_default=True, help="The random seed: the same seed makes the same fleet.")
@db_option
@json_option
def fleet_synth(vms: int, hosts: int, seed: int, db: str, as_json: bool) -> None:
    """Replace the inventory with a realistic synthetic fleet (mixed releases, some hosts with ABI control)."""
    with _open(db) as inv, _progress("generating VMs", vms, as_json) as tick:
        inv.synth(vms, hosts, seed=seed, progress=tick)
        counts = inv.counts()
    doc = {"db": db, "hosts": counts[0], "vms": counts[1]}
    click.echo(json.dumps(doc) if as_json else f"inventory {db}: {counts[0]:,} hosts, {counts[1]:,} VMs")


@fleet.command("where")
@click.argument("vm")
@click.option("--examples", default=3, show_default=True, help="Host names shown per admitting class.")
@db_option
@json_option
def fleet_where(vm: str, examples: int, db: str, as_json: bool) -> None:
    """Every host VM may move to without its environment changing, and why the others refuse."""
    from xenabi.fleet.planner import where

    try:
        with _open(db) as inv:
            placement = where(inv, vm, examples=examples)
    except InventoryError as exc:
        fail(exc, as_json)
    doc = placement.to_json()
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    out = console()
    out.print(f"{vm} ({doc['guest_type']}, {doc['policy']}) on {doc['host']}: may move to "
                  f"{doc['admissible_hosts']:,} hosts", highlight=False)  # fmt: skip
    table = new_table()
    for column in ("hosts", "class", "verdict"):
        table.add_column(column)
    for row in doc["admissible"]:
        table.add_row(f"{row['hosts']:,}", _class(row), "admits: e.g. " + ", ".join(row["examples"]))
    for row in doc["refused"]:
        table.add_row(f"{row['hosts']:,}", _class(row), "refuses: " + "; ".join(r["reason"] for r in row["reasons"]))
    out.print(table)


def _class(row: dict[str, Any]) -> str:
    return f"Xen {row['release']} {'with' if row['abi_control'] else 'without'} ABI control"


@fleet.command("summary")
@db_option
@json_option
def fleet_summary(db: str, as_json: bool) -> None:
    """Admission for the whole fleet, by class of VM: how many hosts may take them, and who refuses."""
    from xenabi.fleet.planner import summary

    with _open(db) as inv:
        rows = [s.to_json() for s in summary(inv)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = new_table(title="admission by VM class")
    for column in ("guest type", "policy", "VMs", "admitting hosts", "VMs already on a refusing host"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["guest_type"], row["policy"], f"{row['vms']:,}", f"{row['admissible_hosts']:,}",
                      f"{row['stranded_vms']:,}")  # fmt: skip
    console().print(table)


@fleet.command("level")
@click.argument("pool")
@db_option
@json_option
def fleet_level(pool: str, db: str, as_json: bool) -> None:
    """The policy new VMs in POOL should be pinned to so that every host of the pool admits them."""
    from xenabi.fleet.planner import level

    try:
        with _open(db) as inv:
            rows = [item.to_json() for item in level(inv, pool)]
    except InventoryError as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = new_table(title=f"levelled default for pool {pool}")
    for column in ("guest type", "hosts", "policy", "what keeps it from being richer"):
        table.add_column(column)
    for row in rows:
        policy = row["xl"] if row["policy"] is not None else f"none possible: {row['conflict']}"
        limits = "\n".join(f"{f}: {', '.join(c)}" for f, c in row["limited_by"].items()) or "-"
        table.add_row(row["guest_type"], f"{row['hosts']:,}", policy, limits)
    console().print(table)


@fleet.command("plan-upgrade")
@click.option("--hosts", "host_list", default="", help="Comma-separated host names to upgrade.")
@click.option("--pool", default=None, help="Upgrade every host of this pool.")
@click.option("--to", "release", required=True,
              help="The release the hosts move to: 4.3 to 4.22, or a point release such as 4.14.1.")  # fmt: skip
@click.option("--abi-control/--no-abi-control", default=False, show_default=True,
              help="Whether the upgraded hosts have ABI control.")  # fmt: skip
@click.option("--steps", default=20, show_default=True, help="Steps to print (all with --json).")
@db_option
@json_option
def fleet_plan_upgrade(host_list: str, pool: str | None, release: str, abi_control: bool, steps: int, db: str,
                       as_json: bool) -> None:  # fmt: skip
    """Plan an in-place upgrade: who would see its ABI change, where to evacuate it first, in what order; exit 1
    when the plan is unsafe (some VM has nowhere to go)."""
    from xenabi.fleet.planner import plan_upgrade

    try:
        with _open(db) as inv:
            names = [name.strip() for name in host_list.split(",") if name.strip()]
            if pool is not None:
                names += [
                    row[0] for row in inv.db.execute("SELECT name FROM hosts WHERE pool = ? ORDER BY id", (pool,))
                ]
                if not names:
                    raise InventoryError(f"no pool named {pool!r}", field="pool")
            if not names:
                raise InventoryError("name the hosts to upgrade (--hosts or --pool)", field="hosts")
            with _progress("planning", len(names), as_json) as tick:
                plan = plan_upgrade(inv, names, release, abi_control, progress=tick)
    except (InventoryError, XenabiError) as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(plan.to_json(), indent=2))
        sys.exit(0 if plan.safe else 1)
    out = console()
    verdict = styled("safe", "green") if plan.safe else styled(
        f"UNSAFE: {plan.stranded_vms:,} VMs have nowhere to go", "red")  # fmt: skip
    out.print(f"upgrade {plan.hosts:,} hosts to {plan.target}: {plan.vms_on_hosts:,} VMs on them, "
                  f"{plan.affected_vms:,} would see their ABI change and move first;", verdict)  # fmt: skip
    # What matters first: the hosts whose VMs would be stranded, then those whose VMs move; their step numbers are
    # the plan's order. Hosts with nothing to do are only counted.
    numbered = list(enumerate(plan.steps, start=1))
    stranding = [(n, step) for n, step in numbered if step.stranded]
    moving = [(n, step) for n, step in numbered if step.evacuate and not step.stranded]
    shown = (stranding + moving)[:steps]
    idle = len(plan.steps) - len(stranding) - len(moving)
    table = new_table(title=f"steps that strand or move VMs ({len(shown)} of {len(stranding) + len(moving)}; "
                         f"{idle} of {len(plan.steps)} hosts need nothing)")  # fmt: skip
    for column in ("#", "host", "evacuate first", "stranded"):
        table.add_column(column)
    for number, step in shown:
        moves = "\n".join(f"{e['vms']} {e['guest_type']} {e['policy']} -> {e['example']} ({e['to'][0]}...)"
                          for e in step.evacuate) or "-"  # fmt: skip
        stuck = "\n".join(f"{e['vms']} {e['guest_type']} {e['policy']}" for e in step.stranded) or "-"
        table.add_row(str(number), step.host, moves, stuck)
    out.print(table)
    for row in plan.unmovable_after:
        out.print(f"after the upgrade, {row['vms']:,} {row['guest_type']} {row['policy']} VMs can run on only "
                      f"{row['admissible_hosts_after']} host(s) (before: {row['admissible_hosts_before']:,})",
                      highlight=False)  # fmt: skip
    sys.exit(0 if plan.safe else 1)
