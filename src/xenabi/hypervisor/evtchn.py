"""The event channel core: port allocation and sub-ops 0-10 and 14 (``spec/evtchn.md`` §2-§3, [EC.c]).

Each handler takes ``(hv, cur, arg)`` and returns 0 or a negative errno; it checks in Xen's order (§3: the order of
error returns) and writes OUT fields only on success. ABI-specific work goes through ``d.port_ops`` (2-level or
FIFO). Decisions where the spec leaves room:

- Everything that differs between releases is a field of the release table (``xenabi.releases``), read here as
  ``hv.release.<field>``: the VIRQ classes, the global-VIRQ handler check (4.21: only dom0, the default handler,
  may bind a global VIRQ; XEN_DOMCTL_set_virq_handler is not modelled), status on Xen-bound ports, the busy-port
  rule, and the whole of reset.
- A domain's pirq is the host IRQ of the same number. PV ``pirq_guest_bind`` is modelled as the host's sharing
  rule: a pirq already bound by another domain can be bound again only if every binder passed WILL_SHARE
  (else -EBUSY). SCHEDOP_poll is not modelled, so there are no pollers to wake.
- A preempted EVTCHNOP_reset continues as EVTCHNOP_reset_cont at once; ``hv.preempt_check`` decides when the
  reset is preempted and may itself issue hypercalls, standing for whatever runs in between (§3.11).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi import evtchn as abi
from xenabi.abi.evtchn import EvtchnStat
from xenabi.abi.xen import DOMID_SELF, NR_VIRQS, VirqClass
from xenabi.hypervisor.domain import (
    FREE,
    INTERDOMAIN,
    IPI,
    PIRQ,
    RESERVED,
    UNBOUND,
    VIRQ,
    Chan,
    Domain,
)
from xenabi.hypervisor.evtchn_2l import TWO_LEVEL
from xenabi.hypervisor.evtchn_fifo import fifo_destroy
from xenabi.hypervisor.xsm import xsm_target

if TYPE_CHECKING:
    from xenabi.hypervisor.hypervisor import Hypervisor

EINVAL, ENOSPC, ESRCH, EPERM, ENOENT = -errno.EINVAL, -errno.ENOSPC, -errno.ESRCH, -errno.EPERM, -errno.ENOENT
EEXIST, EBUSY, EAGAIN, ERESTART = -errno.EEXIST, -errno.EBUSY, -errno.EAGAIN, -errno.ERESTART
GLOBAL_VIRQ_HANDLER = 0  # every global VIRQ's handler is the hardware domain (dom0) unless a domctl moves it

_STATUS_OF_STATE = {
    FREE: EvtchnStat.closed,
    RESERVED: EvtchnStat.closed,
    UNBOUND: EvtchnStat.unbound,
    INTERDOMAIN: EvtchnStat.interdomain,
    PIRQ: EvtchnStat.pirq,
    VIRQ: EvtchnStat.virq,
    IPI: EvtchnStat.ipi,
}


# --- per-domain set-up, allocation and freeing (§2.4-§2.7) ---------------------------------------------------
def evtchn_init(d: Domain) -> None:
    """§2.4: 2-level ops, one bucket, port 0 reserved, ``active_evtchns`` back to 0."""
    d.port_ops = TWO_LEVEL
    _add_bucket(d)
    port = get_free_port(d)
    assert port == 0
    d.chans[0].state = RESERVED
    d.active_evtchns = 0
    d.free_hint = 1


def _add_bucket(d: Domain) -> None:
    base = d.valid_evtchns
    size = d.release.evtchns_per_bucket
    d.chans.extend(Chan(port) for port in range(base, base + size))
    d.valid_evtchns = base + size


def get_free_port(d: Domain) -> int:
    """§2.5: the lowest port that is FREE and not busy, bounded by max_evtchn_port and the ABI's capacity."""
    if d.is_dying:
        return EINVAL
    limit = min(d.max_evtchn_port, d.port_ops.max_evtchns(d) - 1)
    chans = d.chans
    # Before Xen 4.7 (and 4.6.1, 4.5.3, 4.4.4) a FREE port whose FIFO word is still LINKED is reused.
    is_busy = d.port_ops.is_busy if d.release.get_free_port_skips_busy else _never_busy
    port = d.free_hint
    advancing = True  # the hint may move past ports that are in use, never past a FREE (maybe busy) one
    while True:
        if port > limit:
            return ENOSPC
        if port >= d.valid_evtchns:
            _add_bucket(d)
        chn = chans[port]
        if chn.state == FREE:
            if not is_busy(d, port):
                d.active_evtchns += 1
                return port
            advancing = False
        elif advancing:
            d.free_hint = port + 1
        port += 1


