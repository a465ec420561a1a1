"""Save, restore and migration (issue 5; ``DESIGN.md`` decisions 7-9; ``spec/evtchn.md`` §7)."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xenabi.abi import errno
from xenabi.abi.hvm import HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN
from xenabi.errors import AbiIncompatible, MigrationError, NotModelled, StreamError
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import SHARED_INFO_GFN, Lifecycle
from xenabi.policy import RELEASES, AbiPolicy, admission, features_of_version
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.streams import framing
from xenabi.toolstack.transport import BANNER, MigrationReceiver

from ..conftest import ev

ROOT = Path(__file__).resolve().parents[2]


def vm(kind: str = "hvm", memory: int = 4, body: str = "") -> DomainConfig:
    return DomainConfig.from_xl(f'name = "vm-{kind}"\ntype = "{kind}"\nmemory = {memory}\nvcpus = 2\n{body}\n')


def host(release: str = "4.14", control: bool = True) -> Toolstack:
    return Toolstack(Hypervisor(release, abi_control=control))


def scribble(ts: Toolstack, domid: int, seed: int = 1) -> None:
    d = ts.hv.domain(domid)
    rng = random.Random(seed)
    for gfn in range(d.nr_pages):
        if d.is_guest_ram(gfn) and rng.random() < 0.5:
            d.memory[gfn * 4096 : gfn * 4096 + 64] = rng.randbytes(64)
    d.memory[SHARED_INFO_GFN * 4096 : SHARED_INFO_GFN * 4096 + 8] = b"\xff" * 8  # pending bits: not carried


def guest_ram(ts: Toolstack, domid: int) -> bytes:
    d = ts.hv.domain(domid)
    return b"".join(bytes(d.page(g)) for g in range(d.nr_pages) if d.is_guest_ram(g))


def fingerprint(ts: Toolstack, domid: int) -> tuple[object, ...]:
    """What a guest can observe of its ABI: CPUID leaves, and which gated operations answer -ENOSYS."""
    from tests.test_surfaces import probe_gates

    hv = ts.hv
    leaves = tuple(hv.cpuid(domid, 0x40000000 + i) for i in (0, 6))
    return leaves, tuple(sorted(probe_gates(hv, domid).items()))


def save_bytes(ts: Toolstack, domid: int) -> bytes:
    buffer = io.BytesIO()
    ts.save(domid, buffer)
    return buffer.getvalue()


# --- round trips ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hvm", "pvh"])
@pytest.mark.parametrize("memory", [1, 4, 16])
def test_round_trip_keeps_memory_policy_and_fingerprint(kind: str, memory: int, tmp_path: Path) -> None:
    src = host()
    domid = src.create(vm(kind, memory, 'xen_abi_features = [ "!evtchn_fifo" ]' if memory == 4 else ""), start=True)
    scribble(src, domid)
    ram, pinned, print_before = guest_ram(src, domid), src.config(domid).pinned_features, fingerprint(src, domid)
    src.save(domid, tmp_path / "vm.save")
    assert domid not in src.hv.domains and domid not in src.configs
    dst = host()
    new = dst.restore(tmp_path / "vm.save")
    d = dst.hv.domain(new)
    assert guest_ram(dst, new) == ram
    assert dst.config(new).pinned_features == pinned == d.policy.features
    assert fingerprint(dst, new) == print_before
    assert d.lifecycle is Lifecycle.RUNNING and d.guest_type.value == kind


def test_restore_semantics_evtchn_section_7() -> None:
    src = host()
    domid = src.create(vm(), start=True)
    d = src.hv.domain(domid)
    assert ev(src.hv, domid, "bind_virq", virq=0, vcpu=0)[0] == 0
    scribble(src, domid)
    store_pfn, console_pfn = d.hvm_params[HVM_PARAM_STORE_PFN], d.hvm_params[HVM_PARAM_CONSOLE_PFN]
    dst = host()
    placeholder = vm().create_domain(frozenset(), feature_bits=dst.hv.feature_cdf_bits,
                                     abi_control=dst.hv.abi_control, release=dst.hv.release)  # fmt: skip
    dst.hv.create_domain(placeholder, memory_mb=2)
    new = dst.restore(io.BytesIO(save_bytes(src, domid)))
    r = dst.hv.domain(new)
    assert r.evtchn_abi == "2l" and r.active_evtchns == 2  # only the toolstack's two fresh ports
    assert r.memory[SHARED_INFO_GFN * 4096 : SHARED_INFO_GFN * 4096 + 8] == bytes(8)
    assert (r.hvm_params[HVM_PARAM_STORE_PFN], r.hvm_params[HVM_PARAM_CONSOLE_PFN]) == (store_pfn, console_pfn)
    for param in (HVM_PARAM_STORE_EVTCHN, HVM_PARAM_CONSOLE_EVTCHN):
        rc, status = ev(dst.hv, 0, "status", dom=new, port=r.hvm_params[param])
        assert rc == 0 and status.status == 1  # EVTCHNSTAT_unbound, remote dom0


def test_tsc_and_emulator_state_travel() -> None:
    src = host()
    domid = src.create(vm(), start=True)
    d = src.hv.domain(domid)
    d.tsc_info = (2, 3_000_000, 5, 7)
    d.emulator_context = b"QEVM" + bytes(100)
    dst = host()
    new = dst.restore(io.BytesIO(save_bytes(src, domid)))
    assert dst.hv.domain(new).tsc_info == (2, 3_000_000, 5, 7)
    assert dst.hv.domain(new).emulator_context == b"QEVM" + bytes(100)


def test_pv_save_is_refused_and_changes_nothing() -> None:
    ts = host()
    domid = ts.create(vm("pv"), start=True)
    with pytest.raises(NotModelled, match="PV"):
        ts.save(domid, io.BytesIO())
    with pytest.raises(NotModelled):
        ts.migrate(domid, host())
    assert ts.hv.domain(domid).lifecycle is Lifecycle.RUNNING


# --- policy on arrival and admission -----------------------------------------------------------------------------
@pytest.mark.parametrize("release", list(RELEASES))
def test_legacy_stream_gets_its_source_release_policy(release: str) -> None:
    legacy = host(release, control=False)
    domid = legacy.create(vm(), start=True)
    assert legacy.config(domid).pinned_features is None
    data = save_bytes(legacy, domid)
    dst = host("4.22", control=True)  # implements every feature of every release
    new = dst.restore(io.BytesIO(data))
    expected = RELEASES[release].applicable_features(dst.hv.domain(new).guest_type)
    assert dst.hv.domain(new).policy.features == expected == features_of_version(RELEASES[release].version, "hvm")
    assert dst.config(new).pinned_features == expected  # and now it is pinned


def test_legacy_4_3_and_4_6_policies() -> None:
    assert features_of_version((4, 3), "hvm") == {"gnttab_v2"}
    assert features_of_version((4, 6), "hvm") == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}
    assert features_of_version((4, 20), "pv") == {"evtchn_fifo", "gnttab_v2", "vcpu_phys_area", "xenver_varbuf"}


SOURCES = [("4.3", False), ("4.5", False), ("4.6", True), ("4.14", False), ("4.14", True)]
DESTS = [("4.3", False), ("4.5", True), ("4.6", False), ("4.14", False), ("4.14", True)]


@pytest.mark.parametrize(("src_release", "src_control"), SOURCES)
@pytest.mark.parametrize(("dst_release", "dst_control"), DESTS)
@pytest.mark.parametrize("kind", ["hvm", "pvh"])
def test_admission_matrix(src_release: str, src_control: bool, dst_release: str, dst_control: bool, kind: str) -> None:
    src = host(src_release, src_control)
    domid = src.create(vm(kind, 1), start=True)
    features = src.hv.domain(domid).policy.features
    # the grant limits travel too (decision 10): before 4.10 every domain has the host's, so they must match
    table = src.hv.domain(domid).grant_table
    limits = (table.max_frames, table.max_maptrack)
    data = save_bytes(src, domid)
    dst = host(dst_release, dst_control)
    implemented = RELEASES[dst_release].applicable_features(vm(kind).guest_type)
    dst_table = RELEASES[dst_release]
    limits_ok = dst_table.gnttab_per_domain_limits or (
        limits[0] <= 32 and limits[1] <= dst_table.gnttab_maptrack_default)  # fmt: skip
    admissible = features <= implemented and (dst_control or implemented == features) and limits_ok
    if admissible:
        new = dst.restore(io.BytesIO(data))
        assert dst.hv.domain(new).policy.features == features
        new_table = dst.hv.domain(new).grant_table
        if dst_table.gnttab_per_domain_limits:
            assert (new_table.max_frames, new_table.max_maptrack) == limits  # query_size does not change
    else:
        with pytest.raises(AbiIncompatible) as info:
            dst.restore(io.BytesIO(data))
        policy = AbiPolicy(features, max_grant_frames=limits[0], max_maptrack_frames=limits[1])
        assert info.value.reasons == admission(policy, dst_release, dst_control, kind)
        assert list(dst.hv.domains) == [0] and dst.configs == {}


def test_force_restores_and_says_so() -> None:
    src = host()
    data = save_bytes(src, src.create(vm(), start=True))
    dst = host("4.3", False)
    new = dst.restore(io.BytesIO(data), force=True)
    # a 4.14 VM has 64 grant and 1024 maptrack frames; every 4.3 domain has 32 and 256
    assert {r.feature for r in dst.overrides[new]} == {"evtchn_fifo", "evtchn_upcall", "max_grant_frames",
                                                        "max_maptrack_frames"}  # fmt: skip


# --- atomicity ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [100, 2000, 20000, 600_000])
def test_truncated_restore_leaves_nothing(cut: int) -> None:
    src = host()
    data = save_bytes(src, src.create(vm(memory=1), start=True))
    dst = host()
    with pytest.raises(StreamError):
        dst.restore(io.BytesIO(data[: len(data) - cut]))
    assert list(dst.hv.domains) == [0] and dst.configs == {}


def test_stream_too_big_for_its_config_leaves_nothing() -> None:
    src = host()
    data = save_bytes(src, src.create(vm(memory=2), start=True))
    small = data.replace(b'"target_memkb":2048', b'"target_memkb":1024').replace(
        b'"max_memkb":2048', b'"max_memkb":1024'
    )
    dst = host()
    with pytest.raises(StreamError, match="beyond"):
        dst.restore(io.BytesIO(small))
    assert list(dst.hv.domains) == [0]


class FailingOutput(io.RawIOBase):
    def __init__(self, after: int) -> None:
        self.left = after

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        self.left -= 1
        if self.left < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(memoryview(data))  # type: ignore[arg-type]


def test_failed_save_resumes_the_domain_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = host()
    domid = ts.create(vm(), start=True)
    scribble(ts, domid)
    ram = guest_ram(ts, domid)
    with pytest.raises(MigrationError, match="resumed") as info:
        ts.save(domid, FailingOutput(after=20))
    assert info.value.source == "running" and ts.hv.domain(domid).lifecycle is Lifecycle.RUNNING
    assert guest_ram(ts, domid) == ram
    real_write = framing.VectorOutput.write
    calls = iter(range(1000))

    def flaky(self: framing.VectorOutput, parts: list[framing.Buffer]) -> None:
        if next(calls) == 5:
            raise OSError(errno.EIO, "I/O error")
        real_write(self, parts)

    monkeypatch.setattr(framing.VectorOutput, "write", flaky)
    with pytest.raises(MigrationError):
        ts.save(domid, tmp_path / "vm.save")
    assert list(tmp_path.iterdir()) == [] and ts.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def test_in_process_migration_moves_the_domain() -> None:
    src, dst = host("4.6", control=True), host("4.14", control=True)
    domid = src.create(vm(), start=True)
    scribble(src, domid)
    ram, leaf6 = guest_ram(src, domid), src.hv.cpuid(domid, 0x40000006)
    new = src.migrate(domid, dst)
    assert domid not in src.hv.domains and guest_ram(dst, new) == ram
    # the gated set is the same; error codes that changed between releases (expand_array before init_control,
    # -ENOSYS before 4.8) are the release's, not the policy's
    assert dst.hv.cpuid(new, 0x40000006) == leaf6 and dst.hv.domain(new).policy.features == {
        "evtchn_fifo",
        "evtchn_upcall",
        "gnttab_v2",
    }
    assert dst.hv.domain(new).lifecycle is Lifecycle.RUNNING


def test_refused_migration_keeps_the_source_running() -> None:
    src, dst = host("4.14", control=True), host("4.3", control=False)
    domid = src.create(vm(), start=True)
    with pytest.raises(AbiIncompatible):
        src.migrate(domid, dst)
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING and list(dst.hv.domains) == [0]


def test_failing_receiver_keeps_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = host(), host()
    domid = src.create(vm(), start=True)

    def broken(*args: object, **kwargs: object) -> int:
        raise OSError(errno.EIO, "receiver disk failed")

    monkeypatch.setattr(dst, "restore", broken)
    with pytest.raises(MigrationError) as info:
        src.migrate(domid, dst)
    assert info.value.source == "running" and src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def test_paused_domain_migrates_paused() -> None:
    src, dst = host(), host()
    domid = src.create(vm())  # never started
    new = src.migrate(domid, dst)
    assert dst.hv.domain(new).lifecycle is Lifecycle.CREATED


# --- TCP ------------------------------------------------------------------------------------------------------------
def serve_once(ts: Toolstack, **kwargs: object) -> tuple[MigrationReceiver, list[object], threading.Thread]:
    receiver = MigrationReceiver(ts, timeout=5.0, **kwargs)  # type: ignore[arg-type]
    results: list[object] = []
    thread = threading.Thread(target=receiver.serve, kwargs={"once": True, "report": results.append})
    thread.start()
    return receiver, results, thread


def test_tcp_migration_moves_the_domain() -> None:
    src, dst = host("4.6", control=False), host("4.14", control=True)
    domid = src.create(vm(), start=True)
    scribble(src, domid)
    ram = guest_ram(src, domid)
    receiver, results, thread = serve_once(dst)
    remote = src.migrate(domid, receiver.address)
    thread.join(10)
    receiver.close()
    assert results[0].outcome == "started" and results[0].domid == remote  # type: ignore[attr-defined]
    assert guest_ram(dst, remote) == ram and domid not in src.hv.domains
    assert dst.config(remote).pinned_features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}  # 4.6's, pinned


def test_tcp_refusal_is_known_before_any_page_is_sent() -> None:
    src, dst = host("4.14", control=True), host("4.3", control=False)
    domid = src.create(vm(memory=16), start=True)
    receiver, results, thread = serve_once(dst)
    with pytest.raises(AbiIncompatible) as info:
        src.migrate(domid, receiver.address)
    thread.join(10)
    receiver.close()
    assert {r.feature for r in info.value.reasons} == {"evtchn_fifo", "evtchn_upcall", "max_grant_frames",
                                                       "max_maptrack_frames"}  # fmt: skip
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING and list(dst.hv.domains) == [0]
    assert results[0].outcome == "refused"  # type: ignore[attr-defined]


def fake_receiver(script: str) -> tuple[str, threading.Thread]:
    """A receiver that misbehaves: ``drop-after-admit`` or ``no-done``."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            stream = conn.makefile("rb")
            conn.sendall(BANNER + b"\n")
            stream.readline()
            from xenabi.toolstack.streams.reader import StreamReader

            def begin(_info: object) -> None:
                conn.sendall(b"ADMIT\n")
                if script == "drop-after-admit":
                    raise ConnectionResetError("receiver crashed")

            try:
                StreamReader(stream, begin=begin).read()  # type: ignore[arg-type]
            except ConnectionResetError:
                return
            conn.sendall(b"RECEIVED 7\n")
            stream.readline()  # GO, then silence

    thread = threading.Thread(target=run)
    thread.start()
    return address, thread


