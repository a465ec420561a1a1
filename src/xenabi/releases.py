"""Xen's release history as data: every release from 4.3 to 4.22, point releases included, as a guest sees it.

``DESIGN.md`` decision 3. A release is a row computed from one table, :data:`CHANGES`: each entry is one
guest-visible difference, named after the :class:`Release` field it sets, with the Xen commit that made it, the
first minor release that has it, and the point releases of older lines that got it as a backport (a security
fix, usually). The handlers read the fields; nothing compares version numbers inline. Which ABI *features* a
release implements is not here but in the feature registry (``since``), because ABI control can hide those; every
field here is a difference it cannot hide, and ``xenabi releases diff`` says so.

Names: ``"4.14"`` is the newest point release of that line in the mirror the table was read from (4.14.6);
``"4.14.0"`` and ``"4.14.1"`` name one exactly. Every tagged point release of every line is accepted (there was
never a 4.6.2); anything else (``4.2``, ``4.23``, ``4.14.99``, ``four``) is a :class:`~xenabi.errors.PolicyError`
naming the known range.

Read off Xen's code at each tag (``git show RELEASE-x.y.z:path``); where the spec (written from a 4.23-dev tree)
differs, the code at the tag wins. What is read but not modelled is listed in :data:`NOT_MODELLED`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any

from xenabi.abi import errno
from xenabi.abi.domctl import GuestType
from xenabi.abi.features import REGISTRY, AbiFeature
from xenabi.abi.gnttab import GNTTAB_MAX_VERSION_DEFAULT
from xenabi.abi.xen import VIRQ_ARGO, VIRQ_XENPMU, VIRQS, VirqClass
from xenabi.errors import PolicyError

LINES: dict[str, int] = {
    "4.3": 4, "4.4": 4, "4.5": 5, "4.6": 6, "4.7": 6, "4.8": 5, "4.9": 4, "4.10": 4, "4.11": 4, "4.12": 4,
    "4.13": 5, "4.14": 6, "4.15": 7, "4.16": 7, "4.17": 7, "4.18": 6, "4.19": 6, "4.20": 4, "4.21": 2, "4.22": 0,
}  # fmt: skip
"""Each minor line and its newest point release (``RELEASE-x.y.z`` tags)."""
NEVER_TAGGED = frozenset({"4.6.2"})

Version = tuple[int, int, int]

# The real create flags (bit numbers) of each release, 4.3 onward: the whole set at each change.
_CDF_4_3 = (("hvm_guest", 0), ("hap", 1), ("s3_integrity", 2), ("oos_off", 3))
_CDF_4_4 = (*_CDF_4_3, ("pvh_guest", 4))
_CDF_4_7 = (*_CDF_4_4, ("xs_domain", 5))
_CDF_4_9 = (*_CDF_4_3, ("xs_domain", 4))
_CDF_4_13 = (("hvm", 0), ("hap", 1), ("s3_integrity", 2), ("oos_off", 3), ("xs_domain", 4), ("iommu", 5))
_CDF_4_15 = (*_CDF_4_13, ("nested_virt", 6))
_CDF_4_16 = (*_CDF_4_15, ("vpmu", 7))
_CDF_4_21 = (*_CDF_4_16, ("trap_unmapped_accesses", 8))


@dataclass(frozen=True, slots=True)
class Release:
    """One Xen release as a guest sees it. Every field below but the name is set by :data:`CHANGES`, which
    gives the commit of each value; the defaults are Xen 4.3.0's."""

    name: str  # "4.14.1"
    # --- event channel core (xen/common/event_channel.c, event_2l.c, sched.h) ------------------------------------
    evtchns_per_bucket: int = 128
    get_free_port_skips_busy: bool = False
    reset_leaves_fifo: str = "never"  # never | domid_self (the literal DOMID_SELF) | always
    reset_needs_pause: bool = False
    reset_preemptible: bool = False  # EVTCHNOP_reset_cont, -EBUSY, preemption every 64 ports
    reset_refuses_open_ports: bool = False  # -EAGAIN (FIFO kept) if ports are still open after the loop
    # --- soft reset (XEN_DOMCTL_soft_reset, domain_soft_reset, xl's on_soft_reset) ------------------------------------
    soft_reset: bool = False  # the domctl exists and xl soft-resets a domain that shut down with code 5
    soft_reset_drops_time_area: bool = False  # the vCPU time area registration is dropped too (else Xen keeps it)
    unusable_ports_inert: bool = False  # unmask a no-op, set_priority -EACCES on FREE/RESERVED/Xen ports
    twolevel_limit_follows_width: bool = True  # a 32-bit guest's 2-level limit is 1024 (else 4096, latched)
    virq_xenpmu_per_vcpu: bool = False  # VIRQ 13 per-vCPU (before: an unused, so global, number)
    virq_argo_per_domain: bool = False  # VIRQ 11 per-domain (before: global)
    global_virq_handler_only: bool = False  # only the handler domain (dom0) may bind a global VIRQ: -EBUSY
    status_refuses_xen_consumers: bool = False  # EVTCHNOP_status on a Xen-bound port: -EACCES
    compat_forwards_fifo_ops: bool = True  # hypercall 16 passes sub-ops 10-13 on (else 0-9 only)
    # --- FIFO (xen/common/event_fifo.c) -----------------------------------------------------------------------------
    expand_array_uninit_rc: int = -errno.ENOSYS
    fifo_no_control_block_sets_pending: bool = True
    # --- HVMOP_set_evtchn_upcall_vector (xen/arch/x86/hvm/hvm.c) ----------------------------------------------
    upcall_vector_checks_type_first: bool = False  # a PV caller gets -EINVAL before its argument is read
    upcall_vector_set_raises_upcall: bool = False  # setting the vector injects it once (a spurious upcall)
    # --- hypervisor CPUID leaves (xen/arch/x86/traps.c, later cpuid.c) ------------------------------------------
    cpuid_max_leaf: int = 2
    cpuid_leaf4_vcpu_id: bool = False
    cpuid_leaf4_domid: bool = False
    cpuid_leaf4_for_pv: bool = True  # a PV guest reads the HVM leaf's bits too (fixed later: zeros)
    cpuid_leaf4_upcall_vector: bool = False  # XEN_HVM_CPUID_UPCALL_VECTOR (bit 6)
    # --- hypfs (xen/common/hypfs.c) ---------------------------------------------------------------------------
    hypfs: bool = False
    hypfs_bad_path_rc: int = -errno.ENOENT  # an empty path or one not starting with '/'
    hypfs_bool_oversize_rc: int = -errno.ENOSPC  # a bool written with 2 bytes or more
    # --- domain creation (xen/common/domain.c, xen/arch/x86/domain.c) -----------------------------------------
    cdf_flags: tuple[tuple[str, int], ...] = _CDF_4_3
    hap_requires_hvm: bool = False  # hap without hvm: -EINVAL (before: silently ignored)
    grant_limit_caps: bool = True  # max_grant_frames <= 64, max_maptrack_frames <= 1024 (before 4.18)
    # --- xen_version (xen/common/kernel.c) --------------------------------------------------------------------
    xenver_build_id: bool = False  # XENVER_build_id (10) exists
    xenver_priv_strings: bool = False  # commandline reads "<denied>" and build_id is -EPERM but for the control domain
    xenfeat_vnode: bool = False  # XENFEAT_memory_op_vnode_supported (13) for every guest
    xenfeat_pirqs_need_emulation: bool = False  # XENFEAT_hvm_pirqs only with X86_EMU_USE_PIRQ (else every HVM guest)
    xenfeat_direct_mapped: bool = False  # XENFEAT_direct_mapped (17, PV) / not_direct_mapped (16, translated)
    xenfeat_dm_msix_all_writes: bool = False  # XENFEAT_dm_msix_all_writes (20)
    platform_parameters_pv_only: bool = False  # virt_start reads 0 for HVM and PVH (else Xen's start for all)
    build_id_varbuf: bool = False  # build_id answers through the varbuf code (len 0: -ENOBUFS, not -EINVAL)
    # --- vcpu_op (xen/common/domain.c, xen/arch/x86/domain.c) -----------------------------------------------
    vcpu_op_hvm_filter: bool = True  # HVM guests reach only ops 4-10 and 13; the rest -ENOSYS, before vcpuid
    vcpu_op_vcpuid_range_einval: bool = True  # a negative vcpuid or one >= MAX_VIRT_CPUS: -EINVAL before -ENOENT
    vcpu_info_offset_rc: int = -errno.EINVAL  # register_vcpu_info: an offset past 4096 - 64 (and misalignment)
    vcpu_info_align_check: bool = False  # register_vcpu_info refuses a misaligned offset (XSA-327)
    vcpu_down_last_shuts_down: bool = False  # VCPUOP_down of the last vCPU that is up powers the domain off
    vcpu_info_guest_area: bool = False  # register_vcpu_info through map_guest_area: the 4.18 order and codes
    # --- grant_table_op (xen/common/grant_table.c) ----------------------------------------------------------
    gnttab_cmd_junk_rc: int | None = None  # bits above the 12-bit command: None = no mask (the case misses)
    gnttab_cache_flush: bool = False  # GNTTABOP_cache_flush (12) exists on x86
    gnttab_per_domain_limits: bool = False  # a domain's own max_grant_frames (query_size, setup_table's order)
    gnttab_initial_frames: int = 4  # shared frames of a fresh table
    gnttab_host_max_frames: int = 32  # the host's default maximum (gnttab_max_frames=)
    gnttab_initial_version: int = 0  # a fresh table's version (0: fixed by the first setup_table)
    gnttab_max_version_opt: bool = False  # the boot option gnttab=max-ver:N exists (XSA-226)
    gnttab_grant_opts: bool = False  # the create struct's grant_opts: the domain's maximum version
    gnttab_v1_range_check: bool = False  # set_version(1) from v2: -ERANGE for a reserved frame above 32 bits
    gnttab_v1_range_transitive: bool = False  # ... and for a reserved transitive entry
    gnttab_status_frames_handle_check: bool = False  # get_status_frames: a bad frame_list is -EFAULT up front
    gnttab_maptrack_default: int = 256  # maptrack frames a domain gets by default (max_grant_frames x 8)
    xl_grant_frames_default: int = 32  # the grant-frame limit a VM created by this release's xl gets

    # --- derived ----------------------------------------------------------------------------------------------
    point: Version = field(init=False, repr=False, compare=False)  # (major, minor, point), parsed once
    version: tuple[int, int] = field(init=False, repr=False, compare=False)  # what the libxc header and CPUID say

    def __post_init__(self) -> None:
        point = _parse_point(self.name)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "version", point[:2])

    @property
    def line(self) -> str:
        return "{}.{}".format(*self.version)

    def implements(self, feature: AbiFeature) -> bool:
        return self.version >= feature.since

    def can_hide(self, feature: AbiFeature) -> bool:
        """Whether this release has a per-domain knob of its own that hides ``feature`` (decision 10)."""
        return bool(feature.xen_knob) and bool(getattr(self, feature.xen_knob))

    def gnttab_max_version_problem(self, value: object) -> str | None:
        """Why ``gnttab=max-ver:<value>`` cannot be this release's boot option, or None when it can (the host of
        :class:`~xenabi.hypervisor.Hypervisor` and the fleet inventory's ``gnttab_max_version`` column)."""
        if isinstance(value, bool) or value not in (1, 2):
            return f"gnttab=max-ver:{value!r}: the version is 1 or 2"
        if value != GNTTAB_MAX_VERSION_DEFAULT and not self.gnttab_max_version_opt:
            return f"gnttab=max-ver: Xen {self.name} has no such boot option (4.11, 4.8.5, 4.9.3 and 4.10.2 have it)"
        return None

    @property
    def features(self) -> frozenset[str]:
        """The registry features this release implements."""
        return frozenset(row.name for row in REGISTRY if self.implements(row))

    def applicable_features(self, guest_type: GuestType) -> frozenset[str]:
        return frozenset(row.name for row in REGISTRY if self.implements(row) and row.applies_to(guest_type))

    def virq_kind(self, virq: int) -> VirqClass:
        """How VIRQ ``virq`` binds on this release (``get_virq_type``): two numbers changed class."""
        if virq == VIRQ_XENPMU and not self.virq_xenpmu_per_vcpu:
            return VirqClass.GLOBAL  # an unused number until 4.6, and unused numbers are global
        if virq == VIRQ_ARGO and not self.virq_argo_per_domain:
            return VirqClass.GLOBAL  # VIRQ_XC_RESERVED, then VIRQ_ARGO (4.12), global until 4.21
        return VIRQS[virq].kind

    @property
    def cdf_bits(self) -> dict[str, int]:
        """Every create flag this release accepts, its own and (placed by :meth:`series_cdf_bits`) the series'."""
        return dict(self.cdf_flags)

    def series_cdf_bits(self) -> dict[str, int]:
        """Where the series' create flags go on this release (only the rows that have one: decision 10 gives later
        features the ``abi_features`` mask instead): each feature's own bit (the v5 series' 7 and 8)
        unless the release gave it to one of its real flags, else the lowest bits above every real flag. The
        collision is the review's scalability objection made concrete: Xen gave bit 7 to vpmu (4.16) and bit 8
        to trap_unmapped_accesses (4.21)."""
        taken = set(self.cdf_bits.values())
        placed: dict[str, int] = {}
        rows = [row for row in REGISTRY if self.implements(row) and row.cdf_bit is not None]
        for row in rows:
            if row.cdf_bit is not None and row.cdf_bit not in taken:
                placed[row.name] = row.cdf_bit
                taken.add(row.cdf_bit)
        free = max(taken | {-1}) + 1
        for row in rows:
            if row.name not in placed:
                placed[row.name] = free
                free += 1
        return placed