def _never_busy(_d: Domain, _port: int) -> bool:
    return False


def check_free_port(d: Domain, port: int) -> None:
    """Undo ``get_free_port``'s count when a caller fails before using the port."""
    if d.chans[port].state == FREE:
        d.active_evtchns -= 1


def evtchn_free(d: Domain, chn: Chan) -> None:
    """§2.6: clear pending through the ABI, drop the counts, back to FREE on vCPU0; the mask is untouched."""
    d.port_ops.clear_pending(d, chn)
    d.active_evtchns -= 1
    if chn.xen_consumer:
        d.xen_evtchns -= 1
    chn.state = FREE
    chn.notify_vcpu_id = 0
    chn.xen_consumer = 0
    chn.peer = None
    chn.deliver = None
    d.free_hint = min(d.free_hint, chn.port)


def _vcpu_exists(d: Domain, vcpu: int) -> bool:
    return 0 <= vcpu < d.max_vcpus


def _bind(d: Domain, chn: Chan, state: int, notify_vcpu_id: int) -> None:
    chn.state = state
    chn.notify_vcpu_id = notify_vcpu_id
    d.port_ops.init(d, chn)


# --- sub-ops ------------------------------------------------------------------------------------------------
def alloc_unbound(hv: Hypervisor, cur: Domain, arg: abi.AllocUnbound) -> int:
    """§3.1."""
    remote = arg.remote_dom & 0xFFFF  # read before anything is allocated: a bad field cannot leak a port
    d = hv.lookup(cur, arg.dom)
    if d is None:
        return ESRCH
    port = get_free_port(d)
    if port < 0:
        return port
    if not xsm_target(cur, d):
        check_free_port(d, port)
        return EPERM
    chn = d.chans[port]
    chn.remote_domid = cur.domid if remote == DOMID_SELF else remote
    _bind(d, chn, UNBOUND, 0)
    arg.port = port
    return 0


def bind_interdomain(hv: Hypervisor, cur: Domain, arg: abi.BindInterdomain) -> int:
    """§3.2. The local port is always set pending: a send to the unbound remote may have been dropped."""
    rport = arg.remote_port & 0xFFFFFFFF
    rd = hv.lookup(cur, arg.remote_dom)
    if rd is None:
        return ESRCH
    lport = get_free_port(cur)
    if lport < 0:
        return lport
    if rport >= rd.valid_evtchns:
        check_free_port(cur, lport)
        return EINVAL
    rchn = rd.chans[rport]
    if rchn.state != UNBOUND or rchn.remote_domid != cur.domid:
        check_free_port(cur, lport)
        return EINVAL
    lchn = cur.chans[lport]
    lchn.remote_domid, lchn.remote_port = rd.domid, rport
    _bind(cur, lchn, INTERDOMAIN, 0)
    rchn.state = INTERDOMAIN
    rchn.remote_domid, rchn.remote_port = cur.domid, lport
    lchn.peer, rchn.peer = (rd, rchn), (cur, lchn)
    cur.port_ops.set_pending(cur, lchn.notify_vcpu_id, lchn)
    arg.local_port = lport
    return 0


