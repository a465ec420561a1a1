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
from typing import TYPE_CHECKING, Any

import click

from xenabi.cli.common import console, error_json, fail, json_option, visible
from xenabi.errors import XenabiError

if TYPE_CHECKING:
    from xenabi.toolstack.streams.reader import StreamInfo

release_option = click.option(
    "--release",
    default="4.14",
    show_default=True,
    help="Xen release of the model host: 4.3 to 4.22, or a point release such as 4.14.1.",
)
_no_control = click.option("--no-abi-control", is_flag=True, help="The host cannot hide features.")


def _remember_boot_option(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    ctx.meta["gnttab_max_version"] = value
    return value


_boot_option = click.option(
    "--gnttab-max-ver", type=click.IntRange(1, 2), default=2, show_default=True, expose_value=False,
    callback=_remember_boot_option,
    help="The host's boot option gnttab=max-ver:N (Xen 4.11, and 4.8.5, 4.9.3, 4.10.2): 1 hides grant v2 from "
    "every domain.",
)  # fmt: skip


def control_option(command: Any) -> Any:
    """The host's kind: ABI control or not, and the boot option that hides grant v2."""
    return _no_control(_boot_option(command))


def _toolstack(release: str, no_abi_control: bool, memory_mb: int | None = None) -> Any:
    from xenabi.hypervisor import Hypervisor
    from xenabi.toolstack import Toolstack

    boot = click.get_current_context().meta.get("gnttab_max_version", 2)
    return Toolstack(Hypervisor(release, not no_abi_control, memory_mb=memory_mb, gnttab_max_version=boot))


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
        "policy_basis": ts.policy_basis.get(domid),
        "hvm_params": {str(k): v for k, v in sorted(d.hvm_params.items())},
    }


def _print_domain(doc: dict[str, Any], verb: str) -> None:
    features = ", ".join(doc["policy"]["features"]) or "(none)"
    where = f"d{doc['domid']} on {doc['host']} ({doc['state']})"
    click.echo(visible(f"{verb} {doc['name']} as {where}; features: {features}"))
    if doc.get("policy_basis"):
        click.echo(visible(f"  policy: {doc['policy_basis']}"))
    for reason in doc["forced_over"]:
        click.echo(visible(f"  FORCED over: {reason['reason']}"))


def _boot(ts: Any, path: str) -> int:
    """A running VM from an xl.cfg or a save file."""
    from xenabi.toolstack import DomainConfig, xlcfg
    from xenabi.toolstack.streams.xl import XL_MAGIC

    if Path(path).is_file():  # never open a pipe or device to sniff it: read_file refuses those with a reason
        with open(path, "rb") as probe:
            if probe.read(len(XL_MAGIC)) == XL_MAGIC:
                return int(ts.restore(path))
    return int(ts.create(DomainConfig.from_xl(xlcfg.read_file(path), source=path), start=True))


def _save_file(path: str) -> str:
    """A save file is read only from a regular file: a device never ends and a named pipe may never open."""
    from xenabi.errors import StreamError

    if not Path(path).is_file():
        raise StreamError("not a regular file (a device, pipe or socket); save files are read from files",
                          layer="xl", record="file", offset=0)  # fmt: skip
    return path


@click.command()
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
        fail(exc, as_json)
    doc |= {"file": out, "bytes": Path(out).stat().st_size}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(visible(f"saved {doc['name']} from {doc['host']} to {out} ({doc['bytes']:,} bytes)"))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@release_option
@control_option
@click.option("--force", is_flag=True, help="Restore even if the host would change the VM's ABI (says so).")
@click.option("--source-gnttab-max-ver", type=click.IntRange(1, 2), default=None,
              help="The source host's gnttab=max-ver, for a stream from before 4.16 that cannot say it.")  # fmt: skip
@json_option
def restore(file: str, release: str, no_abi_control: bool, force: bool, source_gnttab_max_ver: int | None,
            as_json: bool) -> None:  # fmt: skip
    """Restore the xl save file FILE into a fresh model host: admission first, then the domain. Prints where the
    VM's policy came from: pinned in the stream, or inferred from the release that wrote it."""
    try:
        ts = _toolstack(release, no_abi_control)
        domid = ts.restore(_save_file(file), force=force, source_gnttab_max_version=source_gnttab_max_ver)
    except (XenabiError, OSError) as exc:
        fail(exc, as_json)
    doc = _domain_json(ts, domid)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_domain(doc, "restored")


@click.group()
def stream() -> None:
    """Xen save and migration streams."""


@stream.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["xl", "libxl", "libxc"]),
    default="xl",
    show_default=True,
    help="Where FILE starts: an xl save file or migration stream, or a bare libxl or libxc stream.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print every record.")
