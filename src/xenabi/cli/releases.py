"""``xenabi releases [diff A B]``: what each Xen release shows a guest, and what changes between two of them
(``xenabi.releases``). Tables by default, ``--json`` for automation."""

from __future__ import annotations

import json
from typing import Any

import click

from xenabi.abi.features import REGISTRY
from xenabi.cli.common import console, fail, json_option, new_table
from xenabi.errors import PolicyError
from xenabi.releases import (
    CHANGES,
    LINES,
    NOT_MODELLED,
    Change,
    Release,
    behaviour,
    changes_between,
    get_release,
    table_releases,
)


def _value(value: Any) -> Any:
    if isinstance(value, tuple):  # create flags: name -> bit
        return {name: bit for name, bit in value}
    return value


def release_json(release: Release) -> dict[str, Any]:
    """Everything a guest can see of ``release``: features, create flags (Xen's own, and where the series' go on
    a host with ABI control), the highest CPUID leaf and every behaviour of the table."""
    return {
        "release": release.name,
        "line": release.line,
        "features": sorted(release.features, key=lambda name: REGISTRY[name].bit),
        "create_flags": release.cdf_bits,
        "series_create_flags": release.series_cdf_bits(),
        "cpuid_max_leaf": f"{0x40000000 + release.cpuid_max_leaf:#010x}",
        "behaviour": {name: _value(value) for name, value in behaviour(release).items()},
    }


def diff_json(a: Release, b: Release) -> dict[str, Any]:
    """What a guest sees change when its host moves from ``a`` to ``b``, and whether ABI control hides it."""
    changes: list[dict[str, Any]] = []
    for row in REGISTRY:
        if a.implements(row) != b.implements(row):
            appears = b.implements(row)
            changes.append({
                "kind": "feature",
                "name": row.name,
                "change": "appears" if appears else "disappears",
                "hidden_by_abi_control": appears,
                "commit": row.commit,
                "summary": (f"{row.name} ({row.summary}) appears; a host with ABI control hides it from a VM pinned "
                            f"without it" if appears else
                            f"{row.name} disappears: admission refuses a VM whose policy has it, before anything "
                            "is created"),
            })  # fmt: skip
    for change in changes_between(a, b):
        changes.append({
            "kind": "behaviour",
            "name": change.field,
            "before": _value(getattr(a, change.field)),
            "after": _value(getattr(b, change.field)),
            "hidden_by_abi_control": False,
            "commit": change.commit,
            "first_release": change.since,
            "backports": list(change.backports),
            "summary": change.summary,
        })  # fmt: skip
    return {"from": a.name, "to": b.name, "changes": changes}


@click.group(invoke_without_command=True)
@click.option("--all", "every", is_flag=True, help="Every release where something changes, not each line's newest.")
@click.option("--release", "one", default=None, help="One release in full (a line such as 4.17, or 4.14.1).")
@json_option
@click.pass_context
def releases(ctx: click.Context, every: bool, one: str | None, as_json: bool) -> None:
    """The Xen releases the model knows (4.3 to 4.22, point releases included) and what each shows a guest."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        names = [one] if one is not None else (table_releases() if every else list(LINES))
        rows = [release_json(get_release(name)) for name in names]
    except PolicyError as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(rows if one is None else rows[0], indent=2))
        return
    out = console()
    if one is not None:
        row = rows[0]
        table = new_table(title=f"Xen {row['release']}")
        table.add_column("field")
        table.add_column("value")
        for key in ("features", "create_flags", "series_create_flags", "cpuid_max_leaf"):
            table.add_row(key, json.dumps(row[key]))
        for key, value in row["behaviour"].items():
            if key != "cdf_flags":
                table.add_row(key, json.dumps(value))
        out.print(table)
        return
    table = new_table(title="Xen releases as a guest sees them (xenabi releases --release R for every field)")
    for column in ("release", "features", "create flags (series' bits)", "CPUID max", "changed here"):
        table.add_column(column)
    for row in rows:
        name = row["release"]
        changed = [f"{c.field} ({c.commit.split()[0]})" for c in CHANGES if _lands_in(c, name, whole_line=not every)]
        series = ", ".join(f"{k} {v}" for k, v in row["series_create_flags"].items())
        table.add_row(name, ", ".join(row["features"]) or "-",
                      f"{len(row['create_flags'])} real" + (f" ({series})" if series else ""),
                      row["cpuid_max_leaf"], "\n".join(changed) or "-")  # fmt: skip
    out.print(table)
    out.print("Not modelled: " + "; ".join(NOT_MODELLED))


def _lands_in(change: Change, name: str, *, whole_line: bool) -> bool:
    """Whether ``change`` first reaches a guest in release ``name`` (or anywhere in its line, for a line row)."""
    line = name.rsplit(".", 1)[0]
    if whole_line:
        return change.since == line or any(tag.rsplit(".", 1)[0] == line for tag in change.backports)
    return (change.since == line and name.endswith(".0")) or name in change.backports


@releases.command("diff")
@click.argument("old")
@click.argument("new")
@json_option
def releases_diff(old: str, new: str, as_json: bool) -> None:
    """What a guest sees change when its host moves from OLD to NEW, and whether ABI control hides each change
    (features can be hidden; behaviours and security fixes cannot)."""
    try:
        doc = diff_json(get_release(old), get_release(new))
    except PolicyError as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    out = console()
    if not doc["changes"]:
        out.print(f"Xen {doc['from']} -> {doc['to']}: nothing a guest can see changes")
        return
    table = new_table(title=f"Xen {doc['from']} -> {doc['to']}: what a guest sees change")
    for column in ("what", "change", "hidden by ABI control", "commit"):
        table.add_column(column)
    for change in doc["changes"]:
        table.add_row(change["name"], change["summary"], "yes" if change["hidden_by_abi_control"] else "no",
                      change.get("commit", "(feature registry)"))  # fmt: skip
    out.print(table)
