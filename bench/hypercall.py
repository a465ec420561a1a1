"""Hypercall throughput of the model, each figure also as a ratio to the dispatch floor measured in the same run.

    python bench/hypercall.py [--seconds 1.0]

- floor: an unknown EVTCHNOP sub-op (domain lookup, gate check, table lookup, -ENOSYS);
- 2L send: EVTCHNOP_send on an unmasked interdomain channel (the guest clears PENDING, the selector and
  evtchn_upcall_pending between sends, as the FIFO rows clear theirs, so every send takes the full new-event path
  and raises an upcall; those byte writes are measured and subtracted);
- 2L send+consume: the same with the reference 2-level consumer handling each event;
- FIFO send, new head: queue empty each time (the guest unlinks the word and clears READY, subtracted likewise);
- FIFO send, append: 1000 distinct ports per batch, so all but the first are appended through the tail's LINK;
- FIFO send+consume: the reference FIFO consumer handling each event.

Everything is measured twice in the same run: with the registry's three issue-18 rows taken out (the gating sets a
domain carried before them) and with all five, so the two columns show what gating the new operations costs the
event channel path.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.features import REGISTRY
from xenabi.abi.xen import HYPERVISOR_event_channel_op as EC
from xenabi.guest.evtchn_2l import TwoLevelGuest
from xenabi.guest.evtchn_fifo import FifoGuest
from xenabi.hypervisor import Hypervisor


def rate(body: Callable[[int], None], seconds: float) -> float:
    """Calls per second of ``body(n)``, which performs n operations; best of three rounds."""
    n = 1000
    while True:
        start = time.perf_counter()
        body(n)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 10:
            break
        n *= 4
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        body(n)
        best = max(best, n / (time.perf_counter() - start))
    return best


def per_op(body: Callable[[int], None], overhead: Callable[[int], None], seconds: float) -> float:
    """Rate of ``body`` with the cost of ``overhead`` (the same loop without the hypercall) taken out."""
    total = 1 / rate(body, seconds)
    extra = 1 / rate(overhead, seconds)
    return 1 / max(total - extra, 1e-12)


def setup(features: int) -> tuple[Hypervisor, int, int, int]:
    hv = Hypervisor("4.14", abi_control=True)
    domid = hv.create_domain(CreateDomain.for_type("hvm", features=features), memory_mb=8)
    hv.unpause(domid)  # only a domain that has run issues hypercalls
    unbound = E.AllocUnbound(dom=domid, remote_dom=0)
    hv.hypercall(domid, EC, E.EVTCHNOP_alloc_unbound, unbound)
    bind = E.BindInterdomain(remote_dom=domid, remote_port=unbound.port)
    hv.hypercall(0, EC, E.EVTCHNOP_bind_interdomain, bind)
    return hv, domid, bind.local_port, unbound.port


def measure(seconds: float) -> dict[str, float]:
    call = Hypervisor.hypercall
    figures: dict[str, float] = {}

    # floor
    hv, domid, backend, port = setup(0)
    unknown = E.Send(backend)

    def floor(n: int) -> None:
        for _ in range(n):
            call(hv, 0, EC, 99, unknown)

    figures["dispatch floor (unknown sub-op)"] = rate(floor, seconds)

    # 2-level
    d = hv.domain(domid)
    memory = d.memory
    pending_at = d.shinfo_pending + (port >> 3)
    info_at = d.vcpus[0].info_offset
    sel_at = info_at + d.pending_sel
    send = E.Send(backend)

    def send_2l(n: int) -> None:
        for _ in range(n):
            call(hv, 0, EC, E.EVTCHNOP_send, send)
            memory[pending_at] = 0
            memory[sel_at] = 0
            memory[info_at] = 0

    def clear_2l(n: int) -> None:
        for _ in range(n):
            memory[pending_at] = 0
            memory[sel_at] = 0
            memory[info_at] = 0

    figures["2L send (interdomain, unmasked)"] = per_op(send_2l, clear_2l, seconds)
    guest2 = TwoLevelGuest(hv, domid)
    sink: list[int] = []

    def send_consume_2l(n: int) -> None:
        for _ in range(n):
            call(hv, 0, EC, E.EVTCHNOP_send, send)
            guest2.upcall(0, sink.append)
        sink.clear()

    figures["2L send + guest consume"] = rate(send_consume_2l, seconds)

    # FIFO
    hv, domid, backend, port = setup(REGISTRY["evtchn_fifo"].cdf_flag)
    fifo = FifoGuest(hv, domid)
    fifo.init_control(0)
    fifo.setup_port(port)
    fifo.unmask(port)
    fifo.upcall(0, sink.append)
    words = hv.domain(domid).memory32
    word_at = fifo.word_index(port)
    ready_at = fifo.control_block[0] // 4
    info = hv.domain(domid).vcpus[0].info_offset
    memory = hv.domain(domid).memory
    send = E.Send(backend)

    def send_new_head(n: int) -> None:
        for _ in range(n):
            call(hv, 0, EC, E.EVTCHNOP_send, send)
            words[word_at] = 0
            words[ready_at] = 0
            memory[info] = 0

    def clear_fifo(n: int) -> None:
        for _ in range(n):
            words[word_at] = 0
            words[ready_at] = 0
            memory[info] = 0

    figures["FIFO send, new head"] = per_op(send_new_head, clear_fifo, seconds)

    batch: list[E.Send] = []
    for _ in range(1000):
        unbound = E.AllocUnbound(dom=domid, remote_dom=0)
        hv.hypercall(domid, EC, E.EVTCHNOP_alloc_unbound, unbound)
        fifo.setup_port(unbound.port)
        fifo.unmask(unbound.port)
        bind = E.BindInterdomain(remote_dom=domid, remote_port=unbound.port)
        hv.hypercall(0, EC, E.EVTCHNOP_bind_interdomain, bind)
        batch.append(E.Send(bind.local_port))
    fifo.upcall(0, sink.append)
    sink.clear()

    def send_append(n: int) -> None:
        done = 0
        while done < n:
            start = time.perf_counter()
            for arg in batch:
                call(hv, 0, EC, E.EVTCHNOP_send, arg)
            send_append.timed += time.perf_counter() - start  # type: ignore[attr-defined]
            fifo.upcall(0, sink.append)
            sink.clear()
            done += len(batch)

    send_append.timed = 0.0  # type: ignore[attr-defined]
    total = 20_000 * max(1, int(seconds * 5))
    send_append(total)
    figures["FIFO send, append"] = total / send_append.timed  # type: ignore[attr-defined]

    def send_consume_fifo(n: int) -> None:
        for _ in range(n):
            call(hv, 0, EC, E.EVTCHNOP_send, send)
            fifo.upcall(0, sink.append)
        sink.clear()

    figures["FIFO send + guest consume"] = rate(send_consume_fifo, seconds)

    return figures


ISSUE_18_ROWS = ("gnttab_v2", "vcpu_phys_area", "xenver_varbuf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    seconds = parser.parse_args().seconds
    # Before and after the issue-18 rows, in one run: the same code with the registry's three newer rows taken out
    # (what the gating sets hold before them) and with all five. The event channel path must not notice.
    # Interleaved, best of two per column, so that neither column always runs on a warmer or fuller process.
    rows = [REGISTRY[name] for name in ISSUE_18_ROWS]
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for kind in ("before", "after", "after", "before"):
        if kind == "before":
            for row in rows:
                REGISTRY.unregister(row.name)
        runs[kind].append(measure(seconds))
        if kind == "before":
            for row in rows:
                REGISTRY.register(row)
    before, after = ({name: max(run[name] for run in runs[kind]) for name in runs[kind][0]} for kind in runs)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# {python} on {platform.machine()}, {platform.processor() or 'cpu'}")
    print(f"{'operation':36} {'2 rows calls/s':>15} {'ratio':>6} {'5 rows calls/s':>15} {'ratio':>6}")
    floor_before, floor_after = before["dispatch floor (unknown sub-op)"], after["dispatch floor (unknown sub-op)"]
    for name in after:
        print(
            f"{name:36} {before[name]:15,.0f} {before[name] / floor_before:6.2f} "
            f"{after[name]:15,.0f} {after[name] / floor_after:6.2f}"
        )
    print(f"# floor after / before: {floor_after / floor_before:.2f}")


if __name__ == "__main__":
    main()
