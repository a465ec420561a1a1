"""The hypercall trace (issue 21): free when off, and what it costs when on.

    python bench/trace.py [--seconds 1.0]

The dispatch floor (an unknown EVTCHNOP sub-op: domain lookup, gate check, table lookup, -ENOSYS) and a 2-level
EVTCHNOP_send, each called as guests call them (``hv.hypercall``, looked up on the host each time), on three hosts
in the same run: one that was never traced (the baseline), one whose trace was started and stopped again (off: the
floor must not move), and one recording (every record built; the first 1,000 kept, the rest counted as dropped, so
that memory stays flat). Three rounds, each host first in one of them; best of three. Peak resident memory is
printed at the end.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from collections.abc import Callable

from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.xen import HYPERVISOR_event_channel_op as EC
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.trace import HypercallTrace


def rate(body: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    body(n)
    return n / (time.perf_counter() - start)


def host(kind: str) -> tuple[Hypervisor, int, int]:
    hv = Hypervisor("4.14", abi_control=True, memory_mb=1024)
    domid = hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=8)
    hv.unpause(domid)
    unbound = E.AllocUnbound(dom=domid, remote_dom=0)
    hv.hypercall(domid, EC, E.EVTCHNOP_alloc_unbound, unbound)
    bind = E.BindInterdomain(remote_dom=domid, remote_port=unbound.port)
    hv.hypercall(0, EC, E.EVTCHNOP_bind_interdomain, bind)
    if kind in ("off", "on"):
        hv.start_trace(HypercallTrace(limit=1000))  # records built for every call, the first 1000 kept
    if kind == "off":
        hv.stop_trace()
    return hv, domid, bind.local_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    seconds = parser.parse_args().seconds
    kinds = ("never traced", "off", "on")
    hosts = {kind: host(kind.split()[0] if kind != "never traced" else "never") for kind in kinds}
    results: dict[tuple[str, str], float] = {}
    n = max(1000, int(200_000 * seconds))
    order = list(hosts.items())
    for round_ in range(3):
        for kind, (hv, _domid, backend) in order[round_:] + order[:round_]:  # each host first once
            unknown, send = E.Send(backend), E.Send(backend)

            def floor(count: int, hv: Hypervisor = hv, arg: E.Send = unknown) -> None:
                for _ in range(count):
                    hv.hypercall(0, EC, 99, arg)

            def sends(count: int, hv: Hypervisor = hv, arg: E.Send = send) -> None:
                for _ in range(count):
                    hv.hypercall(0, EC, E.EVTCHNOP_send, arg)

            for name, body in (("dispatch floor", floor), ("2L send (event already pending)", sends)):
                results[(kind, name)] = max(results.get((kind, name), 0.0), rate(body, n))
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    print(f"{'operation':34} " + " ".join(f"{kind + ' calls/s':>22}" for kind in kinds) + f" {'off/never':>10}")
    for name in ("dispatch floor", "2L send (event already pending)"):
        base = results[("never traced", name)]
        cells = " ".join(f"{results[(kind, name)]:22,.0f}" for kind in kinds)
        print(f"{name:34} {cells} {results[('off', name)] / base:10.2f}")
    print(f"# peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
