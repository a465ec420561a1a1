"""``xenabi save | restore | stream verify | host serve | migrate``: the stream commands.

Each runs against model hosts created for the command (a CLI process has no hypervisor of its own): ``save`` creates
the VM from an xl.cfg on a host of ``--release`` and saves it; ``restore`` restores a save file into a fresh host;
``host serve`` keeps a host running and accepts migrations over TCP; ``migrate`` boots a VM (from an xl.cfg or a save
file) on a local host and migrates it to a serving one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from xenabi.cli import _console, _error_json, _fail, json_option, main
from xenabi.errors import XenabiError

release_option = click.option("--release", default="4.14", show_default=True, help="Xen release of the model host.")
control_option = click.option("--no-abi-control", is_flag=True, help="The host cannot hide features.")


def _toolstack(release: str, no_abi_control: bool) -> Any:
    from xenabi.hypervisor import Hypervisor
    from xenabi.toolstack import Toolstack

    return Toolstack(Hypervisor(release, not no_abi_control))


def _domain_json(ts: Any, domid: int) -> dict[str, Any]:
    d = ts.hv.domain(domid)
    return {
        "host": ts.name,
        "domid": domid,
        "name": ts.config(domid).name,
        "type": d.guest_type.value,
        "state": d.lifecycle.name.lower(),
        "policy": d.policy.to_json(),
        "pinned": ts.config(domid).is_pinned,
        "forced_over": [r.to_json() for r in ts.overrides.get(domid, ())],
        "hvm_params": {str(k): v for k, v in sorted(d.hvm_params.items())},
    }


def _print_domain(doc: dict[str, Any], verb: str) -> None:
    features = ", ".join(doc["policy"]["features"]) or "(none)"
    click.echo(f"{verb} {doc['name']} as d{doc['domid']} on {doc['host']} ({doc['state']}); features: {features}")
    for reason in doc["forced_over"]:
        click.echo(f"  FORCED over: {reason['reason']}")


def _boot(ts: Any, path: str) -> int:
    """A running VM from an xl.cfg or a save file."""
    from xenabi.toolstack import DomainConfig
    from xenabi.toolstack.streams.xl import XL_MAGIC

    data = Path(path).read_bytes()
    if data.startswith(XL_MAGIC):
        return ts.restore(path)
    return ts.create(DomainConfig.from_xl(data.decode("utf-8", errors="surrogateescape"), source=path), start=True)


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@release_option
@control_option
@json_option
def save(config: str, out: str, release: str, no_abi_control: bool, as_json: bool) -> None:
    """Create and start the VM of CONFIG (an xl.cfg) on a model host, then save it to OUT (an xl save file)."""
    try:
        ts = _toolstack(release, no_abi_control)
        domid = _boot(ts, config)
        doc = _domain_json(ts, domid)
        ts.save(domid, out)
    except (XenabiError, OSError) as exc:
        _fail(exc, as_json)
    doc |= {"file": out, "bytes": Path(out).stat().st_size}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"saved {doc['name']} from {doc['host']} to {out} ({doc['bytes']:,} bytes)")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@release_option
@control_option
@click.option("--force", is_flag=True, help="Restore even if the host would change the VM's ABI (says so).")
@json_option
def restore(file: str, release: str, no_abi_control: bool, force: bool, as_json: bool) -> None:
    """Restore the xl save file FILE into a fresh model host: admission first, then the domain."""
    try:
        ts = _toolstack(release, no_abi_control)
        domid = ts.restore(file, force=force)
    except (XenabiError, OSError) as exc:
        _fail(exc, as_json)
    doc = _domain_json(ts, domid)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_domain(doc, "restored")


@main.group()
def stream() -> None:
    """Xen save and migration streams."""


@stream.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["xl", "libxl", "libxc"]), default="xl", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Print every record.")
@json_option
def stream_verify(file: str, fmt: str, verbose: bool, as_json: bool) -> None:
    """Check FILE with the strict reader (what Xen's C receivers accept)."""
    from xenabi.errors import StreamError
    from xenabi.toolstack.streams.reader import StreamReader

    lines: list[str] = []
    with open(file, "rb") as source:
        reader = StreamReader(source, fmt=fmt, log=lines.append)
        try:
            info = reader.read()
        except StreamError as exc:
            if as_json:
                click.echo(json.dumps({"ok": False, "records": lines, "error": _error_json(exc)}, indent=2))
            else:
                for line in lines if verbose else []:
                    click.echo(line)
                click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    summary = {
        "ok": True,
        "bytes": info.length,
        "xen_version": "{}.{}".format(*info.xen_version),
        "pages": info.pages,
        "page_records": info.page_records,
        "domain": info.config.name if info.config else None,
        "pinned_features": sorted(info.config.pinned_features)
        if info.config and info.config.pinned_features is not None
        else None,
    }
    if as_json:
        click.echo(json.dumps(summary | {"records": lines}, indent=2))
        return
    for line in lines if verbose else []:
        click.echo(line)
    pinned = summary["pinned_features"]
    policy = "not pinned" if pinned is None else f"pinned: {', '.join(pinned) or '(none)'}"
    click.echo(
        f"{file}: valid, {info.length:,} bytes, {info.pages:,} pages from Xen {summary['xen_version']}; {policy}"
    )


@main.group()
def host() -> None:
    """Run a model host."""


@host.command("serve")
@release_option
@control_option
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT to accept migrations on.")
@click.option("--once", is_flag=True, help="Exit after one migration.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait on a silent peer.")
@json_option
def host_serve(release: str, no_abi_control: bool, listen: str, once: bool, timeout: float, as_json: bool) -> None:
    """Accept migrations over TCP into a model host, one per connection, until interrupted."""
    from xenabi.toolstack.transport import MigrationReceiver, parse_address

    try:
        ts = _toolstack(release, no_abi_control)
        receiver = MigrationReceiver(ts, *parse_address(listen), timeout=timeout)
    except (XenabiError, OSError, ValueError) as exc:
        _fail(exc, as_json)
    click.echo(json.dumps({"listening": receiver.address}) if as_json else f"listening on {receiver.address}")
    sys.stdout.flush()

    def report(result: Any) -> None:
        doc = result.to_json()
        if result.domid is not None and result.domid in ts.hv.domains:
            doc["domain"] = _domain_json(ts, result.domid)
        if as_json:
            click.echo(json.dumps(doc))
        else:
            click.echo(f"{result.peer}: {result.outcome}" + (f" as d{result.domid}" if result.domid else "")
                       + (f": {result.detail}" if result.detail else ""))  # fmt: skip
        sys.stdout.flush()

    try:
        receiver.serve(once=once, report=report)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "dest", required=True, help="HOST:PORT of a `xenabi host serve`.")
@release_option
@control_option
@click.option("--force", is_flag=True, help="Ask the receiver to override admission.")
@click.option("--timeout", default=30.0, show_default=True)
@json_option
def migrate(
    file: str, dest: str, release: str, no_abi_control: bool, force: bool, timeout: float, as_json: bool
) -> None:
    """Boot FILE (an xl.cfg or save file) on a local model host and live-migrate it to DEST."""
    try:
        ts = _toolstack(release, no_abi_control)
        domid = _boot(ts, file)
        doc = _domain_json(ts, domid)
        remote = ts.migrate(domid, dest, force=force, timeout=timeout)
    except (XenabiError, OSError) as exc:
        _fail(exc, as_json)
    result = {"source": doc, "destination": dest, "remote_domid": remote}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _console().print(f"migrated {doc['name']} from {doc['host']} to {dest} as d{remote}", highlight=False)