@dataclass(frozen=True, slots=True)
class Change:
    """One guest-visible difference: from release ``since`` (and the point releases in ``backports``), the
    field ``field`` is ``value``."""

    field: str
    value: Any
    since: str
    commit: str
    summary: str
    backports: tuple[str, ...] = ()

    def applies(self, point: Version) -> bool:
        line = point[:2]
        if line >= _parse_line(self.since):
            return True
        return any(point >= _parse_point(tag) and line == _parse_point(tag)[:2] for tag in self.backports)


_XSA_2020 = ("4.12.4", "4.13.2", "4.14.1")  # the XSA-338/342/343/344 batch reached these point releases

CHANGES: tuple[Change, ...] = (
    Change("twolevel_limit_follows_width", False, "4.4", "fbbd5009e6 evtchn: refactor low-level event channel port ops",
           "a 32-bit guest's 2-level port limit is latched at creation (4096), not 1024"),
    Change("reset_leaves_fifo", "domid_self", "4.5", "400b3bd642 evtchn: make EVTCHNOP_reset suitable for kexec",
           "EVTCHNOP_reset returns a FIFO domain to 2-level, if the guest names itself as DOMID_SELF"),
    Change("cpuid_max_leaf", 4, "4.5", "03d745c8bf x86: correctly report max number of hypervisor leaves",
           "hypervisor CPUID leaves up to 0x40000004 (the HVM leaf, with IOMMU_MAPPINGS set)"),
    Change("evtchns_per_bucket", 64, "4.6", "b58214a242 evtchn: pad struct evtchn to 64 bytes",
           "ports become valid 64 at a time (128 before): EVTCHNOP_status on port 64..127 of a new domain is -EINVAL"),
    Change("virq_xenpmu_per_vcpu", True, "4.6", "a8b551321e x86/VPMU: initialize PMU for PV(H) guests",
           "VIRQ 13 (XENPMU) is per-vCPU: bound on any vCPU, and bind_vcpu refuses it"),
    Change("cpuid_leaf4_vcpu_id", True, "4.6", "dd9b092266 x86/hvm: extend HVM cpuid leaf with vcpu id",
           "CPUID 0x40000004 sets VCPU_ID_PRESENT with the vCPU id in ebx"),
    Change("get_free_port_skips_busy", True, "4.7", "78e24c269b evtchn: don't reuse ports that are still \"busy\"",
           "a closed port whose FIFO event word is still LINKED is not handed out again", ("4.4.4", "4.5.3", "4.6.1")),
    Change("reset_leaves_fifo", "always", "4.7", "546d558a7a evtchn: make evtchn_reset() ready for soft reset",
           "EVTCHNOP_reset returns a FIFO domain to 2-level whoever names it"),
    Change("reset_needs_pause", True, "4.7", "546d558a7a evtchn: make evtchn_reset() ready for soft reset",
           "EVTCHNOP_reset of another domain needs it paused by its controller (-EINVAL)"),
    Change("soft_reset", True, "4.7", "1a043f9dc7 introduce XEN_DOMCTL_soft_reset",
           "XEN_DOMCTL_soft_reset: a domain that shut down with SHUTDOWN_soft_reset (5) is reset in place (event "
           "channels, runstate areas, vcpu_info) and resumed for a kexec'd kernel; xl does it by default "
           "(on_soft_reset); before, xl destroys the domain (\"Unknown shutdown reason code 5\")"),
    Change("soft_reset_drops_time_area", True, "4.17",
           "b80d4f8d2e x86: also zap secondary time area handles during soft reset",
           "a soft reset drops the vCPU time areas too (before, Xen kept writing the first kernel's)",
           ("4.15.4", "4.16.3")),
    Change("upcall_vector_set_raises_upcall", True, "4.11",
           "7b5b8ca7df x86/upcall: inject a spurious event after setting upcall vector",
           "setting a vCPU's upcall vector injects it once, whether or not an event is pending",
           ("4.7.5", "4.8.3", "4.9.2", "4.10.1")),
    Change("cpuid_leaf4_for_pv", False, "4.8",
           "0f43883193 x86/traps: Don't call hvm_hypervisor_cpuid_leaf() for PV guests",
           "a PV guest reads CPUID 0x40000004 as zeros", ("4.6.5", "4.7.2")),
    Change("expand_array_uninit_rc", -errno.EOPNOTSUPP, "4.8", "a66765eb06 replace bogus -ENOSYS uses",
           "EVTCHNOP_expand_array before init_control is -EOPNOTSUPP (was -ENOSYS)"),
    Change("compat_forwards_fifo_ops", False, "4.10",
           "ab48596654 x86/evtchn: Restrict the ops usable in do_event_channel_op_compat()",
           "hypercall 16 forwards sub-ops 0-9 only: reset, init_control, expand_array and set_priority are -ENOSYS"),
    Change("upcall_vector_checks_type_first", True, "4.10",
           "5efaeaa823 x86/hvm: Drop more remains of the PVHv1 implementation",
           "HVMOP_set_evtchn_upcall_vector from a PV guest is -EINVAL before its argument is read (was -EFAULT "
           "for an unreadable one)"),
    Change("cpuid_max_leaf", 5, "4.10", "c3d74acf55 x86: add new Xen cpuid node for max address width info",
           "hypervisor CPUID leaves up to 0x40000005 (the PV leaf with the machine address width)"),
    Change("cpuid_leaf4_domid", True, "4.11", "021e1b7c7a xen/x86: report domain id on cpuid",
           "CPUID 0x40000004 sets DOMID_PRESENT with the domid in ecx", ("4.10.1",)),
    Change("hap_requires_hvm", True, "4.13", "d0c0ba7d3d x86/hvm/domain: remove the 'hap_enabled' flag",
           "XEN_DOMCTL_CDF_hap without hvm is -EINVAL (it was silently ignored)"),
    Change("twolevel_limit_follows_width", True, "4.15",
           "62bcdc4edb evtchn/x86: enforce correct upper limit for 32-bit guests (XSA-342)",
           "a 32-bit guest's 2-level port limit is 1024 again", _XSA_2020),
    Change("reset_preemptible", True, "4.15", "2785b2a9e0 evtchn: arrange for preemption in evtchn_reset() (XSA-344)",
           "EVTCHNOP_reset is preemptible and continues as EVTCHNOP_reset_cont (14, was -ENOSYS); a reset while "
           "one is in progress, or reset_cont without one, is -EBUSY", _XSA_2020),
    Change("reset_refuses_open_ports", True, "4.15",
           "8d385b247b evtchn: evtchn_reset() shouldn't succeed with still-open ports (XSA-343)",
           "EVTCHNOP_reset that finds ports still open at the end is -EAGAIN and keeps FIFO", _XSA_2020),
    Change("unusable_ports_inert", True, "4.15", "e045199c7c evtchn: address races with evtchn_reset() (XSA-343)",
           "EVTCHNOP_unmask of a free, reserved or Xen-bound port does nothing; set_priority on one is -EACCES",
           _XSA_2020),
    Change("status_refuses_xen_consumers", True, "4.15",
           "f60ab5337f evtchn: refuse EVTCHNOP_status for Xen-bound event channels",
           "EVTCHNOP_status of a Xen-bound port is -EACCES"),
    Change("status_refuses_xen_consumers", False, "4.19",
           "2d8d7481ca Revert \"evtchn: refuse EVTCHNOP_status for Xen-bound event channels\"",
           "EVTCHNOP_status of a Xen-bound port answers again"),
    Change("hypfs", True, "4.14", "5b5ccafb0c xen: add basic hypervisor filesystem support",
           "hypercall 42 (hypfs_op) exists, privileged domains only"),
    Change("hypfs_bool_oversize_rc", -errno.EDOM, "4.15", "b4e41b1750 xen/hypfs: fix writing of custom parameter",
           "a bool hypfs leaf written with 2 bytes or more is -EDOM (was -ENOSPC)", ("4.14.1",)),
    Change("hypfs_bad_path_rc", -errno.EINVAL, "4.15",
           "f1b920bb06 xen/hypfs: pass real failure reason up from hypfs_get_entry()",
           "a hypfs path that is empty or does not start with '/' is -EINVAL (was -ENOENT)"),
    Change("fifo_no_control_block_sets_pending", False, "4.17",
           "8aa0e9d2d1 evtchn/fifo: Don't set PENDING bit if guest misbehaves",
           "an event for a vCPU without a FIFO control block is dropped without setting PENDING"),
    Change("cpuid_leaf4_upcall_vector", True, "4.17",
           "e2d2b9fd7a x86/hvm: widen condition for is_hvm_pv_evtchn_domain() and report fix in CPUID",
           "CPUID 0x40000004 sets XEN_HVM_CPUID_UPCALL_VECTOR (bit 6) for HVM and PVH guests"),
    Change("grant_limit_caps", False, "4.18", "b2ea81d2b9 xen/grants: repurpose command line max options",
           "max_grant_frames above 64 and max_maptrack_frames above 1024 are accepted at creation"),
    Change("xenfeat_vnode", True, "4.6", "319442762f make two memory hypercalls vNUMA-aware",
           "XENVER_get_features sets XENFEAT_memory_op_vnode_supported (13) for every guest"),
    Change("xenver_build_id", True, "4.7", "460d24188d XENVER_build_id/libxc: Provide ld-embedded build-id",
           "xen_version sub-op 10 (build_id) exists (was -ENOSYS)"),
    Change("xenver_priv_strings", True, "4.7", "a2fc8d514d xsm/xen_version: Add XSM for most of xen_version hypercall",
           "XENVER_commandline reads \"<denied>\" (9 bytes) for every domain but the control domain"),
    Change("xenfeat_pirqs_need_emulation", True, "4.9", "b96b500048 x86: remove XENFEAT_hvm_pirqs for PVHv2 guests",
           "XENFEAT_hvm_pirqs (10) only for a domain with PIRQ emulation (X86_EMU_USE_PIRQ): never for PVH"),
    Change("xenfeat_direct_mapped", True, "4.16",
           "d66bf122c0 xen: introduce XENFEAT_direct_mapped and XENFEAT_not_direct_mapped",
           "XENVER_get_features sets direct_mapped (17) for PV, not_direct_mapped (16) for HVM and PVH"),
    Change("platform_parameters_pv_only", True, "4.18",
           "273bde319f xen/version: Drop bogus return values for XENVER_platform_parameters",
           "XENVER_platform_parameters reads virt_start 0 for HVM and PVH guests"),
    Change("xenfeat_dm_msix_all_writes", True, "4.19",
           "64b21662b1 x86/msi: passthrough all MSI-X vector ctrl writes to device model",
           "XENVER_get_features sets dm_msix_all_writes (20) for every guest"),
    Change("build_id_varbuf", True, "4.20", "8eed14bf9d xen/version: Fold build_id handling into xenver_varbuf_op()",
           "XENVER_build_id: a null handle is asked first, and a len too short (0 included) is -ENOBUFS"),
    # vcpu_op
    Change("vcpu_op_vcpuid_range_einval", False, "4.6",
           "1d4290342f hypercall: update vcpu_op to take an unsigned vcpuid",
           "vcpu_op: a negative or huge vcpuid is -ENOENT like any vcpuid naming no vCPU (was -EINVAL)"),
    Change("vcpu_op_hvm_filter", False, "4.7", "192df6f912 x86: allow HVM guests to use hypercalls to bring up vCPUs",
           "vcpu_op: HVM guests reach every sub-op (before: only 4-10 and 13, the rest -ENOSYS before the vcpuid)"),
    Change("vcpu_down_last_shuts_down", True, "4.11", "d3b230fc46 shut down domain when last vCPU goes down",
           "VCPUOP_down of the last vCPU that is up shuts the domain down (poweroff) instead"),
    Change("vcpu_info_align_check", True, "4.14",
           "3fdc211b01 xen: Check the alignment of the offset pased via VCPUOP_register_vcpu_info",
           "register_vcpu_info refuses an offset that is not 8-aligned (4 for 32-bit guests): -EINVAL",
           ("4.12.4", "4.13.2")),
    Change("vcpu_info_offset_rc", -errno.ENXIO, "4.16", "7ee7a3749b common: map_vcpu_info() cosmetics",
           "register_vcpu_info: an offset past 4096 - 64 or misaligned is -ENXIO (was -EINVAL)"),
    Change("vcpu_info_guest_area", True, "4.18", "295514ff75 common: convert vCPU info area registration",
           "register_vcpu_info: offset >= 4096 -EINVAL, re-registering -EBUSY, crossing a page or misaligned -ENXIO, "
           "another vCPU that is up allowed"),
    # grant_table_op
    Change("gnttab_cmd_junk_rc", -errno.ENOSYS, "4.5", "18e8d22fe7 introduce GNTTABOP_cache_flush",
           "grant_table_op masks the command to 12 bits; junk above (but for cache_flush) is -ENOSYS"),
    Change("gnttab_cache_flush", True, "4.5", "18e8d22fe7 introduce GNTTABOP_cache_flush",
           "GNTTABOP_cache_flush (12) exists (PV guests; the HVM allow-list never had it)"),
    Change("gnttab_v1_range_check", True, "4.6",
           "3459050e04 gnttab: don't silently truncate frame numbers in gnttab_set_version()",
           "set_version(1) from v2 is -ERANGE if a reserved entry grants a frame above 32 bits"),
    Change("gnttab_cmd_junk_rc", -errno.EINVAL, "4.8", "a66765eb06 replace bogus -ENOSYS uses",
           "grant_table_op: junk above the 12-bit command is -EINVAL (PV; HVM's allow-list still says -ENOSYS)"),
    Change("gnttab_per_domain_limits", True, "4.10", "18b1be5e32 gnttab: make resource limits per domain",
           "query_size reports the domain's own maximum; setup_table checks it last (after domain and XSM)"),
    Change("gnttab_initial_frames", 1, "4.10", "18b1be5e32 gnttab: make resource limits per domain",
           "a fresh grant table has 1 shared frame (was 4)"),
    Change("gnttab_host_max_frames", 64, "4.10", "18b1be5e32 gnttab: make resource limits per domain",
           "the default maximum is 64 grant frames (was 32)"),
    Change("gnttab_v1_range_transitive", True, "4.10", "ad48fb963d gnttab: fix transitive grant handling",
           "set_version(1) from v2 is -ERANGE if a reserved entry is transitive"),
    Change("gnttab_max_version_opt", True, "4.11", "dc96c65ed6 common/gnttab: Introduce command line feature controls",
           "the boot option gnttab=max-ver:1 makes set_version(2) -ENOSYS for every domain (XSA-226)",
           ("4.8.5", "4.9.3", "4.10.2")),
    Change("gnttab_initial_version", 1, "4.12",
           "1237659523 common/gnttab: Explicitly default to gnttab v1 during domain creation",
           "get_version answers 1 for a fresh domain (was 0 until its first setup_table or set_version)"),
    Change("gnttab_grant_opts", True, "4.16", "7379f9e10a gnttab: allow setting max version per-domain",
           "the create struct's grant_opts sets the domain's maximum grant version; 0 or above the host's: -EINVAL"),
    Change("gnttab_maptrack_default", 1024, "4.5",
           "7157012293 introduce gnttab_max_frames and gnttab_max_maptrack_frames command line options",
           "a domain's default maptrack limit is 1024 frames (was max_grant_frames x 8, 256)"),
    Change("xl_grant_frames_default", 64, "4.13",
           "7a0e35f823 Rationalize max_grant_frames and max_maptrack_frames handling",
           "xl passes -1 (the host's 64) when xl.cfg sets no max_grant_frames (libxl's default was 32)"),
    Change("gnttab_status_frames_handle_check", True, "4.16",
           "0c229e6c9f gnttab: check handle early in gnttab_get_status_frames()",
           "get_status_frames: a frame_list outside the guest is -EFAULT (was status GNTST_bad_virt_addr)"),
    Change("gnttab_cache_flush", False, "4.21", "5642a6055c x86/gnttab: do not implement GNTTABOP_cache_flush",
           "GNTTABOP_cache_flush is gone on x86: -ENOSYS"),
    Change("virq_argo_per_domain", True, "4.21", "bb1accab69 xen/argo: make VIRQ_ARGO per-domain",
           "VIRQ 11 (ARGO) is per-domain: bind_vcpu may move it"),
    Change("global_virq_handler_only", True, "4.21",
           "eba922abdb xen/events: don't allow binding a global virq from any domain",
           "binding a global VIRQ is -EBUSY for every domain but its handler (dom0)"),
    # create flags: the whole set at each change
    Change("cdf_flags", _CDF_4_4, "4.4", "8271d6522c pvh: introduce PVH guest type", "create flag pvh_guest (bit 4)"),
    Change("cdf_flags", _CDF_4_7, "4.7", "5513bd0b46 add xenstore domain flag to hypervisor",
           "create flag xs_domain (bit 5)"),
    Change("cdf_flags", _CDF_4_9, "4.9", "33e5c32559 x86: remove PVHv1 code",
           "create flag pvh_guest gone; xs_domain moves to bit 4"),
    Change("cdf_flags", _CDF_4_13, "4.13", "c45f592923 domain: introduce XEN_DOMCTL_CDF_iommu flag",
           "create flag iommu (bit 5); hvm_guest renamed hvm (4a12cba289)"),
    Change("cdf_flags", _CDF_4_15, "4.15", "dbe399b174 xen/domctl: Introduce and use XEN_DOMCTL_CDF_nested_virt",
           "create flag nested_virt (bit 6)"),
    Change("cdf_flags", _CDF_4_16, "4.16", "dbb948110a xen: Expose the PMU to the guests",
           "create flag vpmu (bit 7), the bit the series gave evtchn_fifo"),
    Change("cdf_flags", _CDF_4_21, "4.21",
           "980aff4e8f xen/arm: Add way to disable traps on accesses to unmapped addresses",
           "create flag trap_unmapped_accesses (bit 8), the bit the series gave evtchn_upcall"),
)  # fmt: skip
"""Every guest-visible difference between the releases, oldest first; each sets one :class:`Release` field."""

