"""Fleet planning at scale: admission summary and upgrade plan for synthetic fleets, against per-pair evaluation.

    python bench/fleet.py [--sizes 100000,1000000,10000000] [--vms-per-host 100]

For each size a synthetic fleet is written to a temporary SQLite file (``xenabi fleet synth``: hosts = VMs / 100,
pools of about 500 hosts). Then, each in a fresh process so that its peak memory is its own:

- summary: the full admission summary (every VM class against every host class, expanded with counts);
- plan: a capacity-aware rolling upgrade of 60% of the hosts (the first 60% of each pool) to 4.22 with ABI
  control, in waves of at most 10% of a pool, every VM of an upgraded host migrated first-fit decreasing;
- serial (up to 10^6 VMs): the same plan one host of a pool at a time (``--max-parallel 1``, XAPI's pace);
- verify (up to 10^6 VMs): writing that plan's file, then replaying it against the inventory;
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
    from xenabi.fleet.planfile import verify_plan, write_plan
    from xenabi.fleet.planner import direct_admissible_hosts, summary
    from xenabi.fleet.upgrade import plan_upgrade

    inv = Inventory(db)
    start = time.perf_counter()
    result: dict[str, object] = {}
    if task == "synth":
        inv.synth(size, max(1, size // 100), seed=1)
    elif task == "summary":
        rows = summary(inv)
        result["classes"] = len(rows)
    elif task in ("plan", "serial", "verify"):
        hosts = sixty_percent(inv)
        start = time.perf_counter()
        plan = plan_upgrade(inv, hosts, "4.22", True, max_parallel="1" if task == "serial" else "10%")
        result |= {"hosts": plan.upgraded, "migrations": plan.migrations, "waves": len(plan.waves),
                   "complete": plan.complete}  # fmt: skip
        if task == "verify":
            path = Path(db).with_suffix(".plan.json")
            start = time.perf_counter()
            with path.open("w") as out:
                write_plan(plan, inv, out)
            result["write_seconds"] = time.perf_counter() - start
            del plan
            start = time.perf_counter()
            verdict = verify_plan(inv, path)
            result |= {"replays": verdict.complete, "plan_mb": path.stat().st_size / 2**20}
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


def sixty_percent(inv: object) -> list[str]:
    """The first 60% of each pool's hosts, by id."""
    by_pool: dict[str, list[str]] = {}
    for name, pool in inv.db.execute("SELECT name, pool FROM hosts ORDER BY id"):  # type: ignore[attr-defined]
        by_pool.setdefault(pool, []).append(name)
    return [name for names in by_pool.values() for name in names[: int(len(names) * 0.6)]]


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
              f"{'peak MB':>8} {'migrations':>11} {'waves':>6} {'serial s':>9} {'write s':>8} {'verify s':>9} "
              f"{'peak MB':>8} {'direct s/pair':>14} {'speed-up':>10}")  # fmt: skip
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="xenabi-fleet-") as workdir:
            db = str(Path(workdir) / "fleet.sqlite")
            synth = run("synth", db, size)
            summary = run("summary", db, size)
            plan = run("plan", db, size)
            small = size <= 1_000_000
            serial = run("serial", db, size) if small else {}
            verify = run("verify", db, size) if small else {}
            direct = run("direct", db, size)
            assert plan["complete"] and (not small or (serial["complete"] and verify["replays"]))
            per_pair = direct["seconds"] / direct["pairs"]
            hosts = max(1, size // 100)
            speedup = per_pair * size * hosts / summary["seconds"]
            print(f"{size:>11,} {hosts:>8,} {synth['seconds']:>8.1f} {summary['seconds']:>10.2f} "
                  f"{summary['peak_mb']:>8.0f} {plan['seconds']:>7.2f} {plan['peak_mb']:>8.0f} "
                  f"{plan['migrations']:>11,} {plan['waves']:>6} {_f(serial, 'seconds', 9)} "
                  f"{_f(verify, 'write_seconds', 8)} {_f(verify, 'seconds', 9)} {_f(verify, 'peak_mb', 8, 0)} "
                  f"{per_pair * 1e6:>11.2f} us {speedup:>10,.0f}x", flush=True)  # fmt: skip


def _f(result: dict[str, float], key: str, width: int, digits: int = 2) -> str:
    return f"{result[key]:>{width}.{digits}f}" if key in result else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
