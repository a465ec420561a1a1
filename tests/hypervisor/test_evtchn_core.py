"""spec/evtchn.md §1 (XSM), §2 (object model, allocation, freeing) and §3.1-§3.11 (sub-ops, in check order)."""

from __future__ import annotations

import pytest

from xenabi.abi import errno
from xenabi.abi.evtchn import EvtchnStat
from xenabi.abi.xen import DOMID_SELF, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_TIMER
from xenabi.hypervisor import ChanState, Hypervisor

from ..conftest import ev, interdomain, new_domu, port_of

EINVAL, ESRCH, EPERM, ENOENT, ENOSPC = -errno.EINVAL, -errno.ESRCH, -errno.EPERM, -errno.ENOENT, -errno.ENOSPC
EEXIST, EBUSY, EAGAIN = -errno.EEXIST, -errno.EBUSY, -errno.EAGAIN


@pytest.fixture
def two(hv: Hypervisor) -> tuple[Hypervisor, int, int]:
    return hv, new_domu(hv), new_domu(hv)


def pending(hv: Hypervisor, domid: int, port: int) -> bool:
    d = hv.domain(domid)
    return d.port_ops.is_pending(d, port)


def state(hv: Hypervisor, domid: int, port: int) -> ChanState:
    return ChanState(hv.domain(domid).chans[port].state)


# --- §1 default XSM policy -----------------------------------------------------------------------------------
def test_section1_xsm_target_self_dm_and_control_domain(two) -> None:
    hv, a, b = two
    assert ev(hv, a, "alloc_unbound", dom=b, remote_dom=a)[0] == EPERM
    assert ev(hv, a, "status", dom=b, port=0)[0] == EPERM
    hv.pause(b)
    assert ev(hv, a, "reset", dom=b)[0] == EPERM
    hv.set_target(a, b)  # a becomes b's device model
    assert ev(hv, a, "alloc_unbound", dom=b, remote_dom=a)[0] == 0
    assert ev(hv, a, "status", dom=b, port=1)[0] == 0
    assert ev(hv, 0, "alloc_unbound", dom=b, remote_dom=0)[0] == 0


# --- §2.5 allocation ---------------------------------------------------------------------------------------
def test_section2_5_lowest_free_port_first_and_reuse(hv: Hypervisor) -> None:
    a = new_domu(hv)
    ports = [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(5)]
    assert ports == [1, 2, 3, 4, 5]
    assert ev(hv, a, "close", port=2)[0] == 0 and ev(hv, a, "close", port=4)[0] == 0
    assert [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(3)] == [2, 4, 6]


def test_section2_5_max_evtchn_port_bounds_allocation(hv: Hypervisor) -> None:
    a = new_domu(hv, max_evtchn_port=3)
    assert [port_of(hv, a, "bind_ipi", vcpu=0) for _ in range(3)] == [1, 2, 3]
    d = hv.domain(a)
    active = d.active_evtchns
    assert ev(hv, a, "bind_ipi", vcpu=0)[0] == ENOSPC
    assert d.active_evtchns == active


