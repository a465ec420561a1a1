"""Peak resident memory of the operations that move a domain's RAM, each in a fresh process so peaks do not mix.

    python bench/memory.py [--size-mb 1024]

- save then restore of an N GiB domain in one process (aim: at most N + 0.2 GiB);
- an in-process local migration (aim: at most 2N + 0.2 GiB at the peak, N + 0.2 GiB afterwards);
- ``xenabi demo`` (aim: 0.5 s and 120 MB), timed as a user runs it, and with both guest kernels
  (``--kernel 5.10 --kernel 6.1``; issue 21's aim: 1 s and 200 MB), each the best of three runs;
- the test suite (aim: 12 s and 400 MB on 2 cores), run in a child process whose own peak is reported
  (``--no-suite`` skips it).

Each row prints the figure beside its aim, computed for the size asked. The domains' RAM is touched in full first,
as a running guest's would be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, resource, sys, tempfile
from pathlib import Path
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

case, size, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = DomainConfig.from_xl(f'name = "big"\ntype = "hvm"\nmemory = {size}\n')
src = Toolstack(Hypervisor("4.14"))
domid = src.create(cfg, start=True)
memory = src.hv.domain(domid).memory
block = bytes(range(256)) * 4096
for offset in range(0, len(memory), len(block)):
    memory[offset : offset + len(block)] = block
base = rss() - size
out = {"base_mb": base}
if case == "save-restore":
    path = Path(workdir) / "vm.save"
    src.save(domid, path)
    dst = Toolstack(Hypervisor("4.14"))
    dst.restore(path)
    path.unlink()
else:
    dst = Toolstack(Hypervisor("4.14"))
    src.migrate(domid, dst)
    out["after_mb"] = rss()
out["peak_mb"] = peak()
print(json.dumps(out))
"""


def run_case(case: str, size_mb: int, workdir: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(size_mb), workdir], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def demo(*args: str, runs: int = 3) -> tuple[float, float]:
    """Wall time (best of ``runs``, start-up included, as a user sees it) and the highest peak resident memory."""
    script = (
        "import resource, sys, time\nfrom xenabi.cli import main\n"
        "try:\n    main(['demo', '--json', *sys.argv[1:]])\nexcept SystemExit:\n    pass\n"
        "print('FIGURES', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    walls, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
        line = next(line for line in done.stdout.splitlines() if line.startswith("FIGURES"))
        peaks.append(float(line.split()[1]))
    return min(walls), max(peaks)


def suite() -> tuple[float, float]:
    """Wall time and peak resident memory of the pytest process running the whole suite."""
    script = (
        "import resource, sys, pytest\ncode = pytest.main(['-q', '-p', 'no:cacheprovider'])\n"
        "print('FIGURES', int(code), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - start
    line = next(line for line in done.stdout.splitlines() if line.startswith("FIGURES"))
    _name, code, peak = line.split()
    if code != "0":
        raise SystemExit(f"the test suite failed (pytest exit {code})")
    return wall, float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--no-suite", action="store_true", help="Do not time the test suite.")
    args = parser.parse_args()
    size = args.size_mb
    workdir = tempfile.mkdtemp(prefix="xenabi-memory-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{size} MiB domains, each case in a fresh process")  # fmt: skip
    print(f"{'case':<34} {'peak MiB':>9} {'aim MiB':>8} {'after MiB':>10} {'aim MiB':>8}")
    figures = run_case("save-restore", size, workdir)
    print(f"{'save then restore':<34} {figures['peak_mb']:>9,.0f} {size + 205:>8,}")
    figures = run_case("migrate", size, workdir)
    print(f"{'local migration':<34} {figures['peak_mb']:>9,.0f} {2 * size + 205:>8,} "
          f"{figures['after_mb']:>10,.0f} {size + 205:>8,}")  # fmt: skip
    wall, peak = demo()
    print(f"xenabi demo: {wall:.2f} s wall (aim 0.5 s), {peak:,.0f} MiB peak (aim 120 MB)")
    wall, peak = demo("--kernel", "5.10", "--kernel", "6.1")
    print(f"xenabi demo, both kernels: {wall:.2f} s wall (aim 1 s), {peak:,.0f} MiB peak (aim 200 MB)")
    if not args.no_suite:
        wall, peak = suite()
        print(f"test suite: {wall:.1f} s wall (aim 12 s), {peak:,.0f} MiB peak of the pytest process (aim 400 MB)")
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
