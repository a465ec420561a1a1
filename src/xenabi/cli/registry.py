"""``xenabi features``: the ABI feature registry, and where each feature's create flag goes on a release."""

from __future__ import annotations

import json
from typing import Any

import click

from xenabi.abi.features import REGISTRY
from xenabi.cli.common import console, fail, new_table, op_name


@click.command()
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
        fail(exc, as_json)
    placed = host.series_cdf_bits() if host is not None else {}
    rows: list[dict[str, Any]] = [
        {
            "name": row.name,
            "bit": row.bit,
            "since": row.since_name,
            "cdf_flag": f"XEN_DOMCTL_CDF_{row.name}",
            "cdf_bit": row.cdf_bit if host is None else placed.get(row.name),
            "guest_types": sorted(t.value for t in row.guest_types),
            "gates": sorted(op_name(op, cmd) for op, cmd in row.gates),
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
    table = new_table(title=title)
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
    console().print(table)


def _flag_cell(row: dict[str, Any]) -> str:
    if row["cdf_bit"] is None:
        return "not implemented"
    cell = f"{row['cdf_flag']} (bit {row['cdf_bit']})"
    if row.get("series_bit_taken_by"):
        cell += f"; the series' bit {REGISTRY[row['name']].cdf_bit} is {row['series_bit_taken_by']} here"
    return cell
