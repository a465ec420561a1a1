"""HVMOP_set_evtchn_upcall_vector (Xen 4.6, ``xen/arch/x86/hvm/hvm.c``; ``spec/abi-control.md`` §1.3) and
HVMOP_get_param.

Checks in Xen's order: the caller must be an HVM container (HVM or PVH; -EINVAL), the vector must be at least
0x10, the vCPU must exist (-ENOENT). Then that vCPU's upcalls use the vector. Two things differ by release (the
release table): from 4.10 the guest-type check comes before the argument is copied in (a pre-copy check here;
before, an unreadable argument from a PV guest was -EFAULT), and from 4.11 (4.7.5, 4.8.3, 4.9.2, 4.10.1) setting
the vector injects it once at once, a spurious upcall whether or not an event is pending. PVHv1 (4.4-4.8) is not
modelled: "pvh" is an HVM container in every release.

HVMOP_get_param, in ``hvmop_get_param``'s order: an index past ``HVM_NR_PARAMS`` -EINVAL, an unknown domain
-ESRCH, a domain that is not an HVM container -EINVAL, then XSM_TARGET (self, its device model, the control
domain) -EPERM. A param never set reads 0.

HVMOP_set_param makes the same four checks in the same order in every release (``do_hvm_op``'s shared
set/get case before 4.7, ``hvmop_set_param`` and ``hvm_allow_set_param`` after; read at RELEASE-4.6.0 and
4.17.0). Only ``HVM_PARAM_CALLBACK_IRQ``, which a guest may always set on itself, is modelled: Xen records the
callback (``hvm_set_callback_via``: any value is accepted, an unknown type meaning no callback) and the param
reads back as written. ``hvm_latch_shinfo_size`` runs too, and keeps the 64-bit layout: the model's HVM vCPUs are in
64-bit mode. Another param raises :class:`~xenabi.errors.NotModelled` once the checks pass (its per-param rules
are not modelled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.hvm import (
    HVM_NR_PARAMS,
    HVM_PARAM_CALLBACK_IRQ,
    HVM_UPCALL_VECTOR_MIN,
    EvtchnUpcallVector,
    HVMOP_get_param,
    HVMOP_set_evtchn_upcall_vector,
    HVMOP_set_param,
    HvmParam,
)
from xenabi.errors import NotModelled
from xenabi.hypervisor.upcall import vcpu_assert_vector
from xenabi.hypervisor.xsm import xsm_target

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor


def upcall_vector_precheck(hv: Hypervisor, cur: Domain) -> int:
    if cur.is_hvm or not hv.release.upcall_vector_checks_type_first:
        return 0
    return -errno.EINVAL


def set_evtchn_upcall_vector(hv: Hypervisor, cur: Domain, arg: EvtchnUpcallVector) -> int:
    if not cur.is_hvm:  # before 4.10 the type is checked only once the argument has been copied in
        return -errno.EINVAL
    vector, vcpu = arg.vector, arg.vcpu
    if not HVM_UPCALL_VECTOR_MIN <= vector <= 0xFF:
        return -errno.EINVAL
    if not 0 <= vcpu < cur.max_vcpus:
        return -errno.ENOENT
    v = cur.vcpus[vcpu]
    v.upcall_vector = vector
    if hv.release.upcall_vector_set_raises_upcall:
        vcpu_assert_vector(v)
    return 0


def _param_domain(hv: Hypervisor, cur: Domain, arg: HvmParam) -> Domain | int:
    """The checks set_param and get_param share, in Xen's order: the domain, or the errno."""
    if not 0 <= arg.index < HVM_NR_PARAMS:
        return -errno.EINVAL
    d = hv.lookup(cur, arg.domid)
    if d is None:
        return -errno.ESRCH
    if not d.is_hvm:
        return -errno.EINVAL
    if not xsm_target(cur, d):
        return -errno.EPERM
    return d


def get_param(hv: Hypervisor, cur: Domain, arg: HvmParam) -> int:
    d = _param_domain(hv, cur, arg)
    if isinstance(d, int):
        return d
    arg.value = d.hvm_params.get(arg.index, 0)
    return 0


def set_param(hv: Hypervisor, cur: Domain, arg: HvmParam) -> int:
    d = _param_domain(hv, cur, arg)
    if isinstance(d, int):
        return d
    if arg.index != HVM_PARAM_CALLBACK_IRQ:
        raise NotModelled(f"HVMOP_set_param of HVM param {arg.index} (only HVM_PARAM_CALLBACK_IRQ is modelled)")
    d.hvm_params[HVM_PARAM_CALLBACK_IRQ] = arg.value  # hvm_set_callback_via, then params[index] = value
    return 0


SUBOPS: dict[int, Callable[..., int]] = {
    HVMOP_set_evtchn_upcall_vector: set_evtchn_upcall_vector,
    HVMOP_get_param: get_param,
    HVMOP_set_param: set_param,
}
ARG_STRUCTS = {HVMOP_set_evtchn_upcall_vector: EvtchnUpcallVector, HVMOP_get_param: HvmParam, HVMOP_set_param: HvmParam}
PRECHECKS = {HVMOP_set_evtchn_upcall_vector: upcall_vector_precheck}
