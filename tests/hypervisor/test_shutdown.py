"""SCHEDOP_shutdown and XEN_DOMCTL_soft_reset, release by release (``xenabi.hypervisor.shutdown``;
``spec/linux-guests.md`` §6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.sched import SchedOp, SchedShutdown, ShutdownReason
from xenabi.abi.vcpu import RegisterArea, VcpuOp
from xenabi.abi.xen import PAGE_SIZE, HYPERVISOR_event_channel_op, HYPERVISOR_sched_op, HYPERVISOR_vcpu_op
from xenabi.errors import NotModelled, XenError
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import FREE
from xenabi.policy import get_release
from xenabi.toolstack import DomainConfig, Toolstack

ARG = 0x5000  # a guest address for hypercall arguments
AREA = 0x6000  # a guest page for the vCPU areas


def domain(release: str, guest_type: str = "hvm") -> tuple[Hypervisor, int]:
    ts = Toolstack(Hypervisor(release))
    cfg = DomainConfig.from_xl(f'name = "d"\ntype = "{guest_type}"\nmemory = 8\nvcpus = 2\n')
    return ts.hv, ts.create(cfg, start=True)


def sched_shutdown(hv: Hypervisor, domid: int, reason: int, addr: int = ARG) -> int:
    hv.domain(domid).memory[ARG : ARG + 4] = SchedShutdown(reason).pack()
    rc, _ = hv.hypercall_raw(domid, HYPERVISOR_sched_op, SchedOp.shutdown, addr.to_bytes(8, "little"))
    return rc


def register(hv: Hypervisor, domid: int, op: VcpuOp, addr: int) -> int:
    hv.domain(domid).memory[ARG : ARG + 8] = RegisterArea(addr).pack()
    rc, _ = hv.hypercall_raw(domid, HYPERVISOR_vcpu_op, op, ARG.to_bytes(8, "little"), vcpuid=0)
    return rc


# --- SCHEDOP_shutdown ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("release", ["4.3", "4.6", "4.7", "4.19"])
def test_schedop_shutdown_stores_any_byte_as_the_code(release: str) -> None:
    """``do_sched_op``: ``domain_shutdown(d, (u8)reason)`` in every release; no release checks SHUTDOWN_MAX."""
    hv, domid = domain(release)
    assert sched_shutdown(hv, domid, 0x100 | ShutdownReason.soft_reset) == 0
    assert hv.domain(domid).shutdown_reason == "soft_reset"
    hv2, other = domain(release)
    assert sched_shutdown(hv2, other, 9) == 0 and hv2.domain(other).shutdown_reason == "code 9"


def test_domain_shutdown_keeps_the_first_code() -> None:
    hv, domid = domain("4.17")
    assert sched_shutdown(hv, domid, ShutdownReason.poweroff) == 0
    hv.shutdown_domain(domid, "crash")  # domain_crash on a domain already shutting down
    assert hv.domain(domid).shutdown_reason == "poweroff"


def test_schedop_shutdown_unreadable_argument_is_efault_and_changes_nothing() -> None:
    hv, domid = domain("4.17")
    assert sched_shutdown(hv, domid, 0, addr=1 << 40) == -errno.EFAULT
    assert hv.domain(domid).shutdown_reason is None


def test_other_sched_ops_are_not_modelled_and_unknown_ones_enosys() -> None:
    hv, domid = domain("4.17")
    with pytest.raises(NotModelled, match="sched_op yield"):
        hv.hypercall_raw(domid, HYPERVISOR_sched_op, SchedOp.yield_, bytes(8))
    assert hv.hypercall_raw(domid, HYPERVISOR_sched_op, 99, bytes(8))[0] == -errno.ENOSYS


@settings(max_examples=60, deadline=None)
@given(cmd=st.integers(min_value=0, max_value=2**32 - 1), data=st.binary(max_size=16))
def test_sched_op_garbage_never_raises_except_not_modelled(cmd: int, data: bytes) -> None:
    hv, domid = domain("4.17")
    try:
        rc, _ = hv.hypercall_raw(domid, HYPERVISOR_sched_op, cmd, data)
    except NotModelled:
        assert cmd in SchedOp._value2member_map_ and cmd != SchedOp.shutdown
        return
    assert rc <= 0


def test_shutdown_reason_names_are_checked() -> None:
    hv, domid = domain("4.17")
    with pytest.raises(XenError, match="unknown shutdown reason"):
        hv.shutdown_domain(domid, "code 5")  # a code the header names goes by its name
    with pytest.raises(XenError, match="unknown shutdown reason"):
        hv.shutdown_domain(domid, "halt")


# --- XEN_DOMCTL_soft_reset -----------------------------------------------------------------------------------------
def fifo_domain(release: str) -> tuple[Hypervisor, int]:
    hv, domid = domain(release)
    d = hv.domain(domid)
    control = E.InitControl(control_gfn=0x40, offset=0, vcpu=0)
    assert hv.hypercall(domid, HYPERVISOR_event_channel_op, E.EVTCHNOP_init_control, control) == 0
    assert d.evtchn_abi == "fifo"
    return hv, domid


def test_soft_reset_is_4_7_commit_1a043f9dc7() -> None:
    assert not get_release("4.6").soft_reset and get_release("4.7.0").soft_reset
    hv, domid = domain("4.6")
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    hv.pause(domid)
    with pytest.raises(XenError, match="no XEN_DOMCTL_soft_reset") as info:
        hv.soft_reset(domid)
    assert info.value.errno == errno.ENOSYS and hv.domain(domid).shutdown_reason == "soft_reset"


def test_domain_soft_reset_needs_the_domain_shut_down_then_paused() -> None:
    """``domain_soft_reset``: every vCPU paused for shutdown (-EINVAL); then ``evtchn_reset`` of another domain
    needs its controller's pause (-EINVAL, 546d558a7a): libxl pauses first."""
    hv, domid = fifo_domain("4.17")
    hv.pause(domid)
    with pytest.raises(XenError) as info:
        hv.soft_reset(domid)
    assert info.value.errno == errno.EINVAL
    hv.unpause(domid)
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    with pytest.raises(XenError):
        hv.soft_reset(domid)  # shut down but not paused by the toolstack
    assert hv.domain(domid).evtchn_abi == "fifo" and hv.domain(domid).shutdown_reason == "soft_reset"
    hv.pause(domid)
    hv.soft_reset(domid)
    d = hv.domain(domid)
    assert d.evtchn_abi == "2l" and d.shutdown_reason is None and d.fifo is None


