"""Fleet planning at scale: admission summary and upgrade plan for synthetic fleets, against per-pair evaluation.

    python bench/fleet.py [--sizes 100000,1000000,10000000] [--vms-per-host 100]

For each size a synthetic fleet is written to a temporary SQLite file (``xenabi fleet synth``: hosts = VMs / 100,
pools of about 500 hosts). Then, each in a fresh process so that its peak memory is its own:

- summary: the full admission summary (every VM class against every host class, expanded with counts);
- plan: an upgrade plan moving every host older than 4.20 to 4.22 with ABI control;
- direct: per-pair admission (one ``admission()`` call per VM and host) for a sample of VMs against every host,
  timed per pair; the speed-up is that time scaled to the whole fleet (VMs x hosts pairs) over the summary's time.

Peak memory is the process's maximum resident set (``ru_maxrss``), which includes the interpreter (about 20 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(task: str, db: str, size: int) -> None:
    """Run one task in this (fresh) process and print its figures as JSON."""
    from xenabi.fleet.inventory import Inventory
    from xenabi.fleet.planner import direct_admissible_hosts, plan_upgrade, summary

    inv = Inventory(db)
    start = time.perf_counter()
    result: dict[str, object] = {}
    if task == "synth":
        inv.synth(size, max(1, size // 100), seed=1)
    elif task == "summary":
        rows = summary(inv)
        result["classes"] = len(rows)
    elif task == "plan":
        old = ("4.3", "4.4", "4.5", "4.6", "4.7", "4.8", "4.9", "4.10", "4.11", "4.12", "4.13", "4.14", "4.15",
               "4.16", "4.17", "4.18", "4.19")  # fmt: skip
        marks = ",".join("?" * len(old))
        query = f"SELECT name FROM hosts WHERE release IN ({marks}) ORDER BY id"
        hosts = [row[0] for row in inv.db.execute(query, old)]
        start = time.perf_counter()
        plan = plan_upgrade(inv, hosts, "4.22", True)
        result |= {"hosts": plan.hosts, "affected": plan.affected_vms, "safe": plan.safe}
    elif task == "direct":
        n_hosts = inv.counts()[0]
        sample = max(1, 2_000_000 // n_hosts)
        names = [row[0] for row in inv.db.execute("SELECT name FROM vms ORDER BY id LIMIT ?", (sample,))]
        start = time.perf_counter()
        direct_admissible_hosts(inv, names)
        result |= {"pairs": sample * n_hosts}
    result["seconds"] = time.perf_counter() - start
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(task: str, db: str, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, "--db", db, "--size", str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--child")
    parser.add_argument("--db")
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.db, args.size)
        return
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.machine()}; SQLite {__import__('sqlite3').sqlite_version}")  # fmt: skip
    header = (f"{'VMs':>11} {'hosts':>8} {'synth s':>8} {'summary s':>10} {'peak MB':>8} {'plan s':>7} "
              f"{'peak MB':>8} {'direct s/pair':>14} {'speed-up':>10}")  # fmt: skip
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="xenabi-fleet-") as workdir:
            db = str(Path(workdir) / "fleet.sqlite")
            synth = run("synth", db, size)
            summary = run("summary", db, size)
            plan = run("plan", db, size)
            direct = run("direct", db, size)
            per_pair = direct["seconds"] / direct["pairs"]
            hosts = max(1, size // 100)
            speedup = per_pair * size * hosts / summary["seconds"]
            print(f"{size:>11,} {hosts:>8,} {synth['seconds']:>8.1f} {summary['seconds']:>10.2f} "
                  f"{summary['peak_mb']:>8.0f} {plan['seconds']:>7.2f} {plan['peak_mb']:>8.0f} "
                  f"{per_pair * 1e6:>11.2f} us {speedup:>10,.0f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