NOT_MODELLED: tuple[str, ...] = (
    "PVHv1 guests (4.4-4.8, create flag pvh_guest): 'pvh' means an HVM container without devices in every release",
    "XSA-107 (4.4.0, 4.4.1) and XSA-188 (4.4.2-4.4.4): guest-triggered host crashes in the FIFO code",
    "XSA-338 (e59ce972d1; 4.15.0, 4.14.1, 4.13.2, 4.12.4): before it, ports above the 2-level limit were invalid "
    "after a FIFO domain was reset to 2-level",
    "f5d0279839 (4.18.0, 4.17.1, 4.16.3): the spurious upcall is not raised while the vLAPIC is disabled (the "
    "model has no vLAPIC enable state)",
    "4.12.0-4.12.1's unsigned grant limits (-1 is refused there; 54e3018708 made them signed in 4.12.2)",
    "CONFIG_EVTCHN_FIFO=n builds (4.21+), the PV shim, Arm",
    "4.4.0's 16-bit port field (798074a404, 4.4.1 and 4.5.0 as 8f7f6ab879, lifted the 64k-port limit): 4.4.0 "
    "is modelled with 4.4.1's limit",
    "d4bfa0c78f (4.15.0): SCHEDOP_poll refuses unusable ports (the model has no SCHEDOP_poll)",
    "emulation-flag rules for HVM creation (85c17cbb25, 4.8.0: LAPIC-only; 72cad62abb, 4.19.0: X86_EMU_USE_PIRQ "
    "optional): the model has no emulation flags",
    "e2d2b9fd7a (4.17.0): which HVM domains count as using PV event channels for pirqs (physdev ops are not "
    "modelled, nor is what HVM_PARAM_CALLBACK_IRQ means for pirqs)",
    "fe2e079f64 (4.6.0; 4.3.4, 4.4.2, 4.5.1): before it the bytes after a xen_version string's NUL were stale Xen "
    "stack contents; the model writes zeros",
    "XENFEAT_supervisor_mode_kernel (3; 4.3-4.5 builds with supervisor_mode_kernel) and pae_pgdir_above_4gb (4; "
    "32-bit PV guests with the PAE VM assist): the model has neither that build option nor VM assists",
    "xen_version under a non-default XSM policy (FLASK), and debug builds (from 273bde319f, 4.18, a 64-bit PV "
    "guest's platform_parameters also reads 0 there)",
)


