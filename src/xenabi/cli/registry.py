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
    """The ABI feature registry: every feature, its create flag (the series' two) or abi_features mask bit (all),
    and the operations it gates. With --release, whether the release implements each feature, the bit each create
    flag takes there (the series' bit, 7 or 8, unless Xen gave it to a flag of its own: vpmu 4.16,
    trap_unmapped_accesses 4.21, the review's scalability objection), and Xen's own knob where it has one."""
    from xenabi.errors import PolicyError
    from xenabi.releases import get_release

    try:
        host = get_release(release) if release is not None else None
    except PolicyError as exc:
        fail(exc, as_json)
    placed = host.series_cdf_bits() if host is not None else {}
    rows: list[dict[str, Any]] = []
    for row in REGISTRY:
        gates = [op_name(op, cmd) for op, cmd in sorted(row.gates)]
        gates += [f"{op_name(op, cmd)} (after the vcpuid check)" for op, cmd in sorted(row.late_gates)]
        gates += [f"{op_name(op, cmd)} with {value}" for op, cmd, value in sorted(row.value_gates)]
        doc: dict[str, Any] = {
            "name": row.name,
            "bit": row.bit,
            "since": row.since_name,
            "commit": row.commit,
            "cdf_flag": None if row.cdf_bit is None else f"XEN_DOMCTL_CDF_{row.name}",
            "cdf_bit": row.cdf_bit if host is None else placed.get(row.name),
            "abi_features_bit": row.bit,
            "guest_types": sorted(t.value for t in row.guest_types),
            "gates": gates,
            "xenfeat_bits": list(row.xenfeat_bits),
            "summary": row.summary,
        }
        if host is not None:
            doc["release"] = host.name
            doc["implemented"] = host.implements(row)
            doc["series_bit_taken_by"] = next(
                (name for name, bit in host.cdf_bits.items() if row.cdf_bit is not None and bit == row.cdf_bit), None
            )
            doc["xen_knob"] = row.xen_knob if host.can_hide(row) else None
        rows.append(doc)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    title = "ABI feature registry" + (f" on Xen {host.name} (with ABI control)" if host is not None else "")
    table = new_table(title=title)
    for column in ("feature", "bit", "since", "create flag", "guest types", "gates"):
        table.add_column(column)
    for shown in rows:
        table.add_row(
            shown["name"],
            str(shown["bit"]),
            f"Xen {shown['since']}",
            _flag_cell(shown),
            ", ".join(shown["guest_types"]),
            "\n".join(shown["gates"]),
        )
    console().print(table)


def _flag_cell(row: dict[str, Any]) -> str:
    if row.get("implemented") is False:
        return "not implemented"
    if row["cdf_flag"] is None:
        cell = f"abi_features bit {row['abi_features_bit']} only"
        return cell + (f"; without ABI control, Xen's own knob ({row['xen_knob']})" if row.get("xen_knob") else "")
    cell = f"{row['cdf_flag']} (bit {row['cdf_bit']})"
    if row.get("series_bit_taken_by"):
        cell += f"; the series' bit {REGISTRY[row['name']].cdf_bit} is {row['series_bit_taken_by']} here"
    return cell
