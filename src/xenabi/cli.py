"""The ``xenabi`` command (click; rich tables; ``--json`` for automation)."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from xenabi import __version__
from xenabi.abi.evtchn import EvtchnOp
from xenabi.abi.features import REGISTRY
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERCALL_NAMES, HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op


def _op_name(op: int, cmd: int) -> str:
    if op == HYPERVISOR_event_channel_op and cmd in EvtchnOp._value2member_map_:
        return f"EVTCHNOP_{EvtchnOp(cmd).name}"
    if op == HYPERVISOR_hvm_op and cmd == HVMOP_set_evtchn_upcall_vector:
        return "HVMOP_set_evtchn_upcall_vector"
    return f"{HYPERCALL_NAMES.get(op, op)}:{cmd}"


def _console() -> Console:
    return Console(soft_wrap=False, width=max(Console().width, 120))


@click.group()
@click.version_option(__version__, prog_name="xenabi")
def main() -> None:
    """Per-domain guest ABI feature control for Xen: model and toolkit."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def features(as_json: bool) -> None:
    """The ABI feature registry: every feature, its create flag and the operations it gates."""
    rows = [
        {
            "name": row.name,
            "bit": row.bit,
            "since": row.since_name,
            "cdf_flag": f"XEN_DOMCTL_CDF_{row.name}",
            "cdf_bit": row.cdf_bit,
            "guest_types": sorted(t.value for t in row.guest_types),
            "gates": sorted(_op_name(op, cmd) for op, cmd in row.gates),
            "summary": row.summary,
        }
        for row in REGISTRY
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="ABI feature registry")
    for column in ("feature", "bit", "since", "create flag", "guest types", "gates"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            str(row["bit"]),
            f"Xen {row['since']}",
            f"{row['cdf_flag']} (bit {row['cdf_bit']})",
            ", ".join(row["guest_types"]),
            "\n".join(row["gates"]),
        )
    _console().print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--events", default=200, show_default=True, help="Events each backend sends.")
def demo(as_json: bool, events: int) -> None:
    """Boot a Linux-like guest on old and new hosts, ungated and controlled, and compare what it sees."""
    from xenabi.scenarios import probe_matrix

    results = probe_matrix(events)
    baseline = results[0].fingerprint
    lost = any(r.handled != r.sent for r in results)
    if as_json:
        doc = [r.to_json() | {"same_as_xen_4_3": r.fingerprint == baseline} for r in results]
        click.echo(json.dumps(doc, indent=2))
    else:
        table = Table(title="What a guest sees (computed by the model)")
        for column in ("host", "policy", "init_control", "upcall vector", "ABI", "upcall via", "sent", "handled"):
            table.add_column(column)
        table.add_column("same as Xen 4.3")
        for r in results:
            table.add_row(
                r.host,
                r.policy,
                r.init_control,
                r.upcall_vector,
                r.abi,
                r.upcall_via,
                str(r.sent),
                str(r.handled),
                "yes" if r.fingerprint == baseline else "no",
            )
        _console().print(table)
    sys.exit(1 if lost else 0)