@json_option
def stream_verify(file: str, fmt: str, verbose: bool, as_json: bool) -> None:
    """Check FILE with the strict reader (what Xen's C receivers accept)."""
    from xenabi.errors import StreamError
    from xenabi.toolstack.streams.reader import StreamReader

    lines: list[str] = []
    try:
        _save_file(file)
    except StreamError as exc:
        fail(exc, as_json)
    with open(file, "rb") as source:
        reader = StreamReader(source, fmt=fmt, log=lines.append)
        try:
            info = reader.read()
        except StreamError as exc:
            if as_json:
                click.echo(json.dumps({"ok": False, "records": lines, "error": error_json(exc)}, indent=2))
            else:
                for line in lines if verbose else []:
                    click.echo(line)
                click.echo(f"error: {visible(str(exc))}", err=True)
            sys.exit(1)
    summary = {
        "ok": True,
        "policy": _policy_basis(info),
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
    pinned = info.config.pinned_features if info.config else None
    policy = summary["policy"] if pinned is None else f"pinned: {', '.join(sorted(pinned)) or '(none)'}"
    click.echo(
        f"{file}: valid, {info.length:,} bytes, {info.pages:,} pages from Xen {summary['xen_version']}; {policy}"
    )


def _policy_basis(info: StreamInfo) -> str:
    """Where a restore would take this stream's ABI policy from (decision 7): its pin, or the legacy policy of the
    release that wrote it, as ``restore`` reports it."""
    from xenabi.errors import StreamError
    from xenabi.toolstack.arrival import arrival_features

    if info.config is None:
        return "no domain config in the stream: restore needs one (xl restore CFG FILE)"
    try:
        return arrival_features(info)[1]
    except StreamError as exc:
        return exc.message


@click.group()
def host() -> None:
    """Run a model host."""


@host.command("serve")
@release_option
@control_option
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT to accept migrations on.")
@click.option("--once", is_flag=True, help="Exit after one migration.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a peer has for the whole handshake, and for each later protocol step.")  # fmt: skip
@click.option("--min-rate", default=256, show_default=True, type=click.IntRange(min=1),
              help="KiB/s a stream must average once pages flow; a slower peer is cut off.")  # fmt: skip
@click.option("--max-concurrent", default=4, show_default=True, type=click.IntRange(min=1),
              help="Migrations received at once; more wait (and are told so).")  # fmt: skip
@click.option("--memory", "memory_mb", default=None, type=click.IntRange(min=1),
              help="The host's memory in MiB [default: this machine's].")  # fmt: skip
@click.option("--allow-force", is_flag=True,
              help="Honour a sender's request to override admission (it is refused otherwise).")  # fmt: skip
@click.option("--tls-cert", default=None, help="This receiver's certificate (PEM): mutual TLS.")
@click.option("--tls-key", default=None, help="Its private key (PEM).")
@click.option("--client-ca", default=None, help="The CA certificate (PEM) that signs the senders accepted.")
@json_option
def host_serve(release: str, no_abi_control: bool, listen: str, once: bool, timeout: float, min_rate: int,
               max_concurrent: int, memory_mb: int | None, allow_force: bool, tls_cert: str | None,
               tls_key: str | None, client_ca: str | None, as_json: bool) -> None:  # fmt: skip
    """Accept migrations over TCP into a model host until interrupted, several at once; a migration that does not
    fit in the host's memory is refused before any page is sent. It listens on loopback unless given mutual TLS
    (--tls-cert, --tls-key, --client-ca); between machines, prefer `xenabi migrate FILE user@host` (ssh)."""
    from xenabi.toolstack.transport import MigrationReceiver, parse_address, server_tls

    try:
        tls_options = (tls_cert, tls_key, client_ca)
        if any(tls_options) and not all(tls_options):
            raise click.UsageError("mutual TLS needs all of --tls-cert, --tls-key and --client-ca")
        tls = server_tls(tls_cert, tls_key, client_ca) if tls_cert and tls_key and client_ca else None
        ts = _toolstack(release, no_abi_control, memory_mb)
        receiver = MigrationReceiver(ts, *parse_address(listen), timeout=timeout, min_rate=min_rate * 1024,
                                     max_concurrent=max_concurrent, allow_force=allow_force, tls=tls)  # fmt: skip
    except (XenabiError, OSError, ValueError) as exc:
        fail(exc, as_json)
    click.echo(json.dumps({"listening": receiver.address}) if as_json else f"listening on {receiver.address}")
    sys.stdout.flush()

    def report(result: Any) -> None:
        doc = result.to_json()
        with receiver.host_lock:
            if result.domid is not None and result.domid in ts.hv.domains:
                doc["domain"] = _domain_json(ts, result.domid)
        if as_json:
            click.echo(json.dumps(doc))
        else:
            click.echo(visible(f"{result.peer}: {result.outcome}" + (f" as d{result.domid}" if result.domid else "")
                               + (f": {result.detail}" if result.detail else "")))  # fmt: skip
        sys.stdout.flush()

    try:
        receiver.serve(once=once, report=report)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()


@host.command("receive")
@release_option
@control_option
@click.option("--allow-force", is_flag=True,
              help="Honour a sender's request to override admission (it is refused otherwise).")  # fmt: skip
@click.option("--memory", "memory_mb", default=None, type=click.IntRange(min=1),
              help="The host's memory in MiB [default: this machine's].")  # fmt: skip
@click.option(
    "--store",
    default=None,
    type=click.Path(file_okay=False),
    help="Keep the received VM here, as a save file named after it (the model host ends with the process).",
)
def host_receive(release: str, no_abi_control: bool, allow_force: bool, memory_mb: int | None,
                 store: str | None) -> None:  # fmt: skip
    """Receive one migration on standard input and answer on standard output, then exit, as `xl migrate-receive`
    does: what `xenabi migrate FILE user@host` runs at the far end of ssh. The result goes to standard error."""
    from xenabi.toolstack.transport import receive

    ts = _toolstack(release, no_abi_control, memory_mb)
    ts.allow_force = allow_force
    stdout = sys.stdout.buffer

    def send(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    result = receive(ts, sys.stdin.buffer, send, "ssh", allow_force=allow_force)
    doc = result.to_json()
    if result.domid is not None and result.domid in ts.hv.domains and store is not None:
        name = ts.config(result.domid).name
        path = Path(store) / f"{name}.save"
        path.parent.mkdir(parents=True, exist_ok=True)
        ts.save(result.domid, path)
        doc["stored"] = str(path)
    click.echo(json.dumps(doc), err=True)
    sys.exit(0 if result.outcome in ("started", "received-paused") else 1)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", required=False)
@click.option("--to", "dest", default=None, help="HOST:PORT of a `xenabi host serve` (instead of TARGET).")
@click.option("--ssh-command", default="ssh", show_default=True,
              help="How to reach TARGET, as xl migrate's -s: e.g. 'ssh -p 2222 -i key'.")  # fmt: skip
@release_option
@control_option
@click.option("--force", is_flag=True,
              help="Ask the receiver to override admission; it does so only if its operator allowed it.")  # fmt: skip
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for each reply of the receiver.")  # fmt: skip
@click.option("--tls-cert", default=None, help="This sender's client certificate (PEM), for a TLS receiver.")
@click.option("--tls-key", default=None, help="Its private key (PEM).")
@click.option("--tls-ca", default=None, help="The CA certificate (PEM) that signs the receiver's certificate.")
@json_option
def migrate(file: str, target: str | None, dest: str | None, ssh_command: str, release: str, no_abi_control: bool,
            force: bool, timeout: float, tls_cert: str | None, tls_key: str | None, tls_ca: str | None,
            as_json: bool) -> None:  # fmt: skip
    """Boot FILE (an xl.cfg or save file) on a local model host and migrate it (stop-and-copy): to TARGET
    ([user@]host) over ssh, where `xenabi host receive` runs, as `xl migrate` does; or to --to HOST:PORT."""
    from xenabi.toolstack.transport import client_tls, migrate_ssh

    if (target is None) == (dest is None):
        raise click.UsageError("name the receiver: TARGET ([user@]host, over ssh) or --to HOST:PORT")
    notice = lambda text: click.echo(f"receiver: {visible(text)}", err=True)  # noqa: E731
    if target is not None:
        try:
            ts = _toolstack(release, no_abi_control)
            domid = _boot(ts, file)
            doc = _domain_json(ts, domid)
            remote = migrate_ssh(ts, domid, target, ssh_command=ssh_command, force=force, notice=notice)
        except (XenabiError, OSError) as exc:
            fail(exc, as_json)
        _report_migration(doc, target, remote, as_json)
        return
    assert dest is not None
    try:
        tls_options = (tls_cert, tls_key, tls_ca)
        if any(tls_options) and not all(tls_options):
            raise click.UsageError("mutual TLS needs all of --tls-cert, --tls-key and --tls-ca")
        tls = client_tls(tls_cert, tls_key, tls_ca) if tls_cert and tls_key and tls_ca else None
        ts = _toolstack(release, no_abi_control)
        domid = _boot(ts, file)
        doc = _domain_json(ts, domid)
        remote = ts.migrate(domid, dest, force=force, timeout=timeout, tls=tls, notice=notice)
    except (XenabiError, OSError) as exc:
        fail(exc, as_json)
    _report_migration(doc, dest, remote, as_json)


def _report_migration(doc: dict[str, Any], dest: str, remote: int, as_json: bool) -> None:
    result = {"source": doc, "destination": dest, "remote_domid": remote}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        console().print(f"migrated {doc['name']} from {doc['host']} to {dest} as d{remote}", highlight=False)
