"""Guest RAM is the only large allocation: it costs nothing until touched, it is freed the moment the domain is
destroyed (with the cyclic garbage collector off, so no reference cycle can keep it), and a local migration holds
no copy of the stream. Measured as this process's resident memory (``/proc/self/status``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc/self/status")

PAGE = 4096


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def touch(memory: object, size: int) -> None:
    """Write one byte in every page (what a guest that uses all its RAM costs)."""
    for offset in range(0, size, PAGE):
        memory[offset] = 1  # type: ignore[index]


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def vm(memory_mb: int) -> DomainConfig:
    return DomainConfig.from_xl(f'name = "big"\ntype = "hvm"\nmemory = {memory_mb}\n')


def test_untouched_ram_costs_nothing(collector_off: None) -> None:
    before = rss_mb()
    ts = Toolstack(Hypervisor("4.14"))
    domid = ts.create(vm(2048), start=True)
    assert len(ts.hv.domain(domid).memory) == 2048 << 20
    assert rss_mb() - before < 64


def test_destroyed_domains_give_their_ram_back_at_once(collector_off: None) -> None:
    hv_ts = Toolstack(Hypervisor("4.14"))
    samples = []
    for _ in range(12):
        domid = hv_ts.create(vm(96), start=True)
        touch(hv_ts.hv.domain(domid).memory, 96 << 20)
        samples.append(rss_mb())
        hv_ts.destroy(domid)
    # every round holds one 96 MiB domain at its peak; nothing accumulates across rounds (12 x 96 MiB would)
    assert max(samples) - min(samples) < 40, samples


def test_a_local_migration_holds_no_copy_of_the_stream(collector_off: None) -> None:
    src, dst = Toolstack(Hypervisor("4.14")), Toolstack(Hypervisor("4.14"))
    domid = src.create(vm(128), start=True)
    touch(src.hv.domain(domid).memory, 128 << 20)
    before = rss_mb()
    new = src.migrate(domid, dst)
    after = rss_mb()
    assert new in dst.hv.domains and domid not in src.hv.domains
    assert after - before < 48  # the source's 128 MiB went back as the copy's arrived; no stream buffer stayed


def test_a_closed_host_gives_all_its_ram_back(collector_off: None) -> None:
    """A host that is done with is closed: its domains, dom0 included, are destroyed and their RAM released at once
    (dropping the host would leave that to the cyclic collector, here switched off)."""
    ts = Toolstack(Hypervisor("4.14"))
    domid = ts.create(vm(96), start=True)
    touch(ts.hv.domain(domid).memory, 96 << 20)
    before = rss_mb()
    ts.hv.close()
    assert before - rss_mb() > 80 and ts.hv.domains == {}


def test_scenario_runs_leave_no_ram_behind(collector_off: None) -> None:
    from xenabi.scenarios import run_scenario

    run_scenario("migrate-up", controlled=True, rounds=2)
    before = rss_mb()
    for _ in range(3):
        run_scenario("migrate-up", controlled=True, rounds=2)
    assert rss_mb() - before < 24  # each run's hosts are closed when it ends
