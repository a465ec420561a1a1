"""HVMOP_set_evtchn_upcall_vector (Xen 4.6, ``xen/arch/x86/hvm/hvm.c``; ``spec/abi-control.md`` §1.3).

Checks in Xen's order: the caller must be an HVM container (HVM or PVH; checked before the argument is even
copied in, so it is a pre-copy check here), the vector must be at least 0x10, the vCPU must exist (-ENOENT).
Then that vCPU's upcalls use the vector. Releases 4.6-4.14 do not inject a spurious upcall when the vector is
set (that came later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.hvm import HVM_UPCALL_VECTOR_MIN, EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor


def upcall_vector_precheck(hv: Hypervisor, cur: Domain) -> int:
    return 0 if cur.is_hvm else -errno.EINVAL


def set_evtchn_upcall_vector(hv: Hypervisor, cur: Domain, arg: EvtchnUpcallVector) -> int:
    vector, vcpu = arg.vector, arg.vcpu
    if not HVM_UPCALL_VECTOR_MIN <= vector <= 0xFF:
        return -errno.EINVAL
    if not 0 <= vcpu < cur.max_vcpus:
        return -errno.ENOENT
    cur.vcpus[vcpu].upcall_vector = vector
    return 0


SUBOPS = {HVMOP_set_evtchn_upcall_vector: set_evtchn_upcall_vector}
PRECHECKS = {HVMOP_set_evtchn_upcall_vector: upcall_vector_precheck}
