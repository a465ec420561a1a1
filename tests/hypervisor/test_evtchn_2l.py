"""spec/evtchn.md §4: the 2-level ABI on the real shared_info / vcpu_info layout, and the guest consumer (§4.5)."""

from __future__ import annotations

import pytest

from xenabi.abi.xen import PAGE_SIZE
from xenabi.guest.evtchn_2l import TwoLevelGuest
from xenabi.hypervisor import Hypervisor, UpcallVia
from xenabi.hypervisor.domain import SHARED_INFO_GFN

from ..conftest import ev, new_domu, port_of

SHINFO = SHARED_INFO_GFN * PAGE_SIZE


def test_section4_1_layout_64_bit() -> None:
    hv = Hypervisor()
    a = new_domu(hv)
    d = hv.domain(a)
    port = 130  # word 2, bit 2
    ipi = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(port)][-1]
    ev(hv, a, "send", port=ipi)
    assert d.memory[SHINFO + 2048 + 16] == 1 << 2  # evtchn_pending[2] bit 2
    assert d.memory[SHINFO + 8] == 1 << 2  # vcpu_info[0].evtchn_pending_sel bit 2
    assert d.memory[SHINFO + 0] == 1  # evtchn_upcall_pending
    assert (d.shinfo_mask - SHINFO) == 2048 + 512


def test_section4_1_layout_32_bit() -> None:
    hv = Hypervisor()
    a = new_domu(hv, "pv")
    hv.set_guest_width(a, 32)
    d = hv.domain(a)
    ipi = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(40)][-1]  # port 40: word 1, bit 8
    ev(hv, a, "send", port=ipi)
    assert d.memory[SHINFO + 2048 + 5] == 1  # bit 40 of the bitmap
    assert d.memory[SHINFO + 4] == 1 << 1  # pending_sel is a uint32 at offset 4
    assert (d.shinfo_mask - SHINFO) == 2048 + 128


def test_section4_1_vcpus_beyond_32_use_their_own_vcpu_info() -> None:
    hv = Hypervisor()
    a = new_domu(hv, max_vcpus=40)
    d = hv.domain(a)
    ipi = port_of(hv, a, "bind_ipi", vcpu=35)
    ev(hv, a, "send", port=ipi)
    assert d.memory[d.vcpus[35].info_offset] == 1 and d.vcpus[35].upcall_count == 1


def test_section4_2_already_pending_returns_early(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    ev(hv, a, "send", port=ipi)
    d.memory[SHINFO + 8] = 0  # guest cleared its selector but not the pending bit
    ev(hv, a, "send", port=ipi)
    assert d.memory[SHINFO + 8] == 0 and d.vcpus[0].upcall_count == 1


def test_section4_2_masked_port_sets_pending_only(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    guest = TwoLevelGuest(hv, a)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    guest.mask(ipi)
    ev(hv, a, "send", port=ipi)
    assert guest.is_pending(ipi) and d.memory[SHINFO + 8] == 0 and d.vcpus[0].upcall_count == 0


def test_section4_2_upcall_only_on_a_new_upcall_pending(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    ports = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(70)]
    ev(hv, a, "send", port=ports[0])
    ev(hv, a, "send", port=ports[69])  # another word: new selector bit, but upcall_pending is already set
    assert d.memory[SHINFO + 8] == 0b11 and d.vcpus[0].upcall_count == 1


def test_section4_3_unmask_acts_only_if_it_was_masked(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    guest = TwoLevelGuest(hv, a)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    guest.mask(ipi)
    ev(hv, a, "send", port=ipi)
    assert ev(hv, a, "unmask", port=ipi)[0] == 0
    assert not guest.is_masked(ipi) and d.memory[SHINFO + 8] == 1 and d.vcpus[0].upcall_count == 1
    d.memory[SHINFO + 8] = 0
    d.memory[SHINFO] = 0
    assert ev(hv, a, "unmask", port=ipi)[0] == 0  # not masked: nothing happens though it is pending
    assert d.memory[SHINFO + 8] == 0 and d.vcpus[0].upcall_count == 1


def test_section4_3_unmask_targets_the_notify_vcpu(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    d = hv.domain(a)
    guest = TwoLevelGuest(hv, a)
    unbound = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    p0 = port_of(hv, 0, "bind_interdomain", remote_dom=a, remote_port=unbound)
    ev(hv, a, "bind_vcpu", port=unbound, vcpu=1)
    guest.mask(unbound)
    ev(hv, 0, "send", port=p0)
    ev(hv, a, "unmask", port=unbound)
    assert d.vcpus[1].upcall_count == 1 and d.vcpus[0].upcall_count == 0


def test_section4_4_clear_pending_on_close(hv: Hypervisor) -> None:
    a = new_domu(hv)
    guest = TwoLevelGuest(hv, a)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    ev(hv, a, "send", port=ipi)
    ev(hv, a, "close", port=ipi)
    assert not guest.is_pending(ipi)


def test_upcall_records_how_it_was_delivered(hv: Hypervisor) -> None:
    a = new_domu(hv)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    ev(hv, a, "send", port=ipi)
    assert hv.domain(a).vcpus[0].upcalls[-1].via is UpcallVia.DOMAIN_CALLBACK


# --- §4.5 the guest consumer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hvm", "pv"])
def test_section4_5_consumer_handles_every_pending_unmasked_port_once(kind: str) -> None:
    hv = Hypervisor()
    a = new_domu(hv, kind)
    guest = TwoLevelGuest(hv, a)
    ports = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(200)]
    masked = set(ports[::7])
    for port in masked:
        guest.mask(port)
    for port in ports[::3]:
        ev(hv, a, "send", port=port)
    got: list[int] = []
    guest.upcall(0, got.append)
    expected = [p for p in ports[::3] if p not in masked]
    assert sorted(got) == expected and len(got) == len(set(got))
    # A masked-then-unmasked pending event arrives after the unmask (Linux's unmask path per guest type).
    late = [p for p in ports[::3] if p in masked]
    for port in late:
        assert guest.unmask(port) == 0
    got.clear()
    guest.upcall(0, got.append)
    assert sorted(got) == late


def test_section4_5_round_robin_cursor_resumes_after_the_last_port(hv: Hypervisor) -> None:
    a = new_domu(hv)
    guest = TwoLevelGuest(hv, a)
    ports = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(10)]
    ev(hv, a, "send", port=ports[5])
    guest.upcall(0, lambda port: None)
    for port in (ports[2], ports[8]):
        ev(hv, a, "send", port=port)
    got: list[int] = []
    guest.upcall(0, got.append)
    assert got == [ports[8], ports[2]]  # scanning starts after port 6, wraps to 3