def _parse_line(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _parse_point(text: str) -> Version:
    major, minor, point = text.split(".")
    return int(major), int(minor), int(point)


RELEASE_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def known_range() -> str:
    first, last = next(iter(LINES)), list(LINES)[-1]
    return f'Xen {first} to {last}, as a line ("4.14": its newest point release) or a point release ("4.14.1")'


def canonical(name: str) -> str:
    """The exact point release ``name`` means (``"4.14"`` -> ``"4.14.6"``); PolicyError if there is none."""
    match = RELEASE_RE.fullmatch(str(name).strip())
    if match is None:
        raise PolicyError(f"{name!r} is not a Xen release; known: {known_range()}", name=str(name))
    line = f"{int(match[1])}.{int(match[2])}"
    if line not in LINES:
        raise PolicyError(f"Xen {line} is not modelled; known: {known_range()}", name=str(name))
    if match[3] is None:
        return f"{line}.{LINES[line]}"
    point = int(match[3])
    exact = f"{line}.{point}"
    if point > LINES[line] or exact in NEVER_TAGGED:
        raise PolicyError(
            f"Xen {exact} was never released; the {line} line has {line}.0 to {line}.{LINES[line]}"
            + (" (there was no 4.6.2)" if line == "4.6" else "")
            + f"; known: {known_range()}",
            name=str(name),
        )
    return exact


def normal_name(name: str) -> str:
    """``name`` as written in inventories: a line stays a line ("4.14"), a point release stays exact ("4.14.1");
    PolicyError for anything else."""
    exact = canonical(name)
    return exact if str(name).strip().count(".") == 2 else exact.rsplit(".", 1)[0]


@cache
def _row(exact: str) -> Release:
    point = _parse_point(exact)
    values: dict[str, Any] = {}
    for change in CHANGES:
        if change.applies(point):
            values[change.field] = change.value
    return replace(Release(exact), **values)


def get_release(name: str | Release) -> Release:
    """The release ``name`` names (a line or a point release); PolicyError naming the known range otherwise."""
    if isinstance(name, Release):
        return name
    return _by_name(str(name))


@cache
def _by_name(name: str) -> Release:
    """Names are few and looked up often (admission per VM and host class): each is parsed once."""
    return _row(canonical(name))


def all_point_releases() -> list[str]:
    """Every tagged release, oldest first."""
    return [
        f"{line}.{point}"
        for line, newest in LINES.items()
        for point in range(newest + 1)
        if f"{line}.{point}" not in NEVER_TAGGED
    ]


def table_releases() -> list[str]:
    """The rows worth listing: every x.y.0, every point release where something changed, and each line's newest."""
    names = []
    previous: Release | None = None
    for exact in all_point_releases():
        row = _row(exact)
        newest = exact == f"{row.line}.{LINES[row.line]}"
        first = exact.endswith(".0")
        if first or newest or previous is None or behaviour(row) != behaviour(previous):
            names.append(exact)
        previous = row
    return names


BEHAVIOUR_FIELDS = tuple(f.name for f in fields(Release) if f.init and f.name != "name")


def behaviour(release: Release) -> dict[str, Any]:
    """The release's fields (everything but its name)."""
    return {name: getattr(release, name) for name in BEHAVIOUR_FIELDS}


def changes_between(a: Release, b: Release) -> list[Change]:
    """The table entries whose field differs between ``a`` and ``b``: for each such field, the change that gave the
    newer of the two its value, or, when an older point release got a fix as a backport that a newer x.y.0 lacks
    (4.5.3 has 78e24c269b, 4.6.0 does not), the change that gave the older one its value."""
    older, newer = (a, b) if a.point <= b.point else (b, a)
    out: list[Change] = []
    for name in BEHAVIOUR_FIELDS:
        if getattr(older, name) == getattr(newer, name):
            continue
        mine = [c for c in CHANGES if c.field == name]
        deciding = [c for c in mine if c.applies(newer.point) and not c.applies(older.point)]
        deciding = deciding or [c for c in mine if c.applies(older.point) and not c.applies(newer.point)]
        out.extend(deciding[-1:])
    return out


RELEASES: dict[str, Release] = {line: get_release(line) for line in LINES}
"""Each line's newest point release, oldest line first."""