def test_section2_3_buckets_of_64_grow_and_never_shrink(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    for _ in range(64):
        port_of(hv, a, "bind_ipi", vcpu=0)
    assert d.valid_evtchns == 128
    for port in range(1, 65):
        ev(hv, a, "close", port=port)
    assert d.valid_evtchns == 128 and d.active_evtchns == 0


def test_section2_3_2l_capacity_4096_or_1024(hv: Hypervisor) -> None:
    a = new_domu(hv, max_evtchn_port=0xFFFFFFFF)
    hv.set_guest_width(a, 32)
    d = hv.domain(a)
    assert d.port_ops.max_evtchns(d) == 1024
    for _ in range(1023):
        port_of(hv, a, "bind_ipi", vcpu=0)
    assert ev(hv, a, "bind_ipi", vcpu=0)[0] == ENOSPC
    hv.set_guest_width(a, 64)
    assert d.port_ops.max_evtchns(d) == 4096 and port_of(hv, a, "bind_ipi", vcpu=0) == 1024


def test_section2_5_dying_domain_gets_einval(hv: Hypervisor) -> None:
    a = new_domu(hv)
    hv.domain(a).is_dying = True
    assert ev(hv, a, "bind_ipi", vcpu=0)[0] == EINVAL


def test_section2_3_free_port_inside_a_bucket_is_valid(hv: Hypervisor) -> None:
    a = new_domu(hv)
    rc, st = ev(hv, a, "status", dom=DOMID_SELF, port=40)
    assert (rc, st.status) == (0, EvtchnStat.closed)
    assert ev(hv, a, "close", port=40)[0] == EINVAL
    assert ev(hv, a, "unmask", port=40)[0] == 0
    assert ev(hv, a, "status", dom=DOMID_SELF, port=64)[0] == EINVAL
    assert ev(hv, a, "unmask", port=64)[0] == EINVAL


# --- §3.1 alloc_unbound --------------------------------------------------------------------------------------
def test_section3_1_alloc_unbound(two) -> None:
    hv, a, b = two
    assert ev(hv, a, "alloc_unbound", dom=77, remote_dom=b)[0] == ESRCH
    port = port_of(hv, a, "alloc_unbound", dom=DOMID_SELF, remote_dom=DOMID_SELF)
    assert hv.domain(a).chans[port].remote_domid == a  # DOMID_SELF is the caller
    port = port_of(hv, 0, "alloc_unbound", dom=a, remote_dom=DOMID_SELF)
    assert hv.domain(a).chans[port].remote_domid == 0  # the caller's domid, not d's
    port = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0x1234)  # not validated
    assert hv.domain(a).chans[port].remote_domid == 0x1234
    _rc, st = ev(hv, a, "status", dom=a, port=port)
    assert (st.status, st.unbound_dom, st.vcpu) == (EvtchnStat.unbound, 0x1234, 0)


def test_section3_1_eperm_leaves_the_port_free(two) -> None:
    hv, a, b = two
    active = hv.domain(b).active_evtchns
    assert ev(hv, a, "alloc_unbound", dom=b, remote_dom=a)[0] == EPERM
    assert hv.domain(b).active_evtchns == active and state(hv, b, 1) == ChanState.FREE


# --- §3.2 bind_interdomain -----------------------------------------------------------------------------------
def test_section3_2_bind_interdomain_sets_local_pending(two) -> None:
    hv, a, b = two
    pa, pb = interdomain(hv, a, b)
    assert state(hv, a, pa) == state(hv, b, pb) == ChanState.INTERDOMAIN
    assert pending(hv, b, pb) and not pending(hv, a, pa)
    _rc, st = ev(hv, b, "status", dom=DOMID_SELF, port=pb)
    assert (st.status, st.interdomain_dom, st.interdomain_port) == (EvtchnStat.interdomain, a, pa)


def test_section3_2_check_order(two) -> None:
    hv, a, b = two
    pa = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=b)
    other = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    assert ev(hv, b, "bind_interdomain", remote_dom=99, remote_port=pa)[0] == ESRCH
    assert ev(hv, b, "bind_interdomain", remote_dom=a, remote_port=64)[0] == EINVAL
    assert ev(hv, b, "bind_interdomain", remote_dom=a, remote_port=other)[0] == EINVAL  # not for b
    assert ev(hv, b, "bind_interdomain", remote_dom=a, remote_port=40)[0] == EINVAL  # FREE
    d = hv.domain(b)
    assert d.active_evtchns == 0  # the local port allocated for the failed binds was given back
    assert ev(hv, b, "bind_interdomain", remote_dom=a, remote_port=pa)[0] == 0
    assert ev(hv, b, "bind_interdomain", remote_dom=a, remote_port=pa)[0] == EINVAL  # no longer UNBOUND


def test_section3_2_loopback(hv: Hypervisor) -> None:
    a = new_domu(hv)
    rport = port_of(hv, a, "alloc_unbound", dom=DOMID_SELF, remote_dom=DOMID_SELF)
    lport = port_of(hv, a, "bind_interdomain", remote_dom=DOMID_SELF, remote_port=rport)
    assert lport != rport and state(hv, a, rport) == ChanState.INTERDOMAIN
    assert ev(hv, a, "send", port=lport)[0] == 0 and pending(hv, a, rport)


def test_section3_2_remote_keeps_its_vcpu(two) -> None:
    hv, a, _b = two
    c = new_domu(hv, max_vcpus=2)
    pc = port_of(hv, c, "alloc_unbound", dom=c, remote_dom=a)
    assert ev(hv, c, "bind_vcpu", port=pc, vcpu=1)[0] == 0
    port_of(hv, a, "bind_interdomain", remote_dom=c, remote_port=pc)
    assert hv.domain(c).chans[pc].notify_vcpu_id == 1


