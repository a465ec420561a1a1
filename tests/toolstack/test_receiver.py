"""Issue 11: a migration receiver that never dies and never lets one peer hold the others.

Everything runs on loopback, bounded in count and time. The hostile peers: a header claiming 64 GiB, a 2 MB stream
claiming 4 GiB, a peer that says nothing, a peer that trickles, a peer that sends garbage, a bug inside one
connection (an injected MemoryError)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time

import pytest

from xenabi.errors import MigrationError
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack import saverestore as saverestore_module
from xenabi.toolstack.streams.libxc import LibxcRecord
from xenabi.toolstack.transport import BANNER, MigrationReceiver, Received

from .streamkit import CONFIG, libxc_body, libxl_body, page_data, rec, xl_stream
from .test_saverestore import guest_ram, scribble


def vm(name: str = "vm", memory: int = 4) -> DomainConfig:
    return DomainConfig.from_xl(f'name = "{name}"\ntype = "hvm"\nmemory = {memory}\n')


class Server:
    """A receiver serving on a thread until closed; results collected in order of completion."""

    def __init__(self, ts: Toolstack, **kwargs: object) -> None:
        self.receiver = MigrationReceiver(ts, **kwargs)  # type: ignore[arg-type]
        self.results: list[Received] = []
        self.thread = threading.Thread(target=self.receiver.serve, kwargs={"report": self.results.append})
        self.thread.start()

    @property
    def address(self) -> str:
        return self.receiver.address

    def close(self) -> None:
        self.receiver.close()
        self.thread.join(10)
        self.receiver.join(10)

    def wait_for(self, count: int, seconds: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + seconds
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.results


def raw_peer(address: str, data: bytes, *, mode: bytes = b"MODE strict\n", keep_open: float = 0.0) -> bytes:
    """Connect, read the banner, send ``mode`` then ``data``; return everything the receiver answered."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.settimeout(10)
        replies = sock.makefile("rb")
        banner = replies.readline()
        while banner.startswith(b"WAIT "):  # queued behind other migrations
            banner = replies.readline()
        assert banner.rstrip() == BANNER
        sock.sendall(mode + data)
        time.sleep(keep_open)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def claiming(memkb: int, *, pages: int = 0) -> bytes:
    """A stream whose config claims ``memkb`` of RAM and that carries ``pages`` pages (then stops short)."""
    config = json.loads(json.dumps(CONFIG))
    config["b_info"]["max_memkb"] = config["b_info"]["target_memkb"] = memkb
    records = [rec(LibxcRecord.STATIC_DATA_END)]
    for start in range(0, pages, 512):
        records.append(page_data(range(start + 8, start + 8 + min(512, pages - start))))
    return xl_stream(config, libxl_body(libxc_body(records=records), tail=[]))


def test_a_header_claiming_64_gib_is_refused_and_the_host_keeps_its_vms() -> None:
    ts = Toolstack(Hypervisor("4.14", memory_mb=1024))
    held = ts.create(vm("held"), start=True)
    server = Server(ts, timeout=5.0)
    try:
        answer = raw_peer(server.address, claiming(64 << 20))
        assert answer.startswith(b"ERROR ") and b"ENOMEM" in answer and b"needs 65536 MiB" in answer
        assert b"free of 1024 MiB" in answer
        # a claim that fits, whose 2 MB of pages stop short: the copy is destroyed and its memory is free again
        answer = raw_peer(server.address, claiming(512 << 10, pages=500))
        assert answer.startswith(b"ADMIT\nERROR ") and b"truncated" in answer
        results = server.wait_for(2)
        assert [r.outcome for r in results] == ["failed", "failed"]
        assert list(ts.hv.domains) == [0, held] and ts.hv.free_memory_mb == 1024 - 16 - 4
    finally:
        server.close()


