"""``vcpu_op`` (hypercall 24): sub-op numbers, runstates and the layouts of the areas Xen keeps current in guest
memory (``xen/include/public/vcpu.h``, ``arch-x86/xen.h``; ``spec/gnttab-vcpu-version.md`` §4).

The hypercall carries ``(cmd, vcpuid, arg)``; ``arg`` is a guest handle. The model takes it as a guest address
(:class:`VcpuOpArg`), as it does for xen_version, so that a fault while reading the argument happens where Xen's
``copy_from_guest`` would, after the vcpuid check.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct


class VcpuOp(IntEnum):
    initialise = 0
    up = 1
    down = 2
    is_up = 3
    get_runstate_info = 4
    register_runstate_memory_area = 5
    set_periodic_timer = 6
    stop_periodic_timer = 7
    set_singleshot_timer = 8
    stop_singleshot_timer = 9
    register_vcpu_info = 10
    send_nmi = 11
    get_physid = 12
    register_vcpu_time_memory_area = 13
    register_runstate_phys_area = 14  # 4.18
    register_vcpu_time_phys_area = 15  # 4.18, x86


class Runstate(IntEnum):
    running = 0
    runnable = 1
    blocked = 2
    offline = 3


XEN_RUNSTATE_UPDATE = 1 << 63  # in state_entry_time while Xen rewrites the area

# struct vcpu_runstate_info: int state; (pad); uint64 state_entry_time; uint64 time[4]. The 32-bit compat layout
# has no padding after state (44 bytes, 4-byte aligned).
RUNSTATE_INFO = struct.Struct("<i4xQ4Q")
RUNSTATE_INFO_COMPAT = struct.Struct("<iQ4Q")
# struct vcpu_time_info: uint32 version, pad0; uint64 tsc_timestamp, system_time; uint32 tsc_to_system_mul;
# int8 tsc_shift; uint8 flags; uint8 pad1[2]. The same 32 bytes for both widths.
VCPU_TIME_INFO = struct.Struct("<I4xQQIbB2x")
XEN_PVCLOCK_TSC_STABLE_BIT = 1 << 0

VCPU_INFO_SIZE = 64  # sizeof(vcpu_info_t) on x86, native and compat alike
VCPU_INFO_ALIGN = {64: 8, 32: 4}  # alignof(vcpu_info_t) / of its compat form: the 4.14+ check
AREA_ALIGN = {64: 8, 32: 4}  # alignof(xen_ulong_t) / compat_ulong_t: map_guest_area (4.18)
UNREGISTER = (1 << 64) - 1  # ~0 as a physical address: unregister a 4.18 area

# The sub-ops an HVM guest could reach in 4.3-4.6 (hvm_vcpu_op's filter): every other op was -ENOSYS for it.
HVM_FILTER_4_3 = frozenset(
    {
        VcpuOp.get_runstate_info,
        VcpuOp.register_runstate_memory_area,
        VcpuOp.set_periodic_timer,
        VcpuOp.stop_periodic_timer,
        VcpuOp.set_singleshot_timer,
        VcpuOp.stop_singleshot_timer,
        VcpuOp.register_vcpu_info,
        VcpuOp.register_vcpu_time_memory_area,
    }
)


@cstruct("Q")
class VcpuOpArg(CStruct):
    """The model's form of the hypercall's argument: the guest address of its struct (0: a null handle)."""

    addr: int = 0


@cstruct("QII")
class RegisterVcpuInfo(CStruct):
    """``struct vcpu_register_vcpu_info``: the frame and offset of the new vcpu_info (16 bytes)."""

    mfn: int = 0
    offset: int = 0
    rsvd: int = 0


@cstruct("Q")
class RegisterArea(CStruct):
    """``struct vcpu_register_runstate_memory_area`` / ``vcpu_register_time_memory_area``: one 8-byte field, read
    as a linear address (ops 5, 13) or a guest-physical one (ops 14, 15). A 32-bit guest passes the same 8 bytes
    (the compat handle is 4 bytes and padded; only ``addr.p`` is 64-bit)."""

    addr: int = 0
