"""Issue 20: migration over ssh, as ``xl migrate`` does it: ``xenabi migrate FILE user@host`` runs ``xenabi host
receive`` at the far end and speaks the protocol over the channel.

Against a real OpenSSH server (Debian's ``openssh-server``, installed by ``.ci/run``): the test starts ``sshd`` on a
loopback port with a generated host key and a key-only login whose ``authorized_keys`` entry forces the receiving
command, which is how the far side's operator, not the sender, chooses its release and whether it allows
overrides. Skipped, with the reason, where ``sshd`` or ``ssh-keygen`` is missing. The protocol over pipes is also
tested without ssh, through ``--ssh-command env``."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenabi.cli import main
from xenabi.errors import AbiIncompatible, MigrationError
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import Lifecycle
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.transport import migrate_ssh

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
KEYGEN = shutil.which("ssh-keygen")
SSH = shutil.which("ssh")


def vm(name: str = "g") -> DomainConfig:
    return DomainConfig.from_xl(f'name = "{name}"\ntype = "hvm"\nmemory = 4\n')


def receive_command(*options: str) -> str:
    """A stand-in for ssh that runs the receiver locally: ``sh -c`` runs ``xenabi host receive`` with these
    options; the target and the command ssh would run arrive as ``sh``'s ignored positional arguments."""
    inner = shlex.join([sys.executable, "-m", "xenabi", "host", "receive", *options])
    return shlex.join(["sh", "-c", inner])


def test_migration_over_pipes_with_a_stand_in_for_ssh(tmp_path: Path) -> None:
    src = Toolstack(Hypervisor("4.6", abi_control=False))
    domid = src.create(vm(), start=True)
    remote = migrate_ssh(src, domid, "HOST=1", ssh_command=receive_command("--release", "4.22", "--store",
                                                                              str(tmp_path)))  # fmt: skip
    assert remote >= 1 and domid not in src.hv.domains
    assert (tmp_path / "g.save").is_file()  # the far side kept the VM it received


def test_a_refusal_over_pipes_keeps_the_source_running() -> None:
    src = Toolstack(Hypervisor("4.14"))
    domid = src.create(vm(), start=True)
    with pytest.raises(AbiIncompatible, match="overrides are not allowed here"):
        migrate_ssh(src, domid, "HOST=1", ssh_command=receive_command("--release", "4.5", "--no-abi-control"),
                    force=True)  # fmt: skip
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def test_a_far_side_that_is_not_xenabi_is_a_clear_error() -> None:
    src = Toolstack(Hypervisor("4.14"))
    domid = src.create(vm(), start=True)
    with pytest.raises(MigrationError, match=r"not a xenabi migration receiver|closed"):
        migrate_ssh(src, domid, "x", ssh_command="echo hello")
    with pytest.raises(MigrationError, match="cannot run"):
        migrate_ssh(src, domid, "x", ssh_command="/nonexistent/ssh")
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An sshd on a loopback port; yields (the --ssh-command to reach it, the folder the receiver stores VMs in)."""
    if SSHD is None or KEYGEN is None or SSH is None:
        pytest.skip("OpenSSH (sshd, ssh, ssh-keygen) is not installed; .ci/run installs Debian's openssh-server")
    if os.geteuid() != 0:
        pytest.skip("sshd's key-only root login is set up for root, as CI runs")
    for name in ("host", "user"):
        subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    store = tmp_path / "store"
    forced = f"{sys.executable} -m xenabi host receive --release 4.22 --store {store}"
    (tmp_path / "authorized_keys").write_text(f'command="{forced}",no-pty ' + (tmp_path / "user.pub").read_text())
    port = free_port()
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.skip("sshd did not start")
        command = (f"{SSH} -p {port} -i {tmp_path / 'user'} -o BatchMode=yes -o StrictHostKeyChecking=no "
                   "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")  # fmt: skip
        yield command, store
    finally:
        server.terminate()
        server.wait(10)


def test_migration_over_a_real_sshd(sshd: tuple[str, Path], tmp_path: Path) -> None:
    ssh_command, store = sshd
    src = Toolstack(Hypervisor("4.6", abi_control=False))
    domid = src.create(vm("over-ssh"), start=True)
    remote = migrate_ssh(src, domid, "root@127.0.0.1", ssh_command=ssh_command)
    assert remote >= 1 and domid not in src.hv.domains  # destroyed only after the receiver reported success
    assert (store / "over-ssh.save").is_file()


def test_the_cli_over_a_real_sshd_and_a_refusal(sshd: tuple[str, Path], tmp_path: Path) -> None:
    ssh_command, store = sshd
    config = tmp_path / "g.cfg"
    config.write_text('name = "cli"\ntype = "pvh"\nmemory = 4\n')
    result = CliRunner().invoke(main, ["migrate", str(config), "root@127.0.0.1", "--ssh-command", ssh_command,
                                       "--release", "4.14", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["destination"] == "root@127.0.0.1" and (store / "cli.save").is_file()
    # an ssh command that fails (nothing listens there): a clear error, and the source keeps running
    src = Toolstack(Hypervisor("4.22"))
    domid = src.create(vm("stays"), start=True)
    broken = ssh_command.replace(" -p ", " -p 1 -o ConnectTimeout=5 -o Port=", 1)
    with pytest.raises(MigrationError):
        migrate_ssh(src, domid, "root@127.0.0.1", ssh_command=f"{broken.split(' -o Port=')[0]}")
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING
