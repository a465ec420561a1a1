"""HVMOP_set_evtchn_upcall_vector (Xen 4.6, ``xen/arch/x86/hvm/hvm.c``; ``spec/abi-control.md`` §1.3) and
HVMOP_get_param.

Checks in Xen's order: the caller must be an HVM container (HVM or PVH; checked before the argument is even
copied in, so it is a pre-copy check here), the vector must be at least 0x10, the vCPU must exist (-ENOENT).
Then that vCPU's upcalls use the vector. Releases 4.6-4.14 do not inject a spurious upcall when the vector is
set (that came later).

HVMOP_get_param, in ``hvmop_get_param``'s order: an index past ``HVM_NR_PARAMS`` -EINVAL, an unknown domain
-ESRCH, a domain that is not an HVM container -EINVAL, then XSM_TARGET (self, its device model, the control
domain) -EPERM. A param never set reads 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.hvm import (
    HVM_NR_PARAMS,
    HVM_UPCALL_VECTOR_MIN,
    EvtchnUpcallVector,
    HVMOP_get_param,
    HVMOP_set_evtchn_upcall_vector,
    HvmParam,
)
from xenabi.hypervisor.xsm import xsm_target

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


def get_param(hv: Hypervisor, cur: Domain, arg: HvmParam) -> int:
    if not 0 <= arg.index < HVM_NR_PARAMS:
        return -errno.EINVAL
    d = hv.lookup(cur, arg.domid)
    if d is None:
        return -errno.ESRCH
    if not d.is_hvm:
        return -errno.EINVAL
    if not xsm_target(cur, d):
        return -errno.EPERM
    arg.value = d.hvm_params.get(arg.index, 0)
    return 0


SUBOPS = {HVMOP_set_evtchn_upcall_vector: set_evtchn_upcall_vector, HVMOP_get_param: get_param}
ARG_STRUCTS = {HVMOP_set_evtchn_upcall_vector: EvtchnUpcallVector, HVMOP_get_param: HvmParam}
PRECHECKS = {HVMOP_set_evtchn_upcall_vector: upcall_vector_precheck}