# --- §3.3 bind_virq ------------------------------------------------------------------------------------------
def test_section3_3_bind_virq_check_order(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    assert ev(hv, a, "bind_virq", virq=24, vcpu=0)[0] == EINVAL
    assert ev(hv, a, "bind_virq", virq=VIRQ_CONSOLE, vcpu=1)[0] == EINVAL  # global on vCPU != 0
    assert ev(hv, a, "bind_virq", virq=VIRQ_ARGO, vcpu=1)[0] == EINVAL  # per-domain on vCPU != 0
    assert ev(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=2)[0] == ENOENT
    assert ev(hv, a, "bind_virq", virq=VIRQ_CONSOLE, vcpu=5)[0] == EINVAL  # class check comes first
    t0 = port_of(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=0)
    t1 = port_of(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=1)
    assert ev(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=1)[0] == EEXIST
    assert hv.domain(a).chans[t1].notify_vcpu_id == 1 and t0 != t1
    _rc, st = ev(hv, a, "status", dom=a, port=t1)
    assert (st.status, st.virq, st.vcpu) == (EvtchnStat.virq, VIRQ_TIMER, 1)


def test_section3_3_any_domain_binds_global_virqs_before_4_21(hv: Hypervisor) -> None:
    a = new_domu(hv)
    assert ev(hv, a, "bind_virq", virq=VIRQ_CONSOLE, vcpu=0)[0] == 0
    assert ev(hv, a, "bind_virq", virq=VIRQ_CONSOLE, vcpu=0)[0] == EEXIST


def test_section3_3_close_frees_the_virq_slot(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    port = port_of(hv, a, "bind_virq", virq=VIRQ_DEBUG, vcpu=1)
    assert ev(hv, a, "close", port=port)[0] == 0
    assert port_of(hv, a, "bind_virq", virq=VIRQ_DEBUG, vcpu=1) == port


# --- §3.4 bind_ipi -------------------------------------------------------------------------------------------
def test_section3_4_bind_ipi(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    assert ev(hv, a, "bind_ipi", vcpu=2)[0] == ENOENT
    port = port_of(hv, a, "bind_ipi", vcpu=1)
    assert hv.domain(a).chans[port].notify_vcpu_id == 1
    assert ev(hv, a, "send", port=port)[0] == 0 and pending(hv, a, port)
    _rc, st = ev(hv, a, "status", dom=a, port=port)
    assert (st.status, st.vcpu) == (EvtchnStat.ipi, 1)


# --- §3.5 bind_pirq ------------------------------------------------------------------------------------------
def test_section3_5_bind_pirq_check_order(hv: Hypervisor) -> None:
    pv = new_domu(hv, "pv")
    nr = hv.domain(pv).nr_pirqs
    assert ev(hv, pv, "bind_pirq", pirq=nr)[0] == EINVAL
    assert ev(hv, pv, "bind_pirq", pirq=5)[0] == EPERM
    hv.permit_pirq(pv, 5)
    port = port_of(hv, pv, "bind_pirq", pirq=5)
    assert ev(hv, pv, "bind_pirq", pirq=5)[0] == EEXIST
    _rc, st = ev(hv, pv, "status", dom=pv, port=port)
    assert (st.status, st.pirq) == (EvtchnStat.pirq, 5)
    assert ev(hv, pv, "close", port=port)[0] == 0 and port_of(hv, pv, "bind_pirq", pirq=5) == port


def test_section3_5_hvm_skips_permission_and_sharing(hv: Hypervisor) -> None:
    a, b = new_domu(hv), new_domu(hv)
    assert ev(hv, a, "bind_pirq", pirq=9)[0] == 0
    assert ev(hv, b, "bind_pirq", pirq=9)[0] == 0


def test_section3_5_pv_sharing_conflict_is_ebusy(hv: Hypervisor) -> None:
    a, b = new_domu(hv, "pv"), new_domu(hv, "pv")
    for domid in (a, b, 0):
        hv.permit_pirq(domid, 7)
    assert ev(hv, a, "bind_pirq", pirq=7, flags=0)[0] == 0
    assert ev(hv, b, "bind_pirq", pirq=7, flags=1)[0] == EBUSY
    assert hv.domain(b).active_evtchns == 0
    assert ev(hv, a, "close", port=1)[0] == 0
    assert ev(hv, b, "bind_pirq", pirq=7, flags=1)[0] == 0
    assert ev(hv, 0, "bind_pirq", pirq=7, flags=1)[0] == 0  # both willing to share


# --- §3.6 close ----------------------------------------------------------------------------------------------
def test_section3_6_close_check_order(hv: Hypervisor) -> None:
    a = new_domu(hv)
    assert ev(hv, a, "close", port=64)[0] == EINVAL
    assert ev(hv, a, "close", port=0)[0] == EINVAL  # RESERVED
    assert ev(hv, a, "close", port=5)[0] == EINVAL  # FREE
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda domid, port: None)
    assert ev(hv, a, "close", port=xen)[0] == EINVAL


def test_section3_6_close_interdomain_reverts_peer_to_unbound_closer(two) -> None:
    hv, a, b = two
    pa, pb = interdomain(hv, a, b)
    assert ev(hv, a, "close", port=pa)[0] == 0
    peer = hv.domain(b).chans[pb]
    assert (peer.state, peer.remote_domid) == (ChanState.UNBOUND, a)
    assert pending(hv, b, pb)  # the peer's pending bit is not touched
    assert port_of(hv, a, "bind_interdomain", remote_dom=b, remote_port=pb) == pa  # the closer may re-bind


def test_section2_6_free_clears_pending_keeps_mask_resets_vcpu(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    d = hv.domain(a)
    port = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    ev(hv, a, "bind_vcpu", port=port, vcpu=1)
    d.memory[d.shinfo_mask] |= 1 << port
    d.port_ops.set_pending(d, 1, d.chans[port])
    assert ev(hv, a, "close", port=port)[0] == 0
    assert not d.port_ops.is_pending(d, port) and d.port_ops.is_masked(d, port)
    assert d.chans[port].notify_vcpu_id == 0


# --- §3.7 send -----------------------------------------------------------------------------------------------
def test_section3_7_send(two) -> None:
    hv, a, b = two
    assert ev(hv, a, "send", port=64)[0] == EINVAL
    assert ev(hv, a, "send", port=0)[0] == EINVAL
    unbound = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=b)
    assert ev(hv, a, "send", port=unbound)[0] == 0  # silently dropped
    assert not pending(hv, a, unbound)
    virq = port_of(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=0)
    assert ev(hv, a, "send", port=virq)[0] == EINVAL
    pa, pb = interdomain(hv, a, b)
    assert ev(hv, a, "send", port=pa)[0] == 0 and pending(hv, b, pb)
    assert ev(hv, a, "send", port=pa)[0] == 0  # already pending: still 0


def test_section3_7_send_to_xen_consumer_calls_its_notification(two) -> None:
    hv, a, b = two
    seen: list[tuple[int, int]] = []
    xen_port = hv.alloc_xen_event_channel(a, 0, b, lambda domid, port: seen.append((domid, port)))
    assert ev(hv, a, "send", port=xen_port)[0] == EINVAL  # the guest cannot send on a Xen channel
    pb = port_of(hv, b, "bind_interdomain", remote_dom=a, remote_port=xen_port)
    assert ev(hv, b, "send", port=pb)[0] == 0
    assert seen == [(a, xen_port)] and not pending(hv, a, xen_port)


# --- §3.8 status ---------------------------------------------------------------------------------------------
def test_section3_8_status_check_order_and_union_bytes(two) -> None:
    hv, a, b = two
    assert ev(hv, a, "status", dom=99, port=70)[0] == ESRCH
    assert ev(hv, a, "status", dom=b, port=70)[0] == EINVAL  # port check before XSM
    assert ev(hv, a, "status", dom=b, port=1)[0] == EPERM
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    rc, st = ev(hv, a, "status", dom=a, port=ipi, u=b"ABCDEFGH")
    assert rc == 0 and st.u == b"ABCDEFGH"  # IPI writes no union member
    unbound = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=b)
    rc, st = ev(hv, a, "status", dom=a, port=unbound, u=b"ABCDEFGH")
    assert st.u == bytes([b, 0]) + b"CDEFGH"
    rc, st = ev(hv, a, "status", dom=a, port=0)
    assert (rc, st.status) == (0, EvtchnStat.closed)


# --- §3.9 bind_vcpu ------------------------------------------------------------------------------------------
def test_section3_9_bind_vcpu(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    assert ev(hv, a, "bind_vcpu", port=64, vcpu=5)[0] == ENOENT  # vCPU before port
    assert ev(hv, a, "bind_vcpu", port=64, vcpu=1)[0] == EINVAL
    timer = port_of(hv, a, "bind_virq", virq=VIRQ_TIMER, vcpu=0)
    console = port_of(hv, a, "bind_virq", virq=VIRQ_CONSOLE, vcpu=0)
    ipi = port_of(hv, a, "bind_ipi", vcpu=0)
    unbound = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
    assert ev(hv, a, "bind_vcpu", port=timer, vcpu=1)[0] == EINVAL
    assert ev(hv, a, "bind_vcpu", port=ipi, vcpu=1)[0] == EINVAL
    assert ev(hv, a, "bind_vcpu", port=0, vcpu=1)[0] == EINVAL
    assert ev(hv, a, "bind_vcpu", port=30, vcpu=1)[0] == EINVAL  # FREE
    for port in (console, unbound):
        assert ev(hv, a, "bind_vcpu", port=port, vcpu=1)[0] == 0
        assert hv.domain(a).chans[port].notify_vcpu_id == 1
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda *_: None)
    assert ev(hv, a, "bind_vcpu", port=xen, vcpu=1)[0] == EINVAL


# --- §3.10 unmask --------------------------------------------------------------------------------------------
def test_section3_10_unmask_unusable_is_a_silent_noop(hv: Hypervisor) -> None:
    a = new_domu(hv)
    d = hv.domain(a)
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda *_: None)
    d.memory[d.shinfo_mask] |= 1 << xen
    assert ev(hv, a, "unmask", port=xen)[0] == 0
    assert d.port_ops.is_masked(d, xen)