def test_receiver_crash_mid_transfer_resumes_the_source() -> None:
    src = host()
    domid = src.create(vm(memory=16), start=True)
    address, thread = fake_receiver("drop-after-admit")
    with pytest.raises(MigrationError) as info:
        src.migrate(domid, address, timeout=5)
    thread.join(10)
    assert info.value.source == "running" and src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def test_unconfirmed_start_keeps_the_source_paused() -> None:
    src = host()
    domid = src.create(vm(), start=True)
    address, thread = fake_receiver("no-done")
    with pytest.raises(MigrationError, match="kept paused") as info:
        src.migrate(domid, address, timeout=2)
    thread.join(10)
    assert info.value.source == "paused" and src.hv.domain(domid).lifecycle is Lifecycle.PAUSED


def test_receiver_destroys_its_copy_without_go() -> None:
    src, dst = host(), host()
    domid = src.create(vm(), start=True)
    receiver, results, thread = serve_once(dst)
    sock = socket.create_connection(("127.0.0.1", int(receiver.address.rsplit(":", 1)[1])))
    replies = sock.makefile("rb")
    assert replies.readline().rstrip() == BANNER
    sock.sendall(b"MODE strict\n")
    from xenabi.toolstack import saverestore

    def verdict() -> None:
        assert replies.readline() == b"ADMIT\n"

    saverestore.write_domain(src, domid, framing.VectorOutput(sock), static_data_done=verdict)
    assert replies.readline().startswith(b"RECEIVED ")
    replies.close()
    sock.close()  # the sender vanishes before GO
    thread.join(10)
    receiver.close()
    assert results[0].outcome == "aborted" and list(dst.hv.domains) == [0]  # type: ignore[attr-defined]