def test_a_bug_in_one_connection_is_that_connections_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    ts = Toolstack(Hypervisor("4.14"))
    held = ts.create(vm("held"), start=True)
    real_restore = saverestore_module.restore
    calls = []

    def exploding(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("injected")
        return real_restore(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(saverestore_module, "restore", exploding)
    server = Server(ts, timeout=5.0)
    try:
        assert raw_peer(server.address, xl_stream()).startswith(b"ERROR internal error")
        src = Toolstack(Hypervisor("4.14"))
        remote = src.migrate(src.create(vm("next"), start=True), server.address)
        results = server.wait_for(2)
        assert results[0].outcome == "failed" and "MemoryError: injected" in results[0].detail
        assert results[1].outcome == "started" and set(ts.hv.domains) == {0, held, remote}
    finally:
        server.close()


def test_a_silent_peer_is_cut_off_at_the_handshake_deadline_and_blocks_nobody() -> None:
    ts = Toolstack(Hypervisor("4.14"))
    server = Server(ts, timeout=1.0)
    try:
        host, port = server.address.rsplit(":", 1)
        silent = socket.create_connection((host, int(port)))  # says nothing at all
        started = time.monotonic()
        src = Toolstack(Hypervisor("4.14"))
        remote = src.migrate(src.create(vm(), start=True), server.address)
        assert time.monotonic() - started < 1.0  # served beside the silent peer, not after it
        results = server.wait_for(2)
        assert {r.outcome for r in results} == {"started", "failed"}
        assert "deadline passed waiting for the handshake" in next(r.detail for r in results if r.outcome == "failed")
        assert remote in ts.hv.domains
        silent.close()
    finally:
        server.close()


def test_a_trickling_peer_falls_below_the_minimum_rate() -> None:
    """A byte every 50 ms is far below 64 KiB/s: cut off after the grace, with its half-made domain destroyed."""
    ts = Toolstack(Hypervisor("4.14"))
    server = Server(ts, timeout=0.5, min_rate=64 << 10)
    try:
        host, port = server.address.rsplit(":", 1)
        data = claiming(4 << 10, pages=8)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.makefile("rb").readline()
            sock.sendall(b"MODE strict\n" + data[:400])  # the header and static data: admitted
            deadline = time.monotonic() + 5
            with pytest.raises(OSError):
                for byte in data[400:]:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
                    if time.monotonic() > deadline:
                        break
                    sock.settimeout(0.001)
                    try:
                        if sock.recv(1024) == b"":
                            raise ConnectionResetError("closed")
                    except TimeoutError:
                        pass
                    sock.settimeout(10)
        result = server.wait_for(1)[0]
        assert result.outcome == "failed" and "minimum rate" in result.detail
        assert list(ts.hv.domains) == [0]
    finally:
        server.close()


def test_a_queued_migration_is_told_to_wait_and_then_succeeds() -> None:
    ts = Toolstack(Hypervisor("4.14"))
    server = Server(ts, timeout=1.5, max_concurrent=1)
    try:
        host, port = server.address.rsplit(":", 1)
        slow = socket.create_connection((host, int(port)))  # holds the only slot until it is cut off
        slow.makefile("rb").readline()
        src = Toolstack(Hypervisor("4.14"))
        notices: list[str] = []
        remote = src.migrate(src.create(vm(), start=True), server.address, notice=notices.append, timeout=10)
        assert notices and "queued" in notices[0]
        assert remote in ts.hv.domains
        slow.close()
    finally:
        server.close()


def test_a_full_queue_answers_busy_and_the_source_keeps_running() -> None:
    ts = Toolstack(Hypervisor("4.14"))
    server = Server(ts, timeout=2.0, max_concurrent=1, max_queued=0)
    try:
        host, port = server.address.rsplit(":", 1)
        holder = socket.create_connection((host, int(port)))
        holder.makefile("rb").readline()
        src = Toolstack(Hypervisor("4.14"))
        domid = src.create(vm(), start=True)
        with pytest.raises(MigrationError) as refused:
            src.migrate(domid, server.address)
        assert "is busy" in str(refused.value)
        assert src.hv.domain(domid).lifecycle.name == "RUNNING"
        holder.close()
    finally:
        server.close()


def test_soak_hostile_and_slow_peers_mixed_with_good_migrations() -> None:
    """Bounded: 12 good migrations and 24 hostile peers, all on loopback, over a few seconds. Every good migration
    succeeds, nothing hostile leaves a domain behind, and the VMs held at the start are still there."""
    rng = random.Random(11)
    ts = Toolstack(Hypervisor("4.14", memory_mb=2048))
    held = [ts.create(vm(f"held{i}"), start=True) for i in range(3)]
    server = Server(ts, timeout=1.0, min_rate=256 << 10, max_concurrent=4, max_queued=64)
    good = b"MODE strict\n" + xl_stream()
    hostile = [
        lambda: raw_peer(server.address, claiming(64 << 20)),
        lambda: raw_peer(server.address, claiming(4 << 20, pages=100)),
        lambda: raw_peer(server.address, bytes(rng.randrange(256) for _ in range(300))),
        lambda: raw_peer(server.address, good[12 : 12 + rng.randrange(1, len(good) - 12)]),
        lambda: raw_peer(server.address, b"", mode=b"MODE sideways\n"),
        lambda: raw_peer(server.address, b"", keep_open=1.5),  # silent until cut off
    ]
    moved: list[int] = []
    errors: list[BaseException] = []

    def good_migration(index: int) -> None:
        try:
            src = Toolstack(Hypervisor("4.6", abi_control=False))
            domid = src.create(vm(f"good{index}"), start=True)
            scribble(src, domid, seed=index)
            ram = guest_ram(src, domid)
            remote = src.migrate(domid, server.address, timeout=30)
            assert guest_ram(ts, remote) == ram
            moved.append(remote)
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    def hostile_peer(index: int) -> None:
        with contextlib.suppress(OSError):  # the receiver may cut a hostile peer off mid-send
            hostile[index % len(hostile)]()

    threads = [threading.Thread(target=good_migration, args=(i,)) for i in range(12)]
    threads += [threading.Thread(target=hostile_peer, args=(i,)) for i in range(24)]
    rng.shuffle(threads)
    try:
        for thread in threads:
            thread.start()
            time.sleep(rng.uniform(0, 0.02))
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert len(moved) == 12
        assert set(ts.hv.domains) == {0, *held, *moved}
        outcomes = [r.outcome for r in server.wait_for(36)]
        assert outcomes.count("started") == 12 and len(outcomes) == 36
    finally:
        server.close()