# --- §3.11 reset ---------------------------------------------------------------------------------------------
def test_section3_11_reset_check_order(two) -> None:
    hv, a, b = two
    assert ev(hv, a, "reset", dom=99)[0] == ESRCH
    assert ev(hv, a, "reset", dom=b)[0] == EPERM
    assert ev(hv, 0, "reset", dom=b)[0] == EINVAL  # running: not paused by its controller
    hv.pause(b)
    assert ev(hv, 0, "reset", dom=b)[0] == 0
    assert ev(hv, a, "reset_cont", dom=a)[0] == EBUSY  # no reset in progress


def test_section3_11_reset_closes_guest_ports_keeps_xen_and_reserved(two) -> None:
    hv, a, b = two
    _pa, pb = interdomain(hv, a, b)
    port_of(hv, a, "bind_ipi", vcpu=0)
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda *_: None)
    assert ev(hv, a, "reset", dom=DOMID_SELF)[0] == 0
    d = hv.domain(a)
    assert d.active_evtchns == d.xen_evtchns == 1
    assert d.chans[0].state == ChanState.RESERVED and d.chans[xen].state == ChanState.UNBOUND
    assert state(hv, b, pb) == ChanState.UNBOUND


def _bind_many(hv: Hypervisor, domid: int, n: int) -> None:
    for _ in range(n):
        port_of(hv, domid, "bind_ipi", vcpu=0)