def bind_virq(hv: Hypervisor, cur: Domain, arg: abi.BindVirq) -> int:
    """§3.3."""
    virq, vcpu = arg.virq, arg.vcpu
    if not 0 <= virq < NR_VIRQS:
        return EINVAL
    kind = hv.release.virq_kind(virq)
    if kind is not VirqClass.PER_VCPU and vcpu != 0:
        return EINVAL
    if not _vcpu_exists(cur, vcpu):
        return ENOENT
    if kind is VirqClass.GLOBAL and hv.release.global_virq_handler_only and cur.domid != GLOBAL_VIRQ_HANDLER:
        return EBUSY
    v = cur.vcpus[vcpu]
    if v.virq_to_evtchn[virq]:
        return EEXIST
    port = get_free_port(cur)
    if port < 0:
        return port
    chn = cur.chans[port]
    chn.virq = virq
    _bind(cur, chn, VIRQ, vcpu)
    v.virq_to_evtchn[virq] = port
    arg.port = port
    return 0


def bind_ipi(hv: Hypervisor, cur: Domain, arg: abi.BindIpi) -> int:
    """§3.4."""
    vcpu = arg.vcpu
    if not _vcpu_exists(cur, vcpu):
        return ENOENT
    port = get_free_port(cur)
    if port < 0:
        return port
    _bind(cur, cur.chans[port], IPI, vcpu)
    arg.port = port
    return 0


def bind_pirq(hv: Hypervisor, cur: Domain, arg: abi.BindPirq) -> int:
    """§3.5 (x86)."""
    pirq, will_share = arg.pirq, bool(arg.flags & abi.BIND_PIRQ__WILL_SHARE)
    if not 0 <= pirq < cur.nr_pirqs:
        return EINVAL
    if not cur.is_hvm and cur.permitted_pirqs is not None and pirq not in cur.permitted_pirqs:
        return EPERM
    if pirq in cur.pirq_to_port:
        return EEXIST
    port = get_free_port(cur)
    if port < 0:
        return port
    if not cur.is_hvm:
        rc = hv.pirq_guest_bind(cur, pirq, will_share)
        if rc:
            check_free_port(cur, port)
            return rc
    chn = cur.chans[port]
    chn.pirq = pirq
    _bind(cur, chn, PIRQ, 0)
    cur.pirq_to_port[pirq] = port
    arg.port = port
    return 0


def close(hv: Hypervisor, cur: Domain, arg: abi.Close) -> int:
    """§3.6, for a guest."""
    return evtchn_close(hv, cur, arg.port)


def evtchn_close(hv: Hypervisor, d: Domain, port: int, *, guest: bool = True) -> int:
    """Close one port; Xen itself (``guest=False``, at domain destruction) may close Xen-consumer ports."""
    if not 0 <= port < d.valid_evtchns:
        return EINVAL
    chn = d.chans[port]
    if chn.xen_consumer and guest:
        return EINVAL
    state = chn.state
    if state <= RESERVED:
        return EINVAL
    if state == PIRQ:
        del d.pirq_to_port[chn.pirq]
        if not d.is_hvm:
            hv.pirq_guest_unbind(d, chn.pirq)
    elif state == VIRQ:
        per_vcpu = hv.release.virq_kind(chn.virq) is VirqClass.PER_VCPU
        d.vcpus[chn.notify_vcpu_id if per_vcpu else 0].virq_to_evtchn[chn.virq] = 0
    elif state == INTERDOMAIN:
        rd = hv.domains[chn.remote_domid]
        rchn = rd.chans[chn.remote_port]
        evtchn_free(d, chn)
        rchn.state = UNBOUND
        rchn.remote_domid = d.domid
        rchn.peer = None
        rchn.deliver = None
        return 0
    evtchn_free(d, chn)
    return 0


