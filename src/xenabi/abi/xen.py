"""Hypercall numbers, special domids, VIRQs and the shared_info / vcpu_info layout (``xen/include/public/xen.h``).

Spec: ``spec/evtchn.md`` §1 (hypercall numbers), §3.3 (VIRQ classes), §4.1 (2-level layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# --- hypercall numbers --------------------------------------------------------------------------------------
HYPERVISOR_event_channel_op_compat = 16
HYPERVISOR_xen_version = 17
HYPERVISOR_grant_table_op = 20
HYPERVISOR_vcpu_op = 24
HYPERVISOR_sched_op = 29
HYPERVISOR_event_channel_op = 32
HYPERVISOR_hvm_op = 34
HYPERVISOR_domctl = 36
HYPERVISOR_hypfs_op = 42

HYPERCALL_NAMES: dict[int, str] = {
    HYPERVISOR_event_channel_op_compat: "event_channel_op_compat",
    HYPERVISOR_xen_version: "xen_version",
    HYPERVISOR_grant_table_op: "grant_table_op",
    HYPERVISOR_vcpu_op: "vcpu_op",
    HYPERVISOR_sched_op: "sched_op",
    HYPERVISOR_event_channel_op: "event_channel_op",
    HYPERVISOR_hvm_op: "hvm_op",
    HYPERVISOR_domctl: "domctl",
    HYPERVISOR_hypfs_op: "hypfs_op",
}

# --- domids -------------------------------------------------------------------------------------------------
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_IDLE = 0x7FFF


# --- VIRQs --------------------------------------------------------------------------------------------------
class VirqClass(Enum):
    """How a VIRQ is bound and delivered ([EC.c] ``get_virq_type``)."""

    PER_VCPU = "per-vcpu"
    PER_DOMAIN = "per-domain"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Virq:
    number: int
    name: str
    kind: VirqClass


NR_VIRQS = 24
_V, _D, _G = VirqClass.PER_VCPU, VirqClass.PER_DOMAIN, VirqClass.GLOBAL

VIRQS: tuple[Virq, ...] = (
    Virq(0, "TIMER", _V),
    Virq(1, "DEBUG", _V),
    Virq(2, "CONSOLE", _G),
    Virq(3, "DOM_EXC", _G),
    Virq(4, "TBUF", _G),
    Virq(5, "unused_5", _G),
    Virq(6, "DEBUGGER", _G),
    Virq(7, "XENOPROF", _V),
    Virq(8, "CON_RING", _G),
    Virq(9, "PCPU_STATE", _G),
    Virq(10, "MEM_EVENT", _G),
    Virq(11, "ARGO", _D),
    Virq(12, "ENOMEM", _G),
    Virq(13, "XENPMU", _V),
    Virq(14, "unused_14", _G),
    Virq(15, "unused_15", _G),
    *(Virq(16 + i, f"ARCH_{i}", _G) for i in range(8)),
)
"""The VIRQ table, indexed by number; ``len(VIRQS) == NR_VIRQS``."""

VIRQ_TIMER = 0
VIRQ_DEBUG = 1
VIRQ_CONSOLE = 2
VIRQ_DOM_EXC = 3
VIRQ_ARGO = 11
VIRQ_XENPMU = 13

# --- shared_info / vcpu_info layout (x86) -------------------------------------------------------------------
XEN_LEGACY_MAX_VCPUS = 32
VCPU_INFO_SIZE = 64
VCPU_INFO_UPCALL_PENDING = 0  # uint8 evtchn_upcall_pending
VCPU_INFO_UPCALL_MASK = 1  # uint8 evtchn_upcall_mask


def pending_sel_offset(word_bits: int) -> int:
    """Offset of ``evtchn_pending_sel`` in vcpu_info: the xen_ulong_t is naturally aligned after two bytes."""
    return word_bits // 8


SHARED_INFO_EVTCHN_PENDING = XEN_LEGACY_MAX_VCPUS * VCPU_INFO_SIZE  # 2048, after vcpu_info[32]


def evtchn_mask_offset(word_bits: int) -> int:
    """``evtchn_mask[W]`` follows ``evtchn_pending[W]``; each is W words of W bits."""
    return SHARED_INFO_EVTCHN_PENDING + word_bits * word_bits // 8


def evtchn_2l_nr_channels(word_bits: int) -> int:
    """EVTCHN_2L_NR_CHANNELS for a guest whose xen_ulong_t has ``word_bits`` bits (4096 or 1024)."""
    return word_bits * word_bits
