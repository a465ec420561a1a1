"""What a domain reads from Xen's hypervisor CPUID leaves (``abi/cpuid.py``; ``cpuid_hypervisor_leaves`` in Xen).

Derived from the host and the domain's policy, so a guest can learn its ABI features without probing a hypercall:
leaf 6 exists only on hosts with ABI control (an older Xen had no such leaf: its highest leaf is 5 and leaf 6
reads as zeros, like every leaf past the highest), and its bits are the features the domain is not hidden from.

Per release (the release table): the highest leaf (0x40000002 in 4.3-4.4, 4 from 4.5, 5 from 4.10), and leaf 4's
bits: IOMMU_MAPPINGS always (Xen sets it whatever the host), VCPU_ID_PRESENT from 4.6 with the vCPU id in ebx,
DOMID_PRESENT from 4.11 (4.10.1) with the domid in ecx, UPCALL_VECTOR from 4.17. Until 4.8 (4.6.5, 4.7.2) a PV
guest read leaf 4's HVM bits too; after, zeros. Where ``evtchn_upcall`` is hidden from a domain, leaf 4's
UPCALL_VECTOR bit is clear too: it is Xen's own advertisement of the feature (DESIGN decision 10).

Modelled host: no APIC virtualisation, so leaf 4's bits 0 and 1 stay clear; leaf 3's TSC information reads as zeros
(the model has no TSC). Leaves outside the hypervisor range read as zeros: the model has no native CPUID.
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
    XEN_CPUID_SIGNATURE_EBX,
    XEN_CPUID_SIGNATURE_ECX,
    XEN_CPUID_SIGNATURE_EDX,
    XEN_HVM_CPUID_DOMID_PRESENT,
    XEN_HVM_CPUID_IOMMU_MAPPINGS,
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
    return XEN_CPUID_LEAF_ABI_FEATURES if hv.abi_control else hv.release.cpuid_max_leaf


def _exists(hv: Hypervisor, index: int) -> bool:
    """A leaf the host's Xen answers: its release's leaves, plus the ABI leaf on a host with ABI control."""
    return 0 <= index <= hv.release.cpuid_max_leaf or (hv.abi_control and index == XEN_CPUID_LEAF_ABI_FEATURES)


def available_features(d: Domain) -> frozenset[str]:
    """The registry features whose operations the domain can use (on an uncontrolled host: all implemented)."""
    return d.exposed_features


def hvm_leaf(hv: Hypervisor, d: Domain, vcpu: int) -> Regs:
    """Leaf 4 as the host's release writes it."""
    release = hv.release
    eax, ebx, ecx = XEN_HVM_CPUID_IOMMU_MAPPINGS, 0, 0
    if release.cpuid_leaf4_vcpu_id:
        eax |= XEN_HVM_CPUID_VCPU_ID_PRESENT
        ebx = vcpu
    if release.cpuid_leaf4_domid:
        eax |= XEN_HVM_CPUID_DOMID_PRESENT
        ecx = d.domid
    if release.cpuid_leaf4_upcall_vector:  # Xen advertises the upcall vector here from 4.17
        available = available_features(d)
        for row in REGISTRY:
            if row.cpuid_leaf4_bit and row.name in available:
                eax |= row.cpuid_leaf4_bit
    return eax, ebx, ecx, 0


def hypervisor_leaf(hv: Hypervisor, d: Domain, leaf: int, subleaf: int, vcpu: int) -> Regs:
    index = leaf - XEN_CPUID_FIRST_LEAF
    if not _exists(hv, index):
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
        if subleaf != 0 or not (d.is_hvm or hv.release.cpuid_leaf4_for_pv):
            return ZERO
        return hvm_leaf(hv, d, vcpu)
    if index == XEN_CPUID_LEAF_PV:
        if d.is_hvm or subleaf != 0:
            return ZERO
        return 0, PV_MACHINE_ADDRESS_WIDTH, 0, 0
    if index == XEN_CPUID_LEAF_ABI_FEATURES:
        if subleaf != 0:
            return ZERO
        return abi_feature_registers({REGISTRY[name].bit for name in available_features(d)})
    return ZERO
