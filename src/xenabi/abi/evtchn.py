"""EVTCHNOP_* sub-op numbers, their argument structs, port states and the FIFO ABI constants.

Source: ``xen/include/public/event_channel.h`` as summarised in ``spec/evtchn.md`` §1 (sub-ops and structs),
§2.2 (EVTCHNSTAT), §5.1 (FIFO constants). ``domid_t`` is a uint16 and ``evtchn_port_t`` a uint32; padding is
explicit (``_pad*`` fields) where the C compiler inserts it.
"""

from __future__ import annotations

from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct


class EvtchnOp(IntEnum):
    bind_interdomain = 0
    bind_virq = 1
    bind_pirq = 2
    close = 3
    send = 4
    status = 5
    alloc_unbound = 6
    bind_ipi = 7
    bind_vcpu = 8
    unmask = 9
    reset = 10
    init_control = 11
    expand_array = 12
    set_priority = 13
    reset_cont = 14


EVTCHNOP_bind_interdomain = EvtchnOp.bind_interdomain
EVTCHNOP_bind_virq = EvtchnOp.bind_virq
EVTCHNOP_bind_pirq = EvtchnOp.bind_pirq
EVTCHNOP_close = EvtchnOp.close
EVTCHNOP_send = EvtchnOp.send
EVTCHNOP_status = EvtchnOp.status
EVTCHNOP_alloc_unbound = EvtchnOp.alloc_unbound
EVTCHNOP_bind_ipi = EvtchnOp.bind_ipi
EVTCHNOP_bind_vcpu = EvtchnOp.bind_vcpu
EVTCHNOP_unmask = EvtchnOp.unmask
EVTCHNOP_reset = EvtchnOp.reset
EVTCHNOP_init_control = EvtchnOp.init_control
EVTCHNOP_expand_array = EvtchnOp.expand_array
EVTCHNOP_set_priority = EvtchnOp.set_priority
EVTCHNOP_reset_cont = EvtchnOp.reset_cont


class EvtchnStat(IntEnum):
    """What EVTCHNOP_status reports (§2.2)."""

    closed = 0
    unbound = 1
    interdomain = 2
    pirq = 3
    virq = 4
    ipi = 5


BIND_PIRQ__WILL_SHARE = 1


@cstruct("HHII", out=("local_port",))
class BindInterdomain(CStruct):
    remote_dom: int = 0
    _pad0: int = 0
    remote_port: int = 0
    local_port: int = 0


@cstruct("III", out=("port",))
class BindVirq(CStruct):
    virq: int = 0
    vcpu: int = 0
    port: int = 0


@cstruct("III", out=("port",))
class BindPirq(CStruct):
    pirq: int = 0
    flags: int = 0
    port: int = 0


@cstruct("I")
class Close(CStruct):
    port: int = 0


@cstruct("I")
class Send(CStruct):
    port: int = 0


@cstruct("HHIII8s", out=("status", "vcpu", "u"))
class Status(CStruct):
    """``u`` is the raw 8-byte union: members the hypervisor does not write keep the caller's bytes (§3.8)."""

    dom: int = 0
    _pad0: int = 0
    port: int = 0
    status: int = 0
    vcpu: int = 0
    u: bytes = bytes(8)

    @property
    def unbound_dom(self) -> int:
        return int.from_bytes(self.u[0:2], "little")

    @property
    def interdomain_dom(self) -> int:
        return int.from_bytes(self.u[0:2], "little")

    @property
    def interdomain_port(self) -> int:
        return int.from_bytes(self.u[4:8], "little")

    @property
    def pirq(self) -> int:
        return int.from_bytes(self.u[0:4], "little")

    @property
    def virq(self) -> int:
        return int.from_bytes(self.u[0:4], "little")


@cstruct("HHI", out=("port",))
class AllocUnbound(CStruct):
    dom: int = 0
    remote_dom: int = 0
    port: int = 0


@cstruct("II", out=("port",))
class BindIpi(CStruct):
    vcpu: int = 0
    port: int = 0


@cstruct("II")
class BindVcpu(CStruct):
    port: int = 0
    vcpu: int = 0


@cstruct("I")
class Unmask(CStruct):
    port: int = 0


@cstruct("H")
class Reset(CStruct):
    dom: int = 0


@cstruct("QIIB7s", out=("link_bits",))
class InitControl(CStruct):
    control_gfn: int = 0
    offset: int = 0
    vcpu: int = 0
    link_bits: int = 0
    _pad: bytes = bytes(7)


@cstruct("Q")
class ExpandArray(CStruct):
    array_gfn: int = 0


@cstruct("II")
class SetPriority(CStruct):
    port: int = 0
    priority: int = 0


ARG_STRUCTS: dict[int, type[CStruct]] = {
    EVTCHNOP_bind_interdomain: BindInterdomain,
    EVTCHNOP_bind_virq: BindVirq,
    EVTCHNOP_bind_pirq: BindPirq,
    EVTCHNOP_close: Close,
    EVTCHNOP_send: Send,
    EVTCHNOP_status: Status,
    EVTCHNOP_alloc_unbound: AllocUnbound,
    EVTCHNOP_bind_ipi: BindIpi,
    EVTCHNOP_bind_vcpu: BindVcpu,
    EVTCHNOP_unmask: Unmask,
    EVTCHNOP_reset: Reset,
    EVTCHNOP_init_control: InitControl,
    EVTCHNOP_expand_array: ExpandArray,
    EVTCHNOP_set_priority: SetPriority,
    EVTCHNOP_reset_cont: Reset,
}
"""Sub-op -> argument struct (§1 table)."""

# The old hypercall 16 carries ``struct evtchn_op {uint32 cmd; union u}``. The union holds sub-ops 0-9 only;
# the largest member (status, 24 bytes, 4-byte aligned) makes the struct 28 bytes.
COMPAT_SUBOPS = frozenset(range(EVTCHNOP_bind_interdomain, EVTCHNOP_unmask + 1))
COMPAT_UNION_SIZE = 24


@cstruct("I24s", out=("u",))
class CompatEvtchnOp(CStruct):
    cmd: int = 0
    u: bytes = bytes(COMPAT_UNION_SIZE)


# --- FIFO ABI constants (§5.1) ------------------------------------------------------------------------------
EVTCHN_FIFO_PRIORITY_MAX = 0
EVTCHN_FIFO_PRIORITY_DEFAULT = 7
EVTCHN_FIFO_PRIORITY_MIN = 15
EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1

EVTCHN_FIFO_PENDING = 31
EVTCHN_FIFO_MASKED = 30
EVTCHN_FIFO_LINKED = 29
EVTCHN_FIFO_BUSY = 28
EVTCHN_FIFO_LINK_BITS = 17
EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1
EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS

EVTCHN_FIFO_EVENT_WORDS_PER_PAGE = 4096 // 4
EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES = EVTCHN_FIFO_NR_CHANNELS // EVTCHN_FIFO_EVENT_WORDS_PER_PAGE

# struct evtchn_fifo_control_block { uint32 ready; uint32 _rsvd; uint32 head[16]; }
CONTROL_BLOCK_READY = 0
CONTROL_BLOCK_HEAD = 8
CONTROL_BLOCK_SIZE = CONTROL_BLOCK_HEAD + 4 * EVTCHN_FIFO_MAX_QUEUES
