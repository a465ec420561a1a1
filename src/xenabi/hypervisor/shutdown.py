"""``SCHEDOP_shutdown`` (sched_op, hypercall 29) and ``XEN_DOMCTL_soft_reset``: how a guest stops, and how a domain
is reset in place for a kexec'd kernel (``spec/linux-guests.md`` §6; ``do_sched_op``, ``domain_shutdown``,
``domain_soft_reset`` and ``arch_domain_soft_reset`` read at RELEASE-4.6.0, 4.7.0, 4.15.4, 4.17.0, 4.18.0, 4.19.0).

**SCHEDOP_shutdown**: the argument is read from guest memory (-EFAULT if it cannot be), its reason is cast to a byte
and becomes the domain's shutdown code, whatever it is (no release checks it against ``SHUTDOWN_MAX``); the call
answers 0. A domain already shutting down keeps its first code. The other sched_op sub-ops (yield, block, poll,
remote_shutdown, shutdown_code, watchdog, pin_override) raise :class:`~xenabi.errors.NotModelled`; an unknown one is
-ENOSYS.

**XEN_DOMCTL_soft_reset** (from 4.7, ``Release.soft_reset``; before, the domctl is unknown: -ENOSYS), in
``domain_soft_reset``'s order: every vCPU must be paused for shutdown (the domain has shut down), else -EINVAL; then
``evtchn_reset`` (:func:`xenabi.hypervisor.evtchn.evtchn_reset`, the release's rules: the controller must have
paused the domain, FIFO goes back to 2-level, and from 4.15 the reset is preemptible, continued by the domctl, and
-EAGAIN if ports stay open), whose failure is returned with nothing else done; then per vCPU the runstate areas
(linear, and from 4.18 physical) and the vcpu_info registration are dropped (vcpu_info goes back to its slot in
shared_info); then ``arch_domain_soft_reset``: a PV domain is refused (-EINVAL) and crashed; an HVM container has
its time areas dropped too, but only from 4.17 (b80d4f8d2e; 4.15.4, 4.16.3: ``Release.soft_reset_drops_time_area``):
before, Xen keeps writing the first kernel's time areas, wherever the second kernel now keeps its memory. Last,
``domain_resume``: the shutdown is forgotten and the vCPUs run again. The model keeps shared_info at its fixed frame
(Xen moves the page back to a fresh frame the guest maps again); grants, argo and pirqs are not modelled here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.sched import SchedOp, SchedOpArg, SchedShutdown, shutdown_reason_name
from xenabi.errors import NotModelled
from xenabi.hypervisor.evtchn import evtchn_reset
from xenabi.hypervisor.guestmem import copy_from_guest

if TYPE_CHECKING:
    from xenabi.hypervisor.dispatch import Call
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor


def sched_op(hv: Hypervisor, cur: Domain, arg: SchedOpArg, cmd: int, call: Call) -> int:
    """The whole hypercall: ``cmd`` is the sub-op; only SCHEDOP_shutdown is modelled."""
    if cmd == SchedOp.shutdown:
        raw = copy_from_guest(cur, arg.addr, SchedShutdown.size())
        if raw is None:
            return -errno.EFAULT
        reason = SchedShutdown.unpack(raw).reason & 0xFF  # domain_shutdown takes a u8
        hv.shutdown_domain(cur.domid, shutdown_reason_name(reason))
        return 0
    if cmd in SchedOp._value2member_map_:
        raise NotModelled(f"sched_op {SchedOp(cmd).name.rstrip('_')} ({cmd})")
    return -errno.ENOSYS


def domain_soft_reset(hv: Hypervisor, d: Domain, *, resuming: bool) -> int:
    """``domain_soft_reset`` on a domain that is not the caller (the domctl refuses that before); 0 or -errno.
    -ERESTART means the event-channel reset was preempted: call again with ``resuming``."""
    if d.shutdown_reason is None:
        return -errno.EINVAL  # a vCPU not paused for shutdown
    control = hv.domain(0)
    rc = evtchn_reset(hv, control, d, resuming=resuming)
    if rc:
        return rc
    for v in d.vcpus:
        v.info_offset = v.default_info_offset  # unmap_vcpu_info: back to shared_info's slot
        if v.areas is not None:
            v.areas.runstate_linear = v.areas.runstate_phys = None
            v.areas.vcpu_info = False
    if not d.is_hvm:
        # arch_domain_soft_reset is HVM only; the domain_crash that follows changes nothing on a domain that has
        # already shut down (its first shutdown code stays), so it stays shut down with its areas gone.
        return -errno.EINVAL
    if hv.release.soft_reset_drops_time_area:
        for v in d.vcpus:
            if v.areas is not None:
                v.areas.time_linear = v.areas.time_phys = None
    hv.resume_domain(d.domid)
    return 0
