"""Reading an xl.cfg into libxl's JSON (issue 19), beside parsing alone and beside real xl's dry run.

    python bench/config.py [--repeat 5] [--rounds 200]

Over the project's example configs (``examples/*.cfg``: HVM with disks, NICs, display, firmware and actions; PV with
a VNC framebuffer; PVH; ...), each figure is configs per second, best of ``--repeat`` runs of ``--rounds`` passes:

- parse: ``xlcfg.parse`` alone (the grammar, checked against libxlutil by the issue 16 differential), the baseline;
- to JSON: ``DomainConfig.from_xl(text).to_json()``, the parse plus everything issue 19 adds (the disk scanner, the
  vif options, the key table, xl's defaults, libxl's field order);
- JSON back: ``DomainConfig.from_json(doc).to_json()``, what a restore does with a stream's xl header.

The ratio is each figure over the parse baseline from the same run. When Debian's xl 4.17 is unpacked
(``.ci/fetch-xen-verifier``, ``.ci/fetch-libxlutil``) and a C compiler is there, real ``xl create -n`` is timed on
the same configs too (a process per config, as an operator runs it), for scale. Peak resident memory is printed at
the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from xenabi.toolstack import DomainConfig, xlcfg

ROOT = Path(__file__).resolve().parents[1]


def best(run: Callable[[], None], count: int, repeat: int) -> float:
    """Items per second, best of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    texts = [path.read_text() for path in sorted(ROOT.glob("examples/*.cfg"))]
    docs = [DomainConfig.from_xl(text).to_json() for text in texts]
    count = len(texts) * args.rounds

    def parse() -> None:
        for _ in range(args.rounds):
            for text in texts:
                xlcfg.parse(text)

    def to_json() -> None:
        for _ in range(args.rounds):
            for text in texts:
                DomainConfig.from_xl(text).to_json()

    def json_back() -> None:
        for _ in range(args.rounds):
            for doc in docs:
                DomainConfig.from_json(doc).to_json()

    figures = {"parse (baseline)": best(parse, count, args.repeat), "to JSON": best(to_json, count, args.repeat),
               "JSON back": best(json_back, count, args.repeat)}  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from tests.oracle import xl_dryrun  # the test suite's oracle: Debian's xl under the dry-run shim

    if xl_dryrun.unavailable() is None:
        figures["real xl create -n"] = best(lambda: [xl_dryrun.dry_run(t) for t in texts], len(texts), args.repeat)
    print(f"# CPython {platform.python_version()}, {len(texts)} example configs, {sum(map(len, texts)):,} bytes; "
          f"JSON {sum(len(json.dumps(d)) for d in docs):,} bytes")  # fmt: skip
    base = figures["parse (baseline)"]
    print(f"{'step':24} {'configs/s':>12} {'ratio':>7}")
    for name, value in figures.items():
        print(f"{name:24} {value:12,.0f} {value / base:7.2f}")
    print(f"# peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
