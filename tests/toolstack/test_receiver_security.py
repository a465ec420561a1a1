"""Issue 20: the receiver owns overrides, and no listener accepts unauthenticated peers off loopback.

Mutual TLS is tested with certificates the test makes with the ``openssl`` command (skipped with a reason where
there is none): a client signed by the receiver's client CA is admitted, one signed by another CA, or with no
certificate, is refused before a byte of its stream is read."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenabi.cli import main
from xenabi.errors import AbiIncompatible, MigrationError
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import Lifecycle
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.transport import MigrationReceiver, Received, client_tls, server_tls


def vm() -> DomainConfig:
    return DomainConfig.from_xl('name = "g"\ntype = "hvm"\nmemory = 4\n')


def serve_once(receiver: MigrationReceiver) -> tuple[list[Received], threading.Thread]:
    results: list[Received] = []
    thread = threading.Thread(target=receiver.serve, kwargs={"once": True, "report": results.append})
    thread.start()
    return results, thread


# --- overrides belong to the receiver ---------------------------------------------------------------------------
def test_a_sender_cannot_force_a_receiver_that_does_not_allow_it() -> None:
    old = Toolstack(Hypervisor("4.5", abi_control=False))
    receiver = MigrationReceiver(old, timeout=5.0)
    results, thread = serve_once(receiver)
    src = Toolstack(Hypervisor("4.14"))
    domid = src.create(vm(), start=True)  # has evtchn_upcall, which 4.5 does not implement
    with pytest.raises(AbiIncompatible) as refused:
        src.migrate(domid, receiver.address, force=True)
    thread.join(10)
    receiver.close()
    assert "overrides are not allowed here" in str(refused.value)
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING and list(old.hv.domains) == [0]
    assert results[0].outcome == "refused" and "asked for force" in results[0].detail


def test_a_receiver_that_allows_overrides_says_so_to_both_sides() -> None:
    old = Toolstack(Hypervisor("4.5", abi_control=False))
    receiver = MigrationReceiver(old, timeout=5.0, allow_force=True)
    results, thread = serve_once(receiver)
    src = Toolstack(Hypervisor("4.14"))
    domid = src.create(vm(), start=True)
    notices: list[str] = []
    remote = src.migrate(domid, receiver.address, force=True, notice=notices.append)
    thread.join(10)
    receiver.close()
    assert any("overrode admission" in text and "evtchn_upcall" in text for text in notices)
    assert results[0].outcome == "started" and "forced over" in results[0].detail
    assert old.overrides[remote] and domid not in src.hv.domains


def test_the_same_rule_in_process() -> None:
    src = Toolstack(Hypervisor("4.14"))
    strict, lenient = Toolstack(Hypervisor("4.5", False)), Toolstack(Hypervisor("4.5", False), allow_force=True)
    domid = src.create(vm(), start=True)
    with pytest.raises(AbiIncompatible, match="overrides are not allowed here"):
        src.migrate(domid, strict, force=True)
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING
    assert lenient.overrides[src.migrate(domid, lenient, force=True)]


def test_the_cli_force_request_is_refused_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "g.cfg"
    path.write_text('name = "g"\ntype = "hvm"\nmemory = 4\n')
    for allow, code in ((False, 1), (True, 0)):
        receiver = MigrationReceiver(Toolstack(Hypervisor("4.5", False)), timeout=5.0, allow_force=allow)
        _results, thread = serve_once(receiver)
        result = CliRunner().invoke(main, ["migrate", str(path), "--to", receiver.address, "--force"])
        thread.join(10)
        receiver.close()
        assert result.exit_code == code, result.output
        assert ("overrides are not allowed here" in result.output) is (not allow)
        assert ("overrode admission" in result.output) is allow


# --- no open listener ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_listener_off_loopback_without_tls_is_refused_at_start(host: str) -> None:
    with pytest.raises(MigrationError, match="without TLS"):
        MigrationReceiver(Toolstack(Hypervisor("4.14")), host, 0)
    result = CliRunner().invoke(main, ["host", "serve", "--listen", f"{host}:0"])
    assert result.exit_code == 1 and "refusing to listen" in result.output and "ssh" in result.output


OPENSSL = shutil.which("openssl")


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)  # fmt: skip
    return key, cert


def make_cert(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
                    "-CAcreateserial", "-out", str(cert), "-days", "1"], check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is needed to make test certificates")
def test_mutual_tls_admits_a_good_client_and_refuses_others(tmp_path: Path) -> None:
    ca, other_ca = make_ca(tmp_path, "clients"), make_ca(tmp_path, "elsewhere")
    server_ca = make_ca(tmp_path, "servers")
    server_cert, server_key = make_cert(tmp_path, "receiver", server_ca)
    good_cert, good_key = make_cert(tmp_path, "good", ca)
    bad_cert, bad_key = make_cert(tmp_path, "bad", other_ca)
    receiving = Toolstack(Hypervisor("4.14"))
    tls = server_tls(str(server_cert), str(server_key), str(ca[1]))
    src = Toolstack(Hypervisor("4.14"))
    # a client certificate from another CA
    receiver = MigrationReceiver(receiving, timeout=5.0, tls=tls)
    results, thread = serve_once(receiver)
    domid = src.create(vm(), start=True)
    with pytest.raises(MigrationError):
        src.migrate(domid, receiver.address, tls=client_tls(str(bad_cert), str(bad_key), str(server_ca[1])))
    thread.join(10)
    receiver.close()
    assert results[0].outcome == "refused" and "TLS handshake failed" in results[0].detail
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING and list(receiving.hv.domains) == [0]
    # no TLS at all: the receiver speaks first, so a plain sender waits for a banner while the receiver waits for
    # a ClientHello, until the receiver's handshake deadline (kept short here)
    receiver = MigrationReceiver(receiving, timeout=1.0, tls=tls)
    results, thread = serve_once(receiver)
    with pytest.raises(MigrationError):
        src.migrate(domid, receiver.address, timeout=5.0)
    thread.join(10)
    receiver.close()
    assert results[0].outcome == "refused" and list(receiving.hv.domains) == [0]
    # the good client
    receiver = MigrationReceiver(receiving, timeout=5.0, tls=tls)
    results, thread = serve_once(receiver)
    remote = src.migrate(domid, receiver.address, tls=client_tls(str(good_cert), str(good_key), str(server_ca[1])))
    thread.join(10)
    receiver.close()
    assert results[0].outcome == "started" and remote in receiving.hv.domains and domid not in src.hv.domains
