"""Save, restore and migration throughput of a large domain, each beside a raw copy of the same bytes.

    python bench/stream.py [--size-mb 1024] [--repeat 5] [--dir /dev/shm]

- save to tmpfs: ``Toolstack.save`` of a running HVM domain (the stream written with vectored writes straight from
  guest memory) against writing the same number of bytes from one buffer to a file in the same directory;
- restore from tmpfs: ``Toolstack.restore`` (strict reader, admission, pages read into the new domain's memory)
  against ``readinto`` of the same file into a freshly allocated buffer (a restore must allocate the memory too);
- migrate over loopback: ``Toolstack.migrate`` to a receiver thread in this process (save, TCP, strict reader,
  restore, handshake) against ``sendall``/``recv_into`` of the same number of bytes between two threads;
- verify: the strict reader alone over the save file (pages into a reused scratch buffer) against reading the file
  through one reused 4 MiB buffer.

Each figure is MB/s (10^6 bytes), best of ``--repeat`` runs; the ratio is the figure over its raw baseline from the
same run (1.0 = as fast as a plain copy). Every buffer a baseline reads into or writes from is allocated as guest RAM
is (an anonymous private mapping, touched as it fills), and released as soon as it is used, so that the peak
resident memory printed at the end is the benchmark's own: at most two domains at once.

``xenabi stream verify`` is also timed end to end, as a user runs it (a new process), against Xen's own
``verify-stream-v2`` on the same file when it is there (``.ci/fetch-xen-verifier`` unpacks it).
"""

from __future__ import annotations

import argparse
import glob
import mmap
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import allocate_ram
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.streams.reader import StreamReader
from xenabi.toolstack.transport import MigrationReceiver

CHUNK = 1 << 20


def paired(repeat: int, run: Callable[[], float], baseline: Callable[[], float]) -> tuple[float, float]:
    """The shortest of ``repeat`` timings of each, taken alternately so that both see the same machine state;
    each callable returns its own elapsed seconds (setup excluded)."""
    runs, baselines = [], []
    for _ in range(repeat):
        runs.append(run())
        baselines.append(baseline())
    return min(runs), min(baselines)


