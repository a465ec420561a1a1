"""``XEN_DOMCTL_createdomain``: the create flags and the fields of ``struct xen_domctl_createdomain`` we model.

Flags as of Xen 4.14 (hvm 0 ... iommu 5) with 4.15's nested_virt 6, plus the v5 series' ``evtchn_fifo`` 7 and
``evtchn_upcall`` 8 (``spec/abi-control.md`` §1.2-§1.3), the bits the series asked for. Each release's real set is in
the release table (``Release.cdf_flags``): Xen later gave bit 7 to vpmu (4.16) and bit 8 to
trap_unmapped_accesses (4.21), so where the series' flags go on a given release is decided there
(``Release.series_cdf_bits``). Limits per ``spec/evtchn.md`` §6. The x86 ``emulation_flags`` decide between HVM
and PVH, as in Xen, where PVH is an HVM container without emulated platform devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class GuestType(StrEnum):
    HVM = "hvm"
    PVH = "pvh"
    PV = "pv"


CDF_BITS: dict[str, int] = {
    "hvm": 0,
    "hap": 1,
    "s3_integrity": 2,
    "oos_off": 3,
    "xs_domain": 4,
    "iommu": 5,
    "nested_virt": 6,
    "evtchn_fifo": 7,
    "evtchn_upcall": 8,
}
"""XEN_DOMCTL_CDF_* flag name -> bit number."""

XEN_DOMCTL_CDF_hvm = 1 << CDF_BITS["hvm"]
XEN_DOMCTL_CDF_hap = 1 << CDF_BITS["hap"]
XEN_DOMCTL_CDF_s3_integrity = 1 << CDF_BITS["s3_integrity"]
XEN_DOMCTL_CDF_oos_off = 1 << CDF_BITS["oos_off"]
XEN_DOMCTL_CDF_xs_domain = 1 << CDF_BITS["xs_domain"]
XEN_DOMCTL_CDF_iommu = 1 << CDF_BITS["iommu"]
XEN_DOMCTL_CDF_nested_virt = 1 << CDF_BITS["nested_virt"]
XEN_DOMCTL_CDF_evtchn_fifo = 1 << CDF_BITS["evtchn_fifo"]
XEN_DOMCTL_CDF_evtchn_upcall = 1 << CDF_BITS["evtchn_upcall"]


# x86 emulation flags (xen/include/public/arch-x86/xen.h)
XEN_X86_EMU_LAPIC = 1 << 0
XEN_X86_EMU_HPET = 1 << 1
XEN_X86_EMU_PM = 1 << 2
XEN_X86_EMU_RTC = 1 << 3
XEN_X86_EMU_IOAPIC = 1 << 4
XEN_X86_EMU_PIC = 1 << 5
XEN_X86_EMU_VGA = 1 << 6
XEN_X86_EMU_IOMMU = 1 << 7
XEN_X86_EMU_PIT = 1 << 8
XEN_X86_EMU_USE_PIRQ = 1 << 9
XEN_X86_EMU_VPCI = 1 << 10
XEN_X86_EMU_ALL = (1 << 11) - 1
EMU_HVM = XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI  # what libxl asks for an HVM guest
EMU_PVH = XEN_X86_EMU_LAPIC  # what libxl asks for a PVH guest

HVM_MAX_VCPUS = 128
PV_MAX_VCPUS = 8192  # MAX_VIRT_CPUS; the model builds PV domains of at most HVM_MAX_VCPUS (NotModelled beyond)


@dataclass(frozen=True, slots=True)
class CreateDomain:
    """The modelled part of ``struct xen_domctl_createdomain``.

    ``max_evtchn_port`` defaults to libxl's 1023; grant limits < 0 mean "hypervisor default". ``abi_features``
    is the series' mask of registry bits (``xenabi.abi.features``); only a host with ABI control has the field.
    ``emulation_flags`` None means what libxl would pass for the type the flags imply (HVM or PV).
    """

    flags: int = 0
    max_vcpus: int = 1
    max_evtchn_port: int = 1023
    max_grant_frames: int = -1
    max_maptrack_frames: int = -1
    emulation_flags: int | None = None
    handle: bytes = bytes(16)  # xen_domain_handle_t: the toolstack's UUID for the domain (XENVER_guest_handle)
    # The series' mask field (DESIGN decision 10): registry bits, every feature, on a host with ABI control only.
    abi_features: int = 0
    # grant_opts (4.16): bits 0-3 the domain's maximum grant version; None = what libxl passes by default, the
    # host's maximum (and nothing at all before 4.16, where the field does not exist)
    grant_opts: int | None = None

    @classmethod
    def for_type(cls, guest_type: GuestType | str, *, features: int = 0, **limits: Any) -> CreateDomain:
        """The config libxl builds for a guest type: HVM gets hap and all emulators, PVH only the LAPIC."""
        kind = GuestType(guest_type)
        if kind is GuestType.PV:
            return cls(flags=features, emulation_flags=0, **limits)
        emulation = EMU_HVM if kind is GuestType.HVM else EMU_PVH
        return cls(flags=XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap | features, emulation_flags=emulation, **limits)

    @property
    def is_hvm(self) -> bool:
        return bool(self.flags & XEN_DOMCTL_CDF_hvm)

    @property
    def effective_emulation_flags(self) -> int:
        if self.emulation_flags is not None:
            return self.emulation_flags
        return EMU_HVM if self.is_hvm else 0

    @property
    def guest_type(self) -> GuestType:
        if not self.is_hvm:
            return GuestType.PV
        return GuestType.HVM if self.effective_emulation_flags & XEN_X86_EMU_PIC else GuestType.PVH


def emulation_flags_ok(is_hvm: bool, emulation: int) -> bool:
    """x86 ``emulation_flags_ok`` for a domU: HVM has every emulator but vPCI, PVH only the LAPIC; PV none or
    the PIT."""
    if is_hvm:
        return emulation in (EMU_HVM, EMU_PVH)
    return emulation in (0, XEN_X86_EMU_PIT)
