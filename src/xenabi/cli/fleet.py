"""``xenabi fleet``: the inventory and the planner (``xenabi.fleet``). Tables by default, ``--json`` for automation;
progress bars only on a terminal and never with ``--json``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.progress import Progress

from xenabi.cli.common import console, fail, json_option, new_table, styled, visible
from xenabi.errors import InventoryError, XenabiError


def _db_default() -> str:
    from xenabi.fleet.inventory import DEFAULT_DB

    return os.environ.get("XENABI_FLEET_DB", DEFAULT_DB)


STRANDED_LISTED = 50  # stranded VMs printed in the table (the count is always the whole number)
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


def _write_whole(path: str, write: Callable[[IO[str]], object]) -> None:
    """Write a file whole or not at all: into a hidden partial file beside it, renamed over it when complete (a
    plan or report cut short by a full disk or an interrupt never looks like a finished one)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.xenabi-partial")
    try:
        with partial.open("w", encoding="utf-8") as stream:
            write(stream)
        os.replace(partial, target)
    except OSError as exc:
        raise InventoryError(f"cannot write it: {exc.strerror or exc}", file=path) from exc
    finally:
        partial.unlink(missing_ok=True)


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
    from xenabi.fleet.planner import HostClass

    return str(HostClass(row["release"], row["abi_control"], row["gnttab_max_version"]))


@fleet.command("summary")
@click.option("--html", "html_out", default=None, help="Also write the admission matrix as a self-contained HTML file.")
@db_option
@json_option
def fleet_summary(html_out: str | None, db: str, as_json: bool) -> None:
    """Admission for the whole fleet, by class of VM: how many hosts may take them, and who refuses."""
    from xenabi.fleet.planner import summary

    with _open(db) as inv:
        rows = [s.to_json() for s in summary(inv)]
        if html_out is not None:
            from xenabi.fleet.report import matrix_report

            _write_whole(html_out, lambda stream: stream.write(matrix_report(inv)))
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
@click.option(
    "--max-parallel",
    default="1",
    show_default=True,
    help="Hosts of a pool upgraded at a time: a number, or a percentage of the pool such as 10%.",
)
@click.option(
    "--suspend-in-place",
    is_flag=True,
    help="Suspend and resume the VMs the new release admits on their host instead of migrating them.",
)
@click.option("--across-pools", is_flag=True, help="Let VMs migrate to hosts of other pools.")
@click.option("--out", "out", default=None, help="Write the plan file (every step; - for stdout).")
@click.option("--html", "html_out", default=None, help="Write a self-contained HTML report.")
@click.option("--waves", "shown", default=20, show_default=True, help="Waves to print.")
@db_option
@json_option
def fleet_plan_upgrade(host_list: str, pool: str | None, release: str, abi_control: bool, max_parallel: str,
                       suspend_in_place: bool, across_pools: bool, out: str | None, html_out: str | None, shown: int,
                       db: str, as_json: bool) -> None:  # fmt: skip
    """Plan a rolling upgrade in waves: every VM on an upgraded host is migrated to a host with room that admits it
    (or suspended in place), first-fit decreasing by memory. Exit 1 when some VM has nowhere to go."""
    from xenabi.fleet.planfile import stranded_rows, wave_head, write_plan
    from xenabi.fleet.report import upgrade_report
    from xenabi.fleet.upgrade import plan_upgrade

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
                plan = plan_upgrade(inv, names, release, abi_control, max_parallel=max_parallel,
                                    suspend_in_place=suspend_in_place, across_pools=across_pools,
                                    progress=tick)  # fmt: skip
            if out == "-":
                write_plan(plan, inv, sys.stdout)
            elif out is not None:
                _write_whole(out, lambda stream: write_plan(plan, inv, stream))
            if html_out is not None:
                _write_whole(html_out, lambda stream: stream.write(upgrade_report(plan, inv)))
            stranded = stranded_rows(plan, inv)
    except (InventoryError, XenabiError) as exc:
        fail(exc, as_json)
    summary = plan.summary()
    if as_json:
        waves = [{**wave_head(plan, w), "hosts": len(w.hosts)} for w in plan.waves]
        doc = {"summary": summary, "waves": waves, "stranded": stranded,
               "blocked_hosts": [plan.host_names[h] for h in plan.blocked_hosts], "notes": plan.notes}  # fmt: skip
        if out != "-":
            click.echo(json.dumps(doc, indent=2))
        sys.exit(0 if plan.complete else 1)
    if out == "-":
        sys.exit(0 if plan.complete else 1)
    _print_plan(plan, summary, stranded, shown, out, html_out)
    sys.exit(0 if plan.complete else 1)