def test_unreachable_receiver_touches_nothing() -> None:
    src = host()
    domid = src.create(vm(), start=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MigrationError, match="cannot reach"):
        src.migrate(domid, f"127.0.0.1:{port}", timeout=2)
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


def test_two_process_migration_on_loopback(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "xenabi", "host", "serve", "--release", "4.14", "--listen", "127.0.0.1:0", "--once",
         "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        address = json.loads(server.stdout.readline())["listening"]
        cfg = tmp_path / "vm.cfg"
        cfg.write_text('name = "traveller"\ntype = "hvm"\nmemory = 8\n')
        sender = subprocess.run(
            [sys.executable, "-m", "xenabi", "migrate", str(cfg), "--to", address, "--release", "4.6",
             "--no-abi-control", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        )  # fmt: skip
        assert sender.returncode == 0, sender.stderr
        received = json.loads(server.stdout.readline())
        assert server.wait(30) == 0
    finally:
        server.kill()
    assert received["outcome"] == "started" and received["domain"]["name"] == "traveller"
    assert received["domain"]["policy"]["features"] == ["evtchn_fifo", "evtchn_upcall", "gnttab_v2"]
    assert json.loads(sender.stdout)["remote_domid"] == received["domid"]


def test_legacy_converted_stream_has_no_inferable_policy() -> None:
    """Decision 7 needs the source release; a converted stream (Xen major 0) cannot say it, so it is refused
    unless its config pins a policy, and nothing is created either way it fails."""

    def converted(ts: Toolstack) -> tuple[bytes, int]:
        data = bytearray(save_bytes(ts, ts.create(vm(memory=1), start=True)))
        dhdr = 48 + 4 + int.from_bytes(data[48:52], "little") + 16 + 8 + 24  # xl, config, libxl, LIBXC_CONTEXT, ihdr
        assert data[dhdr : dhdr + 4] == b"\x02\0\0\0"
        data[dhdr + 8 : dhdr + 16] = bytes(8)  # xen_major = xen_minor = 0
        return bytes(data), dhdr

    unpinned, dhdr = converted(host("4.14", control=False))
    dst = host()
    with pytest.raises(StreamError) as info:
        dst.restore(io.BytesIO(unpinned))
    assert info.value.record == "domain header" and info.value.offset == dhdr
    assert "cannot be inferred" in str(info.value) and list(dst.hv.domains) == [0]
    pinned, _ = converted(host("4.14", control=True))
    new = dst.restore(io.BytesIO(pinned))  # pinned: the policy travels in the config
    assert dst.hv.domain(new).policy.features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}


def test_toolstack_lifecycle_refusals() -> None:
    from xenabi.errors import XenError

    ts = host("4.3", control=False)
    domid = ts.create(vm(memory=1), start=True)
    with pytest.raises(XenError) as info:
        ts.upgrade("4.14", abi_control=True)
    assert info.value.errno == errno.EBUSY and ts.hv.release.name == "4.3.4"  # "4.3": the newest 4.3.x
    with pytest.raises(XenError) as info:
        ts.start("nobody")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(XenError):
        ts.hv.shutdown_domain(domid, "vanish")
    ts.shutdown(domid)
    ts.upgrade("4.14", abi_control=True)
    assert ts.stored["vm-hvm"].pinned_features == {"gnttab_v2"}  # 4.3's legacy policy, decision 5
    assert ts.hv.domain(ts.start("vm-hvm")).policy.features == {"gnttab_v2"}


@pytest.mark.parametrize("address", ["nohost", "host:", "host:http", "host:70000"])
def test_bad_addresses(address: str) -> None:
    from xenabi.toolstack.transport import parse_address

    with pytest.raises(ValueError):
        parse_address(address)
    src = host()
    domid = src.create(vm(), start=True)
    with pytest.raises(MigrationError, match="cannot reach"):
        src.migrate(domid, address, timeout=1)
    assert src.hv.domain(domid).lifecycle is Lifecycle.RUNNING


# --- limits pinned as numbers (decision 10) -----------------------------------------------------------------------
def query_size(hv: Hypervisor, domid: int) -> int:
    from xenabi.abi.gnttab import GnttabOp, QuerySize
    from xenabi.abi.xen import DOMID_SELF, HYPERVISOR_grant_table_op

    hv.domain(domid).memory[0x10000 : 0x10000 + 16] = QuerySize(dom=DOMID_SELF).pack()
    addr = (0x10000).to_bytes(8, "little")
    assert hv.hypercall_raw(domid, HYPERVISOR_grant_table_op, GnttabOp.query_size, addr)[0] == 0
    return QuerySize.unpack(bytes(hv.domain(domid).memory[0x10000 : 0x10000 + 16])).max_nr_frames


@pytest.mark.parametrize(("source", "frames"), [("4.9", 32), ("4.12", 32), ("4.13", 64)])
def test_legacy_stream_keeps_its_release_grant_limit(source: str, frames: int) -> None:
    """query_size's max_nr_frames never changes: host-wide 32 up to 4.9 (18b1be5e32), xl's 32 in 4.10-4.12, the
    host's 64 from 4.13 (7a0e35f823); the receiving 4.22 gives the number the stream's release gave."""
    legacy = host(source, control=False)
    domid = legacy.create(vm(), start=True)
    assert query_size(legacy.hv, domid) == frames
    dst = host("4.22", control=True)
    new = dst.restore(io.BytesIO(save_bytes(legacy, domid)))
    assert query_size(dst.hv, new) == frames and dst.config(new).max_grant_frames == frames


def test_pinned_limits_are_numbers_and_admission_checks_them() -> None:
    src = host("4.14", control=True)
    domid = src.create(vm(), start=True)
    cfg = src.config(domid)
    assert (cfg.max_grant_frames, cfg.max_maptrack_frames) == (64, 1024) and "max_grant_frames = 64" in cfg.to_xl()
    big = DomainConfig.from_xl(cfg.to_xl().replace("max_grant_frames = 64", "max_grant_frames = 65"))
    with pytest.raises(AbiIncompatible) as info:
        host("4.17", control=True).create(big)
    assert [(r.feature, r.kind.value) for r in info.value.reasons] == [("max_grant_frames", "limit")]
    assert "above the 64" in str(info.value)
    assert host("4.18", control=True).create(big) > 0  # b2ea81d2b9 lifted the cap


def test_a_4_16_stream_that_capped_grant_v2_arrives_without_it() -> None:
    """The libxl JSON of a 4.16+ stream says which grant version its guest was allowed (max_grant_version)."""
    legacy = host("4.16", control=False)
    domid = legacy.create(vm(body="max_grant_version = 1"), start=True)
    assert legacy.hv.domain(domid).grant_table.max_version == 1
    dst = host("4.22", control=True)
    new = dst.restore(io.BytesIO(save_bytes(legacy, domid)))
    assert "gnttab_v2" not in dst.hv.domain(new).policy.features


def test_a_larger_host_wide_limit_before_4_10_is_admitted_a_smaller_one_refused() -> None:
    """Before 4.10 (18b1be5e32) a domain cannot have its own limit: more than pinned is harmless, less is not."""
    src = host("4.4", control=False)
    domid = src.create(vm(), start=True)
    data = save_bytes(src, domid)  # a 4.4 VM: 32 grant frames, 256 maptrack frames
    dst = host("4.5", control=True)  # 1024 maptrack frames for every domain
    assert dst.restore(io.BytesIO(data)) > 0
    newer = host("4.9", control=True)
    stored = DomainConfig.from_xl(vm().to_xl() + 'xen_abi_features_pinned = [ "gnttab_v2" ]\nmax_grant_frames = 40\n')
    with pytest.raises(AbiIncompatible) as info:
        newer.create(stored)
    assert [r.feature for r in info.value.reasons] == ["max_grant_frames"] and "host's 32" in str(info.value)


def test_policy_basis_says_where_a_legacy_streams_policy_came_from() -> None:
    """Issue 18: before 4.16 a stream cannot say whether its source host had gnttab=max-ver:1; the operator may,
    and the report says which was used. A pinned stream says so too."""
    legacy = host("4.14", control=False)
    data = save_bytes(legacy, legacy.create(vm(), start=True))
    dst = host("4.22", control=True)
    default = dst.restore(io.BytesIO(data))
    assert "gnttab_v2" in dst.hv.domain(default).policy.features
    assert "inferred from Xen 4.14" in dst.policy_basis[default] and "was not given" in dst.policy_basis[default]
    told = dst.restore(io.BytesIO(data), source_gnttab_max_version=1)
    assert "gnttab_v2" not in dst.hv.domain(told).policy.features
    assert "operator's gnttab=max-ver:1" in dst.policy_basis[told]
    pinned = host("4.22", control=True)
    again = pinned.restore(io.BytesIO(save_bytes(dst, default)))
    assert pinned.policy_basis[again] == "pinned policy from the stream"


def test_restore_cli_prints_the_basis(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xenabi.cli import main

    legacy = host("4.14", control=False)
    path = tmp_path / "vm.save"
    legacy.save(legacy.create(vm(memory=1), start=True), path)
    result = CliRunner().invoke(main, ["restore", str(path), "--release", "4.22", "--source-gnttab-max-ver", "1"])
    assert result.exit_code == 0 and "operator's gnttab=max-ver:1" in result.output