def send(hv: Hypervisor, cur: Domain, arg: abi.Send) -> int:
    """§3.7: UNBOUND drops the event silently; the result never says whether it was pending or masked."""
    port = arg.port
    if not 0 <= port < cur.valid_evtchns:
        return EINVAL
    lchn = cur.chans[port]
    if lchn.xen_consumer:
        return EINVAL
    state = lchn.state
    if state == INTERDOMAIN:
        deliver = lchn.deliver
        if deliver is None:
            deliver = lchn.deliver = _deliverer(hv, lchn)
        deliver()
        return 0
    if state == IPI:
        cur.port_ops.set_pending(cur, lchn.notify_vcpu_id, lchn)
        return 0
    if state == UNBOUND:
        return 0
    return EINVAL


def _deliverer(hv: Hypervisor, lchn: Chan) -> Callable[[], None]:
    """The send on an interdomain channel, specialised for its peer: the peer ABI's set_pending (or the Xen
    consumer's notification) bound to the peer's domain, vCPU and channel."""
    peer = lchn.peer
    assert peer is not None  # set at bind, cleared with the state
    rd, rchn = peer
    if rchn.xen_consumer:
        return partial(hv.notify_xen_consumer, rd, rchn)
    return partial(rd.port_ops.set_pending, rd, rchn.notify_vcpu_id, rchn)


def status(hv: Hypervisor, cur: Domain, arg: abi.Status) -> int:
    """§3.8: union members that are not written keep the caller's bytes."""
    d = hv.lookup(cur, arg.dom)
    if d is None:
        return ESRCH
    port = arg.port
    if not 0 <= port < d.valid_evtchns:
        return EINVAL
    chn = d.chans[port]
    if chn.xen_consumer and hv.release.status_refuses_xen_consumers:  # 4.15-4.18 only
        return -errno.EACCES
    if not xsm_target(cur, d):
        return EPERM
    state = chn.state
    u = bytearray(arg.u)
    if state == UNBOUND:
        u[0:2] = chn.remote_domid.to_bytes(2, "little")
    elif state == INTERDOMAIN:
        u[0:2] = chn.remote_domid.to_bytes(2, "little")
        u[4:8] = chn.remote_port.to_bytes(4, "little")
    elif state == PIRQ:
        u[0:4] = chn.pirq.to_bytes(4, "little")
    elif state == VIRQ:
        u[0:4] = chn.virq.to_bytes(4, "little")
    arg.status = int(_STATUS_OF_STATE[state])
    arg.vcpu = chn.notify_vcpu_id
    arg.u = bytes(u)
    return 0


def bind_vcpu(hv: Hypervisor, cur: Domain, arg: abi.BindVcpu) -> int:
    """§3.9: the vCPU check comes first; nothing already pending or queued moves."""
    port, vcpu = arg.port, arg.vcpu
    if not _vcpu_exists(cur, vcpu):
        return ENOENT
    if not 0 <= port < cur.valid_evtchns:
        return EINVAL
    chn = cur.chans[port]
    if chn.xen_consumer:
        return EINVAL
    state = chn.state
    if state == VIRQ:
        if hv.release.virq_kind(chn.virq) is VirqClass.PER_VCPU:
            return EINVAL
    elif state not in (UNBOUND, INTERDOMAIN, PIRQ):
        return EINVAL
    chn.notify_vcpu_id = vcpu
    if chn.peer is not None:  # the peer's send was specialised for the old vCPU
        chn.peer[1].deliver = None
    return 0


def unmask(hv: Hypervisor, cur: Domain, arg: abi.Unmask) -> int:
    """§3.10: unusable channels are a silent no-op; always 0 for a valid port."""
    port = arg.port
    if not 0 <= port < cur.valid_evtchns:
        return EINVAL
    chn = cur.chans[port]
    if chn.usable or not hv.release.unusable_ports_inert:  # before XSA-343 any valid port is unmasked
        cur.port_ops.unmask(cur, chn)
    return 0


def reset(hv: Hypervisor, cur: Domain, arg: abi.Reset) -> int:
    """§3.11 EVTCHNOP_reset; a preempted reset continues as EVTCHNOP_reset_cont."""
    rc = _reset_hypercall(hv, cur, arg.dom, resuming=False)
    while rc == ERESTART:  # hypercall_create_continuation(EVTCHNOP_reset_cont, dom)
        rc = _reset_hypercall(hv, cur, arg.dom, resuming=True)
    return rc