def test_section3_11_preempted_reset_continues_and_plain_reset_meanwhile_is_ebusy(hv: Hypervisor) -> None:
    a = new_domu(hv)
    _bind_many(hv, a, 150)
    seen: list[int] = []

    def preempt() -> bool:
        if not seen:
            seen.append(ev(hv, a, "reset", dom=a)[0])  # another vCPU resets meanwhile
            return True
        return False

    hv.preempt_check = preempt
    assert ev(hv, a, "reset", dom=a)[0] == 0
    assert seen == [EBUSY]
    d = hv.domain(a)
    assert d.active_evtchns == 0 and d.next_evtchn == 0


def test_section3_11_rebinding_during_reset_gives_eagain(hv: Hypervisor) -> None:
    a = new_domu(hv)
    _bind_many(hv, a, 150)
    rebound: list[int] = []

    def preempt() -> bool:
        if not rebound:
            rebound.append(port_of(hv, a, "bind_ipi", vcpu=0))  # lands below the reset's cursor
            return True
        return False

    hv.preempt_check = preempt
    assert ev(hv, a, "reset", dom=a)[0] == EAGAIN
    assert rebound == [1] and hv.domain(a).active_evtchns == 1 and hv.domain(a).next_evtchn == 0


# --- destruction ---------------------------------------------------------------------------------------------
def test_destroy_reverts_peers_to_unbound(two) -> None:
    hv, a, b = two
    _pa, pb = interdomain(hv, a, b)
    hv.destroy_domain(a)
    peer = hv.domain(b).chans[pb]
    assert (peer.state, peer.remote_domid) == (ChanState.UNBOUND, a)
