"""Hypervisor CPUID leaves: Xen's leaves 0-5 and the ABI feature leaf derived from the domain's policy."""

from __future__ import annotations

import pytest

from xenabi.abi.cpuid import (
    XEN_CPUID_SIGNATURE_EBX,
    XEN_CPUID_SIGNATURE_ECX,
    XEN_CPUID_SIGNATURE_EDX,
    XEN_HVM_CPUID_DOMID_PRESENT,
    XEN_HVM_CPUID_VCPU_ID_PRESENT,
    abi_feature_bits,
    abi_feature_registers,
)
from xenabi.errors import XenError
from xenabi.hypervisor import Hypervisor

from ..conftest import new_domu

BASE = 0x40000000


def test_signature_and_max_leaf() -> None:
    controlled, legacy = Hypervisor("4.14", True), Hypervisor("4.14", False)
    for hv, top in ((controlled, 6), (legacy, 5)):
        domu = new_domu(hv)
        assert hv.cpuid(domu, BASE) == (BASE + top, XEN_CPUID_SIGNATURE_EBX, XEN_CPUID_SIGNATURE_ECX,
                                         XEN_CPUID_SIGNATURE_EDX)  # fmt: skip
        assert b"".join(r.to_bytes(4, "little") for r in hv.cpuid(domu, BASE)[1:]) == b"XenVMMXenVMM"


@pytest.mark.parametrize(("release", "eax"), [("4.3", 0x40003), ("4.14", 0x4000E)])
def test_version_leaf(release: str, eax: int) -> None:
    hv = Hypervisor(release, False)
    assert hv.cpuid(new_domu(hv), BASE + 1) == (eax, 0, 0, 0)


def test_hvm_leaf_reports_vcpu_and_domid(hv: Hypervisor) -> None:
    domu = new_domu(hv, "hvm", max_vcpus=2)
    eax, ebx, ecx, _ = hv.cpuid(domu, BASE + 4, vcpu=1)
    # IOMMU_MAPPINGS (bit 2) is set whatever the host: Xen's cpuid code sets it unconditionally (4.5 on)
    assert eax == 1 << 2 | XEN_HVM_CPUID_VCPU_ID_PRESENT | XEN_HVM_CPUID_DOMID_PRESENT and (ebx, ecx) == (1, domu)
    assert hv.cpuid(new_domu(hv, "pv"), BASE + 4) == (0, 0, 0, 0)


def test_feature_leaf_follows_policy(hv: Hypervisor) -> None:
    assert abi_feature_bits(hv.cpuid(new_domu(hv, "hvm"), BASE + 6)) == {0, 1, 2}  # 4.14: fifo, upcall, grant v2
    assert abi_feature_bits(hv.cpuid(new_domu(hv, "hvm", "evtchn_upcall"), BASE + 6)) == {1}
    assert hv.cpuid(new_domu(hv, "pvh", "evtchn_fifo"), BASE + 6) == (1, 0, 0, 0)


def test_leaves_past_the_top_read_zero() -> None:
    hv = Hypervisor("4.14", False)
    domu = new_domu(hv)
    assert hv.cpuid(domu, BASE + 6) == (0, 0, 0, 0)
    assert hv.cpuid(domu, BASE + 0x100) == (0, 0, 0, 0)
    assert hv.cpuid(domu, 0) == (0, 0, 0, 0)


def test_bad_vcpu_or_domain_is_a_controller_error(hv: Hypervisor) -> None:
    with pytest.raises(XenError):
        hv.cpuid(new_domu(hv), BASE, vcpu=5)
    with pytest.raises(XenError):
        hv.cpuid(99, BASE)


def test_register_packing_round_trips() -> None:
    bits = {0, 31, 32, 95, 127}
    regs = abi_feature_registers(bits)
    assert regs == (1 | 1 << 31, 1, 1 << 31, 1 << 31) and abi_feature_bits(regs) == bits
    with pytest.raises(ValueError):
        abi_feature_registers({128})