def reset_cont(hv: Hypervisor, cur: Domain, arg: abi.Reset) -> int:
    """§3.11 EVTCHNOP_reset_cont: any guest may issue it; without a reset in progress it is -EBUSY. Releases
    before XSA-344 have no sub-op 14 (-ENOSYS, ``Release.reset_preemptible``)."""
    if not hv.release.reset_preemptible:
        return -errno.ENOSYS
    rc = _reset_hypercall(hv, cur, arg.dom, resuming=True)
    while rc == ERESTART:
        rc = _reset_hypercall(hv, cur, arg.dom, resuming=True)
    return rc


def _reset_hypercall(hv: Hypervisor, cur: Domain, dom: int, *, resuming: bool) -> int:
    d = hv.lookup(cur, dom)
    if d is None:
        return ESRCH
    if not xsm_target(cur, d):
        return EPERM
    return evtchn_reset(hv, cur, d, resuming=resuming, named_self=dom == DOMID_SELF)


def evtchn_reset(hv: Hypervisor, cur: Domain, d: Domain, *, resuming: bool, named_self: bool = False) -> int:
    """Close every guest port; FIFO domains go back to 2-level (when the release says so). Per release:
    the pause check (4.7), the preemptible loop with -EBUSY (XSA-344) and -EAGAIN (XSA-343), and when FIFO is
    torn down (never in 4.4, only for a literal DOMID_SELF in 4.5-4.6, always from 4.7)."""
    release = hv.release
    if release.reset_needs_pause and d is not cur and not d.controller_pause_count:
        return EINVAL
    if not release.reset_preemptible:
        # One pass over every valid port from 0; closing a reserved or Xen-bound port fails and is ignored.
        for port in range(d.valid_evtchns):
            evtchn_close(hv, d, port)
        _reset_fifo(d, release.reset_leaves_fifo, named_self)
        return 0
    # Not resuming: start at 1 and mark the reset in progress, unless one already is.
    port = d.next_evtchn if resuming else int(not d.next_evtchn)
    if port > d.next_evtchn:
        d.next_evtchn = port
    if not port:
        return EBUSY
    while port < d.valid_evtchns and d.active_evtchns > d.xen_evtchns:
        evtchn_close(hv, d, port)
        if not port & 0x3F and hv.preempt_check():
            d.next_evtchn = port
            return ERESTART
        port += 1
    d.next_evtchn = 0
    if release.reset_refuses_open_ports and d.active_evtchns > d.xen_evtchns:
        return EAGAIN
    _reset_fifo(d, release.reset_leaves_fifo, named_self)
    return 0


def _reset_fifo(d: Domain, rule: str, named_self: bool) -> None:
    if d.fifo is not None and (rule == "always" or (rule == "domid_self" and named_self)):
        fifo_destroy(d)
        d.port_ops = TWO_LEVEL
        d.forget_deliverers()


SUBOPS: dict[int, Callable[..., int]] = {
    abi.EVTCHNOP_bind_interdomain: bind_interdomain,
    abi.EVTCHNOP_bind_virq: bind_virq,
    abi.EVTCHNOP_bind_pirq: bind_pirq,
    abi.EVTCHNOP_close: close,
    abi.EVTCHNOP_send: send,
    abi.EVTCHNOP_status: status,
    abi.EVTCHNOP_alloc_unbound: alloc_unbound,
    abi.EVTCHNOP_bind_ipi: bind_ipi,
    abi.EVTCHNOP_bind_vcpu: bind_vcpu,
    abi.EVTCHNOP_unmask: unmask,
    abi.EVTCHNOP_reset: reset,
    abi.EVTCHNOP_reset_cont: reset_cont,
}
"""Sub-op -> handler for the ABI-independent sub-ops; the FIFO module adds 11-13."""
