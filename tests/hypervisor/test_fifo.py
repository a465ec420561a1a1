"""spec/evtchn.md §3.12-§3.14 (init_control, expand_array, set_priority) and §5 (the FIFO ABI on guest memory)."""

from __future__ import annotations

import pytest

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.guest.evtchn_fifo import LINKED, MASKED, PENDING, FifoGuest
from xenabi.hypervisor import ChanState, Hypervisor
from xenabi.hypervisor.domain import SHARED_INFO_GFN

from ..conftest import ev, interdomain, new_domu, port_of

EINVAL, ENOENT, ENOSPC, ENOSYS, EACCES = -errno.EINVAL, -errno.ENOENT, -errno.ENOSPC, -errno.ENOSYS, -errno.EACCES


def fifo_domu(hv: Hypervisor, vcpus: int = 1, memory_mb: int = 8) -> tuple[int, FifoGuest]:
    domid = new_domu(hv, "hvm", max_vcpus=vcpus, memory_mb=memory_mb)
    guest = FifoGuest(hv, domid)
    for vcpu in range(vcpus):
        assert guest.init_control(vcpu) == 0
    return domid, guest


def bound_pair(hv: Hypervisor, guest: FifoGuest) -> tuple[int, int]:
    """An interdomain channel dom0 -> guest, set up and unmasked by the guest: (dom0 port, guest port)."""
    gport = port_of(hv, guest.domid, "alloc_unbound", dom=guest.domid, remote_dom=0)
    assert guest.setup_port(gport) == 0
    port0 = port_of(hv, 0, "bind_interdomain", remote_dom=guest.domid, remote_port=gport)
    assert guest.unmask(gport) == 0
    return port0, gport