@pytest.mark.parametrize(("release", "dropped"), [
    ("4.14", False), ("4.15.3", False), ("4.15.4", True), ("4.16.2", False), ("4.16.3", True), ("4.17.0", True),
])  # fmt: skip
def test_b80d4f8d2e_soft_reset_drops_the_time_areas_from_4_17(release: str, dropped: bool) -> None:
    """Before b80d4f8d2e (4.17; 4.15.4, 4.16.3) a soft reset dropped the runstate area but kept the time area,
    which Xen goes on writing when the domain runs again: into memory the next kernel did not give it."""
    hv, domid = domain(release)
    d = hv.domain(domid)
    assert register(hv, domid, VcpuOp.register_runstate_memory_area, AREA) == 0
    assert register(hv, domid, VcpuOp.register_vcpu_time_memory_area, AREA + PAGE_SIZE // 2) == 0
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    hv.advance_clock(10**6)
    hv.pause(domid)
    before = bytes(d.memory[AREA : AREA + PAGE_SIZE])
    hv.soft_reset(domid)
    hv.advance_clock(10**6)
    hv.unpause(domid)
    after = bytes(d.memory[AREA : AREA + PAGE_SIZE])
    areas = d.vcpus[0].areas
    assert areas is not None and areas.runstate_linear is None and not areas.vcpu_info
    assert (areas.time_linear is None) == dropped
    assert before[: PAGE_SIZE // 2] == after[: PAGE_SIZE // 2]  # the runstate area: never written again
    assert (before[PAGE_SIZE // 2 :] == after[PAGE_SIZE // 2 :]) == dropped


def test_soft_reset_puts_vcpu_info_back_in_shared_info() -> None:
    hv, domid = domain("4.17")
    v = hv.domain(domid).vcpus[0]
    home = v.info_offset
    v.info_offset = 0x7000  # as a register_vcpu_info would have moved it
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    hv.pause(domid)
    hv.soft_reset(domid)
    assert v.info_offset == home == v.default_info_offset


def test_soft_reset_of_a_pv_domain_is_einval_and_leaves_it_shut_down() -> None:
    """``arch_domain_soft_reset``: HVM only; the domain_crash that follows changes nothing on a shut-down domain."""
    hv, domid = domain("4.17", "pv")
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    hv.pause(domid)
    with pytest.raises(XenError) as info:
        hv.soft_reset(domid)
    assert info.value.errno == errno.EINVAL and hv.domain(domid).shutdown_reason == "soft_reset"


@pytest.mark.parametrize("release", ["4.14", "4.15"])
def test_soft_reset_closes_every_guest_port_and_keeps_xen_bound_ones(release: str) -> None:
    """``evtchn_reset`` closes every guest port (one pass before 4.15, the preemptible loop after, which stops
    once only Xen-bound ports are open, so XSA-343's -EAGAIN never fires here) and returns FIFO to 2-level."""
    hv, domid = fifo_domain(release)
    xen_port = hv.alloc_xen_event_channel(domid, 0, 0, lambda _d, _p: None)
    bound = E.AllocUnbound(dom=domid, remote_dom=0)
    assert hv.hypercall(domid, HYPERVISOR_event_channel_op, E.EVTCHNOP_alloc_unbound, bound) == 0
    sched_shutdown(hv, domid, ShutdownReason.soft_reset)
    hv.pause(domid)
    hv.soft_reset(domid)
    d = hv.domain(domid)
    assert d.evtchn_abi == "2l" and d.active_evtchns == d.xen_evtchns == 1
    assert d.chans[xen_port].xen_consumer and d.chans[bound.port].state == FREE


def test_the_control_domain_cannot_soft_reset_itself() -> None:
    hv, _domid = domain("4.17")
    with pytest.raises(XenError, match="itself"):
        hv.soft_reset(0)
