"""Xen's hypervisor CPUID leaves (``xen/include/public/arch-x86/cpuid.h``), plus the ABI feature leaf.

Xen answers CPUID leaves from ``XEN_CPUID_FIRST_LEAF`` (0x40000000; 0x40000100 when Viridian is on, which the model
does not do): leaf 0 the highest leaf and the "XenVMMXenVMM" signature, leaf 1 the version, leaf 2 hypercall pages and
the MSR base, leaf 3 TSC information, leaf 4 HVM features, leaf 5 PV parameters (``XEN_CPUID_MAX_NUM_LEAVES`` 5 in
4.14). The reviewer's alternative in the v5 thread (``spec/abi-control.md`` §1.7) keys hypercalls to CPUID bits;
xenabi adds that as leaf 6 on hosts with ABI control: bit N of (eax, ebx, ecx, edx), counting eax bit 0 first, says
registry feature N is available to the domain.
"""

from __future__ import annotations

XEN_CPUID_FIRST_LEAF = 0x40000000
XEN_CPUID_SIGNATURE_EBX = 0x566E6558  # "XenV"
XEN_CPUID_SIGNATURE_ECX = 0x65584D4D  # "MMXe"
XEN_CPUID_SIGNATURE_EDX = 0x4D4D566E  # "nVMM"

XEN_CPUID_MAX_NUM_LEAVES = 5
"""The highest leaf index from Xen 4.10 (PV parameters); each release's is in the release table."""

XEN_CPUID_LEAF_VERSION = 1
XEN_CPUID_LEAF_HYPERCALL = 2
XEN_CPUID_LEAF_TSC = 3
XEN_CPUID_LEAF_HVM = 4
XEN_CPUID_LEAF_PV = 5
XEN_CPUID_LEAF_ABI_FEATURES = 6
"""xenabi's leaf: one bit per registry feature the domain has. Present only on hosts with ABI control."""

XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD = 1 << 0  # leaf 2 ecx, PV only
XEN_MSR_BASE = 0x40000000  # leaf 2 ebx: where the hypercall-page MSR lives

# Leaf 4 eax (HVM only)
XEN_HVM_CPUID_APIC_ACCESS_VIRT = 1 << 0
XEN_HVM_CPUID_X2APIC_VIRT = 1 << 1
XEN_HVM_CPUID_IOMMU_MAPPINGS = 1 << 2
XEN_HVM_CPUID_VCPU_ID_PRESENT = 1 << 3
XEN_HVM_CPUID_DOMID_PRESENT = 1 << 4
XEN_HVM_CPUID_EXT_DEST_ID = 1 << 5  # defined from 4.17, never set by Xen
XEN_HVM_CPUID_UPCALL_VECTOR = 1 << 6  # 4.17: HVMOP_set_evtchn_upcall_vector is available

ABI_FEATURE_BITS = 128
"""Four 32-bit registers: the leaf can describe registry bits 0-127."""


def abi_feature_registers(bits: set[int] | frozenset[int]) -> tuple[int, int, int, int]:
    """(eax, ebx, ecx, edx) with bit N set for each N in ``bits``."""
    words = [0, 0, 0, 0]
    for bit in bits:
        if not 0 <= bit < ABI_FEATURE_BITS:
            raise ValueError(f"feature bit {bit} does not fit the CPUID leaf")
        words[bit // 32] |= 1 << (bit % 32)
    return words[0], words[1], words[2], words[3]


def abi_feature_bits(regs: tuple[int, int, int, int]) -> frozenset[int]:
    """The inverse of :func:`abi_feature_registers`: the bit numbers a guest reads from the leaf."""
    return frozenset(word * 32 + bit for word, value in enumerate(regs) for bit in range(32) if value >> bit & 1)
