"""``xenabi config show``: what an xl.cfg means on a host of a given release."""

from __future__ import annotations

import json
import sys

import click

from xenabi.cli.common import console, fail, new_table, styled


@click.group()
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
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for warning in parsed.warnings:
            click.echo(f"warning: {warning}", err=True)
        _print_config_report(report)
    sys.exit(1 if report["refused"] else 0)


def _print_config_report(report: dict[str, object]) -> None:
    out = console()
    host = report["host"]
    assert isinstance(host, dict)
    kind = "with ABI control" if host["abi_control"] else "without ABI control"
    cfg = report["config"]
    assert isinstance(cfg, dict)
    out.print(styled(cfg["c_info"]["name"], "bold"), f"({cfg['c_info']['type']}) on Xen {host['release']} {kind}")
    requested = report["requested_policy"]
    assert isinstance(requested, dict)
    out.print(f"requested features: {', '.join(requested['features']) or '(none)'}")
    not_modelled = report["not_modelled"]
    assert isinstance(not_modelled, list)
    if not_modelled:
        out.print(f"not modelled (real libxl drops them): {', '.join(not_modelled)}")
    refused = report["refused"]
    assert isinstance(refused, list)
    if refused:
        out.print(styled("refused before anything was created:", "red"))
        for reason in refused:
            out.print(f"  - {reason['reason']}")
        return
    policy = report["policy"]
    assert isinstance(policy, dict)
    table = new_table(title="effective policy")
    table.add_column("field")
    table.add_column("value")
    table.add_row("features", ", ".join(policy["features"]) or "(none)")
    limits = report["grant_limits"]
    assert isinstance(limits, dict)
    for key in ("max_evtchn_port", "max_grant_frames", "max_maptrack_frames"):
        value = str(policy[key])
        if policy[key] == -1 and key in limits:  # -1: the host's default; say what that is here
            value = f"-1 (the host's default: {limits[key]})"
        table.add_row(key, value)
    flags = report["create_flags"]
    assert isinstance(flags, dict)
    table.add_row("create flags", f"{flags['value']} = " + (" | ".join(flags["names"]) or "(none)"))
    mask = report["abi_features"]
    assert isinstance(mask, dict)
    table.add_row("abi_features mask", f"{mask['value']} = " + (" | ".join(mask["names"]) or "(none)"))
    if report["grant_opts"] is not None:
        table.add_row("grant_opts", str(report["grant_opts"]))
    table.add_row("stored config", "pinned" if report["pinned"] else "not pinned (legacy toolstack)")
    out.print(table)
    cpuid = new_table(title="hypervisor CPUID leaves (vCPU 0)")
    for column in ("leaf", "eax", "ebx", "ecx", "edx"):
        cpuid.add_column(column)
    leaves = report["cpuid"]
    assert isinstance(leaves, list)
    for row in leaves:
        cpuid.add_row(row["leaf"], *row["regs"])
    out.print(cpuid)
    nodes = report["hypfs"]
    assert isinstance(nodes, list)
    if nodes:
        hypfs = new_table(title="hypfs (as dom0 reads it)")
        for column in ("path", "type", "value", "writable"):
            hypfs.add_column(column)
        for node in nodes:
            hypfs.add_row(
                node["path"], node["type"], str(node["value"]), "until first unpause" if node["writable"] else "no"
            )
        out.print(hypfs)
    else:
        out.print("hypfs: no per-domain abi-features tree on this host")
    out.print(styled("stored config", "bold"))
    out.print(str(report["stored_config"]))