def new_vm(ts: Toolstack, size_mb: int) -> int:
    domid = ts.create(DomainConfig.from_xl(f'name = "big"\ntype = "hvm"\nmemory = {size_mb}\n'), start=True)
    memory = ts.hv.domain(domid).memory
    pattern = bytes(range(256)) * (CHUNK // 256)
    for offset in range(0, len(memory), CHUNK):  # touch every page, as a running guest would have
        memory[offset : offset + CHUNK] = pattern
    return domid


def filled(size: int) -> mmap.mmap:
    """A buffer of ``size`` touched bytes, allocated as guest RAM is (not timed)."""
    buffer = allocate_ram(-size // mmap.PAGESIZE * -mmap.PAGESIZE)
    pattern = b"\x5a" * CHUNK
    for offset in range(0, size, CHUNK):
        buffer[offset : offset + min(CHUNK, size - offset)] = pattern[: min(CHUNK, size - offset)]
    return buffer


def release(buffer: mmap.mmap) -> None:
    buffer.madvise(mmap.MADV_DONTNEED)
    buffer.close()


def raw_write(path: Path, size: int) -> float:
    path.unlink(missing_ok=True)  # a fresh file, as a save writes one
    buffer = filled(size)
    start = time.perf_counter()
    with open(path, "wb") as out:
        out.write(memoryview(buffer)[:size])
    elapsed = time.perf_counter() - start
    release(buffer)
    return elapsed


def raw_read(path: Path, size: int) -> float:
    start = time.perf_counter()
    buffer = allocate_ram(-size // mmap.PAGESIZE * -mmap.PAGESIZE)  # fresh memory, as a restore's new domain
    with open(path, "rb", buffering=0) as source:
        view = memoryview(buffer)[:size]
        got = 0
        while got < len(view):
            got += source.readinto(view[got:])
        view.release()
    elapsed = time.perf_counter() - start
    release(buffer)
    return elapsed


def raw_scan(path: Path) -> float:
    """Read the file through one reused 4 MiB buffer: the least any checker does."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as source:
        view = memoryview(bytearray(4 * CHUNK))
        while source.readinto(view):
            pass
    return time.perf_counter() - start


def raw_socket(size: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    buffer = filled(size)

    def receive() -> None:
        conn, _ = listener.accept()
        target = allocate_ram(-size // mmap.PAGESIZE * -mmap.PAGESIZE)  # fresh memory, as the receiving domain's
        with conn:
            view = memoryview(target)[:size]
            got = 0
            while got < len(view):
                got += conn.recv_into(view[got:])
            view.release()
        release(target)

    thread = threading.Thread(target=receive)
    thread.start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(memoryview(buffer)[:size])
    thread.join()
    elapsed = time.perf_counter() - start
    listener.close()
    release(buffer)
    return elapsed


def find_verifier() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    found = sorted(glob.glob(str(root / ".ci/cache/xen/usr/lib/xen-*/bin/verify-stream-v2")))
    found += sorted(glob.glob("/usr/lib/xen-*/bin/verify-stream-v2"))
    return Path(found[0]) if found else None


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="xenabi-bench-", dir=args.dir))
    save_path, raw_path = workdir / "vm.save", workdir / "raw.bin"
    src = Toolstack(Hypervisor("4.14", abi_control=True))
    dst = Toolstack(Hypervisor("4.14", abi_control=True))

    def save_once() -> float:
        domid = new_vm(src, args.size_mb)
        save_path.unlink(missing_ok=True)
        start = time.perf_counter()
        src.save(domid, save_path)
        return time.perf_counter() - start

    def restore_once() -> float:
        start = time.perf_counter()
        domid = dst.restore(save_path)
        elapsed = time.perf_counter() - start
        dst.destroy(domid)
        return elapsed

    def verify_once() -> float:
        start = time.perf_counter()
        with open(save_path, "rb", buffering=0) as source:
            StreamReader(source).read()
        return time.perf_counter() - start

    def migrate_once() -> float:
        domid = new_vm(src, args.size_mb)
        receiver = MigrationReceiver(dst, timeout=120)
        thread = threading.Thread(target=receiver.serve, kwargs={"once": True})
        thread.start()
        start = time.perf_counter()
        remote = src.migrate(domid, receiver.address, timeout=120)
        elapsed = time.perf_counter() - start
        thread.join()
        receiver.close()
        dst.destroy(remote)
        return elapsed

    save_once()  # the file the other rows read
    size = save_path.stat().st_size
    rows = [
        ("save to tmpfs", *paired(args.repeat, save_once, lambda: raw_write(raw_path, size))),
        ("restore from tmpfs", *paired(args.repeat, restore_once, lambda: raw_read(save_path, size))),
        ("strict reader (verify)", *paired(args.repeat, verify_once, lambda: raw_scan(save_path))),
        ("migrate over loopback", *paired(args.repeat, migrate_once, lambda: raw_socket(size))),
    ]
    ours = [sys.executable, "-m", "xenabi", "stream", "verify", str(save_path)]
    verifier = find_verifier()
    if verifier is not None:
        env = dict(os.environ, PYTHONPATH=str(verifier.parent.parent / "lib" / "python"))
        theirs = [sys.executable, str(verifier), "--in", str(save_path), "--format", "xl"]
        rows.append(("verify, end to end", *paired(args.repeat, lambda: timed_process(ours),
                                                   lambda: timed_process(theirs, env))))  # fmt: skip
    for path in (save_path, raw_path):
        path.unlink(missing_ok=True)
    workdir.rmdir()
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; {args.size_mb} MiB domain, stream {size:,} bytes, "
          f"best of {args.repeat}, files in {args.dir}")  # fmt: skip
    print(f"{'operation':<24} {'MB/s':>9} {'raw MB/s':>9} {'ratio':>6}")
    for name, took, raw in rows:
        print(f"{name:<24} {size / took / 1e6:>9,.0f} {size / raw / 1e6:>9,.0f} {raw / took:>6.2f}")
    if verifier is None:
        print("# verify-stream-v2 not found: run .ci/fetch-xen-verifier for the end-to-end comparison")
    else:
        print("# 'verify, end to end': the baseline is Xen's verify-stream-v2 on the same file")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:,.0f} MiB ({args.size_mb} MiB domains, at most two at once)")


if __name__ == "__main__":
    main()