def head(guest: FifoGuest, vcpu: int, priority: int) -> int:
    return guest.d.memory32[(guest.control_block[vcpu] + E.CONTROL_BLOCK_HEAD) // 4 + priority]


def ready(guest: FifoGuest, vcpu: int = 0) -> int:
    return guest.d.memory32[guest.control_block[vcpu] // 4]


# --- §3.12 init_control ----------------------------------------------------------------------------------------
def test_section3_12_check_order(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    before = bytes(d.memory)
    cases = [
        (dict(control_gfn=20, offset=0, vcpu=1), ENOENT),
        (dict(control_gfn=20, offset=4025, vcpu=5), ENOENT),  # vCPU first
        (dict(control_gfn=20, offset=4032, vcpu=0), EINVAL),
        (dict(control_gfn=20, offset=12, vcpu=0), EINVAL),
        (dict(control_gfn=d.nr_pages, offset=0, vcpu=0), EINVAL),
        (dict(control_gfn=SHARED_INFO_GFN, offset=0, vcpu=0), EINVAL),
    ]
    for fields, rc in cases:
        result, arg = ev(hv, a, "init_control", link_bits=0, **fields)
        assert (result, arg.link_bits) == (rc, 0), fields
    assert d.evtchn_abi == "2l" and d.fifo is None and bytes(d.memory) == before


def test_section3_12_offset_4024_is_the_last_allowed(hv: Hypervisor) -> None:
    a = new_domu(hv)
    rc, arg = ev(hv, a, "init_control", control_gfn=20, offset=4024, vcpu=0)
    assert (rc, arg.link_bits) == (0, 17)
    assert hv.domain(a).evtchn_abi == "fifo"


def test_section3_12_second_control_block_for_a_vcpu_is_einval(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv, vcpus=2)
    assert ev(hv, a, "init_control", control_gfn=30, offset=0, vcpu=0)[0] == EINVAL


def test_section3_12_first_call_carries_2l_pending_into_chn_pending(hv: Hypervisor) -> None:
    a = new_domu(hv)
    p0, pa = interdomain(hv, 0, a)  # bind_interdomain in dom0 sets dom0's port; send to a
    assert ev(hv, 0, "send", port=p0)[0] == 0
    d = hv.domain(a)
    assert d.port_ops.is_pending(d, pa)
    guest = FifoGuest(hv, a)
    assert guest.init_control(0) == 0
    assert d.chans[pa].pending and d.chans[pa].priority == 7
    assert not d.port_ops.is_pending(d, pa) and d.port_ops.is_masked(d, pa)  # no word yet (§3.12 step 6)
    assert d.port_ops.max_evtchns(d) == 131072
    # The event comes back when a page covers the port: Linux fills it with MASKED, so it waits in PENDING.
    assert guest.setup_port(pa) == 0
    assert guest.word(pa) & PENDING and guest.word(pa) & MASKED
    assert guest.unmask(pa) == 0
    got: list[int] = []
    guest.upcall(0, got.append)
    assert got == [pa]


def test_section3_12_quirk_stale_chn_pending_reraised_after_reset(hv: Hypervisor) -> None:
    a = new_domu(hv)
    p0, pa = interdomain(hv, 0, a)
    ev(hv, 0, "send", port=p0)
    guest = FifoGuest(hv, a)
    guest.init_control(0)
    assert ev(hv, a, "reset", dom=a)[0] == 0
    d = hv.domain(a)
    assert d.evtchn_abi == "2l" and d.chans[pa].pending  # never cleared


# --- §3.13 expand_array -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("release", "rc"), [("4.4", -errno.ENOSYS), ("4.7", -errno.ENOSYS), ("4.8", -95), ("4.14", -95)]
)
def test_section3_13_expand_before_init_control(release: str, rc: int) -> None:
    hv = Hypervisor(release, abi_control=True)
    a = new_domu(hv, "hvm", "evtchn_fifo")
    assert ev(hv, a, "expand_array", array_gfn=20)[0] == rc


def test_section3_13_bad_gfn_changes_nothing(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv)
    d = hv.domain(a)
    for gfn in (d.nr_pages, SHARED_INFO_GFN, 2**63):
        assert ev(hv, a, "expand_array", array_gfn=gfn)[0] == EINVAL
    assert d.fifo.num_evtchns == 0 and d.fifo.array == []


def test_section3_13_pages_append_up_to_128_then_enospc(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv, memory_mb=2)
    d = hv.domain(a)
    for _ in range(128):
        assert ev(hv, a, "expand_array", array_gfn=100)[0] == 0  # the same page is accepted each time
    assert d.fifo.num_evtchns == 131072
    assert ev(hv, a, "expand_array", array_gfn=100)[0] == ENOSPC
    assert d.fifo.num_evtchns == 131072


# --- §3.14 set_priority ---------------------------------------------------------------------------------------
def test_section3_14_check_order(hv: Hypervisor) -> None:
    a = new_domu(hv)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    assert ev(hv, a, "set_priority", port=64, priority=3)[0] == EINVAL
    assert ev(hv, a, "set_priority", port=ipi, priority=3)[0] == ENOSYS  # 2-level mode
    FifoGuest(hv, a).init_control(0)
    assert ev(hv, a, "set_priority", port=30, priority=3)[0] == EACCES  # FREE
    assert ev(hv, a, "set_priority", port=0, priority=3)[0] == EACCES  # RESERVED
    assert ev(hv, a, "set_priority", port=30, priority=99)[0] == EACCES  # usable check before range
    assert ev(hv, a, "set_priority", port=ipi, priority=16)[0] == EINVAL
    assert ev(hv, a, "set_priority", port=ipi, priority=15)[0] == 0
    assert hv.domain(a).chans[ipi].priority == 15
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda *_: None)
    assert ev(hv, a, "set_priority", port=xen, priority=1)[0] == EACCES


def test_section3_14_priority_resets_to_7_on_every_bind(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    ev(hv, a, "set_priority", port=ipi, priority=2)
    ev(hv, a, "close", port=ipi)
    assert port_of(hv, a, "bind_ipi", vcpu=0) == ipi and hv.domain(a).chans[ipi].priority == 7


# --- §5.3 set_pending -------------------------------------------------------------------------------------------
def test_section5_3_new_head_sets_head_ready_and_upcall(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    v = hv.domain(a).vcpus[0]
    upcalls = v.upcall_count
    assert ev(hv, 0, "send", port=p0)[0] == 0
    assert head(guest, 0, 7) == pa and ready(guest) == 1 << 7
    assert guest.word(pa) & (PENDING | LINKED) == PENDING | LINKED
    assert v.upcall_count == upcalls + 1


def test_section5_3_append_links_through_tail_without_ready_or_upcall(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    q0, qa = bound_pair(hv, guest)
    ev(hv, 0, "send", port=p0)
    guest.d.memory32[guest.control_block[0] // 4] = 0  # the guest took READY
    upcalls = hv.domain(a).vcpus[0].upcall_count
    ev(hv, 0, "send", port=q0)
    assert guest.word(pa) & E.EVTCHN_FIFO_LINK_MASK == qa
    assert head(guest, 0, 7) == pa and ready(guest) == 0
    assert hv.domain(a).vcpus[0].upcall_count == upcalls


def test_section5_3_masked_or_linked_events_only_set_pending(hv: Hypervisor) -> None:
    _a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    guest.mask(pa)
    ev(hv, 0, "send", port=p0)
    assert guest.word(pa) == PENDING | MASKED and ready(guest) == 0


def test_section5_3_no_array_page_remembers_pending_in_the_channel(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    gport = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    p0 = port_of(hv, 0, "bind_interdomain", remote_dom=a, remote_port=gport)
    ev(hv, 0, "send", port=p0)
    d = hv.domain(a)
    assert d.chans[gport].pending and d.fifo.num_evtchns == 0 and ready(guest) == 0


def test_section5_3_stale_tail_is_fixed_and_the_event_becomes_a_new_head(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    q0, qa = bound_pair(hv, guest)
    ev(hv, 0, "send", port=p0)
    got: list[int] = []
    guest.upcall(0, got.append)  # consumes pa: queue 7 empty in the guest, Xen's tail is still pa
    assert got == [pa] and hv.domain(a).vcpus[0].fifo.tails[7] == pa
    ev(hv, 0, "send", port=p0)  # relinks pa: old tail == pa is cleared, pa becomes head again
    assert head(guest, 0, 7) == pa and ready(guest) == 1 << 7
    ev(hv, 0, "send", port=q0)
    guest.upcall(0, got.append)
    assert got == [pa, pa, qa]


def test_section5_3_no_control_block_sets_pending_then_drops_before_4_17() -> None:
    hv = Hypervisor("4.14")
    a = new_domu(hv, max_vcpus=2)
    guest = FifoGuest(hv, a)
    guest.init_control(0)  # vCPU1 gets no control block
    ipi = port_of(hv, a, "bind_ipi", vcpu=1)
    guest.setup_port(ipi)
    guest.d.memory32[guest.word_index(ipi)] = 0  # unmasked
    assert ev(hv, a, "send", port=ipi)[0] == 0
    assert guest.word(ipi) == PENDING  # set, but not linked: the event is dropped
    assert hv.domain(a).vcpus[1].upcall_count == 0


def test_section5_4_bind_vcpu_moves_the_next_link(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv, vcpus=2)
    p0, pa = bound_pair(hv, guest)
    ev(hv, a, "bind_vcpu", port=pa, vcpu=1)
    ev(hv, 0, "send", port=p0)
    assert head(guest, 1, 7) == pa and ready(guest, 1) == 1 << 7 and ready(guest, 0) == 0


# --- §5.5 unmask ------------------------------------------------------------------------------------------------
def test_section5_5_unmask_relinks_a_pending_event(hv: Hypervisor) -> None:
    _a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    guest.mask(pa)
    ev(hv, 0, "send", port=p0)
    assert ready(guest) == 0
    assert guest.unmask(pa) == 0  # pending: via the hypercall
    assert guest.word(pa) & (MASKED | LINKED) == LINKED and ready(guest) == 1 << 7


def test_section5_5_unmask_hypercall_acts_even_if_not_masked(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    _p0, pa = bound_pair(hv, guest)
    guest.d.memory32[guest.word_index(pa)] = PENDING  # pending, unmasked, not linked (guest unlinked it)
    assert ev(hv, a, "unmask", port=pa)[0] == 0
    assert guest.word(pa) & LINKED and head(guest, 0, 7) == pa


# --- §5.6 / §2.5 busy ports ------------------------------------------------------------------------------------
def test_section5_6_close_leaves_the_word_linked_and_the_port_busy(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    p0, pa = bound_pair(hv, guest)
    ev(hv, 0, "send", port=p0)
    assert ev(hv, a, "close", port=pa)[0] == 0
    assert guest.word(pa) & (PENDING | LINKED) == LINKED
    new = port_of(hv, a, "bind_ipi", vcpu=0)
    assert new != pa  # busy: skipped by allocation
    got: list[int] = []
    guest.upcall(0, got.append)
    assert got == []  # the guest skips the non-pending event and unlinks it
    assert port_of(hv, a, "bind_ipi", vcpu=0) == pa


# --- §5.9 reset --------------------------------------------------------------------------------------------------
def test_section5_9_reset_returns_fifo_to_2l_and_init_starts_over(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    bound_pair(hv, guest)
    assert ev(hv, a, "reset", dom=a)[0] == 0
    d = hv.domain(a)
    assert d.evtchn_abi == "2l" and d.fifo is None and all(v.fifo is None for v in d.vcpus)
    assert d.port_ops.max_evtchns(d) == 4096
    fresh = FifoGuest(hv, a)
    assert fresh.init_control(0) == 0 and d.fifo.num_evtchns == 0


def test_section3_11_reset_of_another_domain_also_leaves_fifo(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv)
    hv.pause(a)
    assert ev(hv, 0, "reset", dom=a)[0] == 0 and hv.domain(a).evtchn_abi == "2l"


# --- §5.7 consumption through the reference consumer ---------------------------------------------------------
def test_section5_7_higher_priority_preempts_after_each_event(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv)
    low = [bound_pair(hv, guest) for _ in range(3)]
    high0, high_a = bound_pair(hv, guest)
    ev(hv, a, "set_priority", port=high_a, priority=1)
    for p0, _ in low:
        ev(hv, 0, "send", port=p0)
    order: list[int] = []

    def deliver(port: int) -> None:
        order.append(port)
        if len(order) == 1:
            ev(hv, 0, "send", port=high0)  # raised while the guest handles the first low event

    guest.upcall(0, deliver)
    assert order == [low[0][1], high_a, low[1][1], low[2][1]]


def test_section3_13_reraise_bypasses_the_usable_check_for_a_stale_flag(hv: Hypervisor) -> None:
    a = new_domu(hv)
    p0, pa = interdomain(hv, 0, a)
    ev(hv, 0, "send", port=p0)
    FifoGuest(hv, a).init_control(0)  # pa.pending = True (setup_ports)
    assert ev(hv, a, "reset", dom=a)[0] == 0  # pa is closed (FREE) but its flag stays set
    guest = FifoGuest(hv, a)
    guest.init_control(0)
    assert hv.domain(a).chans[pa].state == ChanState.FREE
    assert guest.setup_port(pa) == 0
    assert guest.word(pa) & PENDING  # re-raised although the port is FREE


def test_section3_2_remote_port_keeps_its_priority(hv: Hypervisor) -> None:
    a, _guest = fifo_domu(hv)
    gport = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    assert ev(hv, a, "set_priority", port=gport, priority=3)[0] == 0
    port_of(hv, 0, "bind_interdomain", remote_dom=a, remote_port=gport)
    assert hv.domain(a).chans[gport].priority == 3  # rchn is not re-initialised


def test_section2_7_port_init_does_not_reset_lastq(hv: Hypervisor) -> None:
    a, guest = fifo_domu(hv, vcpus=2)
    ipi = port_of(hv, a, "bind_ipi", vcpu=1)
    guest.setup_port(ipi)
    guest.unmask(ipi)
    ev(hv, a, "send", port=ipi)
    guest.upcall(1, lambda port: None)
    ev(hv, a, "close", port=ipi)
    assert port_of(hv, a, "bind_ipi", vcpu=0) == ipi
    chn = hv.domain(a).chans[ipi]
    assert (chn.lastq_vcpu, chn.lastq_priority, chn.priority) == (1, 7, 7)
