"""What a domain reads from Xen's hypervisor CPUID leaves (``abi/cpuid.py``; ``cpuid_hypervisor_leaves`` in Xen).

Derived from the host and the domain's policy, so a guest can learn its ABI features without probing a hypercall:
leaf 6 exists only on hosts with ABI control (an older Xen had no such leaf: its highest leaf is 5 and leaf 6
reads as zeros, like every leaf past the highest), and its bits are the features the domain is not hidden from.

Modelled host: no APIC virtualisation and no IOMMU, so leaf 4 sets only the vCPU-id and domid bits (with the ids
in ebx and ecx); leaf 3's TSC information reads as zeros (the model has no TSC). Leaf 4 is for HVM containers
(HVM, PVH) and leaf 5 for PV, as in Xen. Leaves outside the hypervisor range read as zeros: the model has no
native CPUID.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenabi.abi.cpuid import (
    XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD,
    XEN_CPUID_FIRST_LEAF,
    XEN_CPUID_LEAF_ABI_FEATURES,
    XEN_CPUID_LEAF_HVM,
    XEN_CPUID_LEAF_HYPERCALL,
    XEN_CPUID_LEAF_PV,
    XEN_CPUID_LEAF_VERSION,
    XEN_CPUID_MAX_NUM_LEAVES,
    XEN_CPUID_SIGNATURE_EBX,
    XEN_CPUID_SIGNATURE_ECX,
    XEN_CPUID_SIGNATURE_EDX,
    XEN_HVM_CPUID_DOMID_PRESENT,
    XEN_HVM_CPUID_VCPU_ID_PRESENT,
    XEN_MSR_BASE,
    abi_feature_registers,
)
from xenabi.abi.features import REGISTRY

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor

Regs = tuple[int, int, int, int]
ZERO: Regs = (0, 0, 0, 0)
PV_MACHINE_ADDRESS_WIDTH = 46  # leaf 5 ebx[7:0]: a host with 64 TiB of addressable memory


def max_leaf(hv: Hypervisor) -> int:
    return XEN_CPUID_LEAF_ABI_FEATURES if hv.abi_control else XEN_CPUID_MAX_NUM_LEAVES


def available_features(d: Domain) -> frozenset[str]:
    """The registry features whose operations the domain can use (on an uncontrolled host: all implemented)."""
    return frozenset(row.name for row in REGISTRY if not row.gates & d.hidden_ops)


def hypervisor_leaf(hv: Hypervisor, d: Domain, leaf: int, subleaf: int, vcpu: int) -> Regs:
    index = leaf - XEN_CPUID_FIRST_LEAF
    if not 0 <= index <= max_leaf(hv):
        return ZERO
    if index == 0:
        return (
            XEN_CPUID_FIRST_LEAF + max_leaf(hv),
            XEN_CPUID_SIGNATURE_EBX,
            XEN_CPUID_SIGNATURE_ECX,
            XEN_CPUID_SIGNATURE_EDX,
        )
    if index == XEN_CPUID_LEAF_VERSION:
        major, minor = hv.release.version
        return major << 16 | minor, 0, 0, 0
    if index == XEN_CPUID_LEAF_HYPERCALL:
        features = 0 if d.is_hvm else XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD
        return 1, XEN_MSR_BASE, features, 0
    if index == XEN_CPUID_LEAF_HVM:
        if not d.is_hvm or subleaf != 0:
            return ZERO
        return XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT, vcpu, d.domid, 0
    if index == XEN_CPUID_LEAF_PV:
        if d.is_hvm or subleaf != 0:
            return ZERO
        return 0, PV_MACHINE_ADDRESS_WIDTH, 0, 0
    if index == XEN_CPUID_LEAF_ABI_FEATURES:
        if subleaf != 0:
            return ZERO
        return abi_feature_registers({REGISTRY[name].bit for name in available_features(d)})
    return ZERO
