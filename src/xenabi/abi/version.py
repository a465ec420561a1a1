"""``xen_version`` (hypercall 17): sub-op numbers, buffer sizes and XENFEAT bits of ``xen/include/public/version.h``
and ``features.h`` (``spec/gnttab-vcpu-version.md`` §2).

The hypercall takes one guest handle. The model passes it as :class:`XenVersionArg`, a guest address in the
caller's RAM (0 is the null handle), as hypfs_op's arguments are: what Xen reads and writes there, the model reads
and writes in the domain's memory.
"""

from __future__ import annotations

from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct


class XenVer(IntEnum):
    version = 0
    extraversion = 1
    compile_info = 2
    capabilities = 3
    changeset = 4
    platform_parameters = 5
    get_features = 6
    pagesize = 7
    guest_handle = 8
    commandline = 9
    build_id = 10  # Xen 4.7
    extraversion2 = 11  # Xen 4.20: struct xen_varbuf
    capabilities2 = 12
    changeset2 = 13
    commandline2 = 14


VARBUF_SUBOPS = frozenset({XenVer.extraversion2, XenVer.capabilities2, XenVer.changeset2, XenVer.commandline2})

# Fixed-size results (bytes): xen_extraversion_t, xen_compile_info_t (compiler 64, compile_by 16, compile_domain 32,
# compile_date 32), xen_capabilities_info_t, xen_changeset_info_t, xen_domain_handle_t, xen_commandline_t.
EXTRAVERSION_LEN = 16
COMPILE_INFO_FIELDS = (64, 16, 32, 32)
CAPABILITIES_LEN = 1024
CHANGESET_LEN = 64
DOMAIN_HANDLE_LEN = 16
COMMANDLINE_LEN = 1024
VARBUF_MAX = 64 << 10  # the 4.20 sub-ops refuse a string longer than this (-E2BIG)
DENIED = b"<denied>"  # xen_deny(): what a denied string reads as
PAGE_SIZE = 4096

# platform_parameters' virt_start: x86-64 PV guests see Xen's start (PML4 slot 256); 32-bit PV guests the compat
# one (__HYPERVISOR_COMPAT_VIRT_START, the domain's hv_compat_vstart).
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_COMPAT_VIRT_START = 0xF5800000


class Xenfeat(IntEnum):
    """``XENFEAT_*``: bit numbers in submap 0 of ``XENVER_get_features``."""

    writable_page_tables = 0
    writable_descriptor_tables = 1
    auto_translated_physmap = 2
    supervisor_mode_kernel = 3
    pae_pgdir_above_4gb = 4
    mmu_pt_update_preserve_ad = 5
    highmem_assist = 6
    gnttab_map_avail_bits = 7
    hvm_callback_vector = 8
    hvm_safe_pvclock = 9
    hvm_pirqs = 10
    dom0 = 11
    grant_map_identity = 12
    memory_op_vnode_supported = 13
    ARM_SMCCC_supported = 14
    linux_rsdp_unrestricted = 15
    not_direct_mapped = 16
    direct_mapped = 17
    runstate_phys_area = 18
    vcpu_time_phys_area = 19
    dm_msix_all_writes = 20


@cstruct("Q")
class XenVersionArg(CStruct):
    """The model's form of the hypercall's one argument: the guest address of its buffer (0: a null handle)."""

    addr: int = 0


@cstruct("II", out=("submap",))
class FeatureInfo(CStruct):
    """``struct xen_feature_info`` (8 bytes; ``submap_idx`` was ``unsigned int`` until 4.18, the same layout)."""

    submap_idx: int = 0
    submap: int = 0
