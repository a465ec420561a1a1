"""``xenabi demo``: the scenarios that motivated ABI control, on uncontrolled and controlled hosts."""

from __future__ import annotations

import json
import sys
from typing import IO

import click

from xenabi.cli.common import console, new_table, styled


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--scenario", "names", multiple=True, help="Run only this scenario (repeatable).")
@click.option("--rounds", default=50, show_default=True, help="Rounds of traffic in each phase of a scenario.")
@click.option("-v", "--verbose", is_flag=True, help="Print each run's steps.")
@click.option("--trace", "trace_file", type=click.File("w", lazy=False), default=None,
              help="Write every hypercall of every host to this file as JSON lines ('-': stdout).")  # fmt: skip
@click.option("--kernel", "kernels", multiple=True, metavar="VERSION",
              help="The guests' Linux version: 5.10 (the default) or 6.1; repeat it to run each.")  # fmt: skip
def demo(as_json: bool, names: tuple[str, ...], rounds: int, verbose: bool, trace_file: IO[str] | None,
         kernels: tuple[str, ...]) -> None:  # fmt: skip
    """Run the scenarios that motivated ABI control on uncontrolled and controlled hosts; exit 0 when every
    controlled run of an ABI hazard is safe (fine, or refused before anything changed) and every other scenario
    (kexec's, which Xen and xl decide) ends the same way in both runs."""
    from xenabi.errors import UnknownKernel
    from xenabi.guest.kernels import DEFAULT_KERNEL, get_kernel
    from xenabi.scenarios import SCENARIO_NAMES, SCENARIOS, controlled_runs_safe, run_all

    try:
        for kernel in kernels:
            get_kernel(kernel)
    except UnknownKernel as exc:
        raise click.BadParameter(str(exc), param_hint="--kernel") from None

    unknown = [name for name in names if name not in SCENARIO_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIO_NAMES)})")
    results = run_all(tuple(names) or SCENARIO_NAMES, rounds=rounds, trace=trace_file,
                      kernels=tuple(kernels) or (DEFAULT_KERNEL,))  # fmt: skip
    safe = controlled_runs_safe(results)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
        sys.exit(0 if safe else 1)
    summaries = {s.name: s.summary for s in SCENARIOS}
    table = new_table(title="xenabi demo: what each guest went through (every figure computed by the model)")
    for column in ("scenario", "host", "kernel", "sent", "handled", "lost", "ABI changed", "outcome"):
        table.add_column(column, justify="right" if column in ("sent", "handled", "lost") else "left")
    colours = {"fine": "green", "refused": "yellow", "hung": "red", "corrupted": "red", "crashed": "red",
               "destroyed": "red", "missing CPU": "red"}  # fmt: skip
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
    out = console()
    out.print(table)
    for r in results:
        note = "" if r.abi_hazard else " [not an ABI hazard: the same with or without ABI control]"
        out.print(styled(r.scenario, "bold"), f"({summaries[r.scenario]}), {r.kernel}, {r.host}: {r.outcome}: "
                  f"{r.detail}{note}")  # fmt: skip
        if verbose:
            for step in r.steps:
                out.print(f"    {step}")
    verdict = ("every controlled run of an ABI hazard is safe, and the other scenarios end alike with or without "
               "ABI control" if safe else "a controlled run was NOT safe")  # fmt: skip
    out.print(f"\n{verdict}")
    sys.exit(0 if safe else 1)