def _print_plan(plan: Any, summary: dict[str, Any], stranded: list[dict[str, Any]], shown: int, out: str | None,
                html_out: str | None) -> None:  # fmt: skip
    con = console()
    verdict = styled("complete", "green") if plan.complete else styled(
        f"IMPOSSIBLE as asked: {len(stranded):,} VMs have nowhere to go, "
        f"{summary['blocked_hosts']:,} hosts cannot be upgraded", "red")  # fmt: skip
    con.print(f"upgrade {summary['hosts']:,} hosts to {plan.target}: {summary['upgraded_hosts']:,} upgraded in "
              f"{summary['waves']:,} waves of at most "
              f"{plan.max_parallel} per {'fleet' if plan.across_pools else 'pool'}: {summary['vms_on_hosts']:,} VMs "
              f"on them, {summary['migrations']:,} migrations ({summary['moved_twice']:,} moving a VM again), "
              f"{summary['suspends']:,} suspended in place;", verdict, highlight=False)  # fmt: skip
    table = new_table(title=f"waves ({min(shown, len(plan.waves))} of {len(plan.waves)}; first-fit decreasing by "
                      "memory)")  # fmt: skip
    for column in ("wave", "hosts upgraded", "migrations", "suspended", "MiB free while it runs", "tightest pool"):
        table.add_column(column)
    for wave in plan.waves[:shown]:
        table.add_row(str(wave.number), f"{len(wave.hosts):,}", f"{wave.migrations:,}", f"{wave.suspends:,}",
                      f"{wave.headroom_mib:,}", f"{wave.tightest_pool} ({wave.tightest_headroom_mib:,})")  # fmt: skip
    con.print(table)
    if stranded:
        listed = stranded[:STRANDED_LISTED]
        more = f"; the first {len(listed)} here, all with --json or --out" if len(listed) < len(stranded) else ""
        table = new_table(title=f"stranded VMs ({len(stranded):,}{more}): the plan cannot upgrade their hosts")
        for column in ("VM", "host", "class", "MiB", "vCPUs", "why"):
            table.add_column(column)
        for row in listed:
            table.add_row(row["vm"], row["host"], f"{row['guest_type']} {row['policy']}", f"{row['memory_mib']:,}",
                          str(row["vcpus"]), row["reason"])  # fmt: skip
        con.print(table)
    for note in plan.notes:
        con.print(f"note: {note}", highlight=False)
    if plan.over_capacity_hosts:
        con.print(f"note: {len(plan.over_capacity_hosts):,} hosts are already over their capacity in the inventory; "
                  "they take no VM", highlight=False)  # fmt: skip
    for label, path in (("plan", out), ("report", html_out)):
        if path is not None:
            con.print(f"{label} written to {visible(path)}", highlight=False)


@fleet.group("plan")
def fleet_plan() -> None:
    """Saved upgrade plans."""


@fleet_plan.command("verify")
@click.argument("plan_file", metavar="PLAN.json")
@db_option
@json_option
def fleet_plan_verify(plan_file: str, db: str, as_json: bool) -> None:
    """Replay a saved plan against the inventory as it is now: capacity and admission at every step. Exit 0 when
    every step replays and the plan is complete, 1 otherwise (the first step that breaks, and why)."""
    from xenabi.fleet.planfile import verify_plan

    try:
        with _open(db) as inv:
            verdict = verify_plan(inv, plan_file)
    except InventoryError as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2))
        sys.exit(0 if verdict.complete else 1)
    if verdict.failure is not None:
        failure = verdict.failure
        click.echo(f"{visible(plan_file)}:{failure.line} [{failure.field}]: {visible(str(failure))}", err=True)
        click.echo(f"the plan does not replay: {verdict.steps:,} steps ran before this one")
        sys.exit(1)
    click.echo(f"{visible(plan_file)}: all {verdict.steps:,} steps of {verdict.waves:,} waves replay against "
               f"{visible(db)}")  # fmt: skip
    if not verdict.complete:
        click.echo(f"but the plan is incomplete: {verdict.stranded:,} VMs stranded, {verdict.blocked:,} hosts not "
                   "upgraded")  # fmt: skip
        sys.exit(1)
