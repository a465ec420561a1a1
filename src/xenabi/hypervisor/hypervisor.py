"""``Hypervisor``: one Xen host: a release, ``abi_control``, dom0 and the domains it creates, and hypercall entry.

Domain creation validates like ``sanitise_domain_config`` and ``arch_sanitise_domain_config`` (``DESIGN.md``
decision 4, ``spec/abi-control.md`` §1.2-§1.3), with the feature flags taken from the registry: a feature flag is
known only to a host with ``abi_control`` whose release implements the feature, and must apply to the guest
type. A domain's policy is fixed at creation; the hypercall entry hides, before dispatch, every operation of a
feature the domain does not have (decision 2), which answers -ENOSYS and touches nothing.

On a host without ``abi_control`` every domain is exposed to every feature the release implements; its policy
lists those that apply to its guest type, less what Xen's own knobs hide (``grant_opts``' maximum version 1, 4.16+).
On a host with it, features come from the series' create flags and from the create struct's ``abi_features`` mask
(registry bits, every feature; decision 10). A host's boot option ``gnttab=max-ver:1`` (``gnttab_max_version``,
4.11 and XSA-226's backports) hides grant v2 from every domain, so asking for it is -EINVAL there.

Each domain gets a grant table at creation (:mod:`xenabi.hypervisor.gnttab`): its limits are the create struct's
from 4.10 and the host's before. vCPU runstates (:mod:`xenabi.hypervisor.vcpu`) follow pause, unpause, shutdown
and :meth:`Hypervisor.vcpu_up`, timed by a deterministic model clock that moves only by
:meth:`Hypervisor.advance_clock`.

A host has memory (``memory_mb``, by default the machine's own): domains are created only while their RAM fits
beside every other domain's, and a domain that does not fit is refused with -ENOMEM before anything is allocated
(``XEN_DOMCTL_createdomain`` then ``populate_physmap`` fail the same way in Xen). Guest RAM is lazily backed (see
:mod:`xenabi.hypervisor.domain`), so a domain costs the machine only what its guest has touched.

Only a domain whose vCPUs have run can issue hypercalls: a domain that was created and never unpaused has no guest
code running, so a hypercall "from" it raises :class:`~xenabi.errors.GuestNotRunning` (a statement about the
caller of the model, not an answer from Xen). This is what makes hypfs' "writable until the domain first runs"
mean what it says: nothing a guest could set (a FIFO control block, an upcall vector) exists before then.

Model constants (x86): a domU has 48 static IRQs + 32 extra pirqs, dom0 48 + 256; dom0 is a PV domain with an
unlimited event channel port range.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import replace
from types import MethodType

from xenabi.abi import errno
from xenabi.abi.domctl import (
    HVM_MAX_VCPUS,
    PV_MAX_VCPUS,
    CreateDomain,
    GuestType,
    XEN_DOMCTL_CDF_hap,
    XEN_DOMCTL_CDF_hvm,
    emulation_flags_ok,
)
from xenabi.abi.errno import errno_name
from xenabi.abi.features import REGISTRY
from xenabi.abi.gnttab import GNTTAB_MAX_VERSION_DEFAULT, XEN_DOMCTL_GRANT_version_mask
from xenabi.abi.sched import shutdown_reason_name
from xenabi.abi.vcpu import Runstate
from xenabi.abi.version import DOMAIN_HANDLE_LEN
from xenabi.abi.xen import DOMID_FIRST_RESERVED, DOMID_SELF, NR_VIRQS
from xenabi.errors import GuestNotRunning, NotModelled, XenError
from xenabi.hypervisor import evtchn, shutdown
from xenabi.hypervisor.cpuid import hypervisor_leaf
from xenabi.hypervisor.dispatch import DISPATCH
from xenabi.hypervisor.domain import MAX_PAUSE_COUNT, UNBOUND, XEN_PAGES, Chan, Domain, Gating
from xenabi.hypervisor.evtchn_fifo import Fifo, fifo_destroy
from xenabi.hypervisor.gnttab import GrantTable, new_grant_table
from xenabi.hypervisor.hypfs import Hypfs
from xenabi.hypervisor.trace import HypercallTrace, traced_hypercall, traced_hypercall_raw
from xenabi.hypervisor.vcpu import set_runstate
from xenabi.policy import AbiPolicy, Release, get_release

NR_STATIC_IRQS = 48
EXTRA_DOMU_PIRQS = 32
EXTRA_DOM0_PIRQS = 256
INITIAL_NR_GRANT_FRAMES = 1
OPT_MAX_GRANT_FRAMES = 64
OPT_MAX_MAPTRACK_FRAMES = 1024
MIN_MEMORY_MB = 1
DOM0_MEMORY_MB = 16

_ENOSYS, _EFAULT, _ESRCH = -errno.ENOSYS, -errno.EFAULT, -errno.ESRCH
SHUTDOWN_REASONS = frozenset(shutdown_reason_name(code) for code in range(256))  # what a shutdown code byte reads as
_BYTES_LIKE = (bytes, bytearray, memoryview)


def machine_memory_mb() -> int:
    """The memory of the machine the model runs on, in MiB: a model host's default size."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError, AttributeError):  # not a POSIX system with these names
        return 1 << 20


class Hypervisor:
    """A Xen host. See ``DESIGN.md`` "Public API" for the contract."""

    def __init__(
        self,
        release: str | Release = "4.14",
        abi_control: bool = True,
        *,
        dom0_memory_mb: int = DOM0_MEMORY_MB,
        dom0_max_vcpus: int = 1,
        memory_mb: int | None = None,
        cmdline: str = "",
        gnttab_max_version: int = GNTTAB_MAX_VERSION_DEFAULT,
        trace: bool | HypercallTrace = False,
    ) -> None:
        """``trace``: record every hypercall from boot (True, or the :class:`HypercallTrace` to record into; see
        :meth:`start_trace`), as ``DESIGN.md``'s ``Hypervisor(release, trace=True); hv.trace`` reads."""
        self.release = get_release(release)
        self.abi_control = abi_control
        self.cmdline: str = cmdline  # Xen's boot command line, as XENVER_commandline reads it
        problem = self.release.gnttab_max_version_problem(gnttab_max_version)
        if problem:
            raise XenError(errno.EINVAL, problem, field="gnttab_max_version")
        # The boot option gnttab=max-ver:N (XSA-226): the highest grant version any domain of this host may use.
        self.gnttab_max_version = gnttab_max_version
        if memory_mb is None:
            memory_mb = machine_memory_mb()
        if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < dom0_memory_mb:
            reason = f"host memory {memory_mb!r} MiB cannot hold dom0's {dom0_memory_mb} MiB"
            raise XenError(errno.EINVAL, reason, field="memory_mb")
        self.memory_mb = memory_mb
        self.fifo_ops = Fifo(self.release.fifo_no_control_block_sets_pending)
        self.domains: dict[int, Domain] = {}
        # The domains whose vCPUs have run, i.e. those that can issue hypercalls (the dispatch looks callers up
        # here, so a never-run caller costs the hot path nothing).
        self._callers: dict[int, Domain] = {}
        self.trace: HypercallTrace | None = None  # a hypercall trace while one is recording (start_trace)
        # Decides whether a long-running hypercall is preempted at a preemption point; a hook may issue
        # hypercalls itself, standing for what runs before the continuation (evtchn reset, §3.11).
        self.preempt_check: Callable[[], bool] = lambda: False
        self._next_domid = 1
        self._clock_ns = 0
        self._xen_consumers: list[Callable[[int, int], None]] = []
        self._pirq_binders: dict[int, dict[int, bool]] = {}  # host IRQ -> {domid: will_share}
        self.hypfs = Hypfs(self)
        dom0 = self._build(0, self.dom0_config(dom0_max_vcpus), dom0_memory_mb, privileged=True)
        self.domains[0] = dom0
        self.unpause(0)  # Xen unpauses dom0 at the end of boot
        if trace is not False:
            self.start_trace(None if trace is True else trace)

    # --- configuration derived from the registry and the release table -------------------------------------
    @property
    def feature_cdf_bits(self) -> dict[str, int]:
        """Where this host puts each implemented feature's create flag: on a host with ABI control, the series'
        bit unless the release gave it to a real flag (``Release.series_cdf_bits``); none without control."""
        return self.release.series_cdf_bits() if self.abi_control else {}

    @property
    def boot_hidden(self) -> frozenset[str]:
        """The registry features this host's boot options hide from every domain (``AbiFeature.boot_option``:
        ``gnttab=max-ver:1`` hides grant v2)."""
        return REGISTRY.boot_hidden({"gnttab_max_version": self.gnttab_max_version})

    @property
    def features(self) -> frozenset[str]:
        """The registry features a domain of this host can have: what the release implements, less what the boot
        options hide."""
        return self.release.features - self.boot_hidden

    def knob_hidden(self, config: CreateDomain) -> frozenset[str]:
        """The features Xen's own per-domain knobs hide from a domain created with ``config`` (decision 10)."""
        return frozenset(row.name for row in REGISTRY
                         if self.release.can_hide(row) and XEN_KNOBS[row.xen_knob](self, config))  # fmt: skip

    def dom0_config(self, max_vcpus: int = 1) -> CreateDomain:
        """dom0 (PV) gets every implemented feature that applies to it, on a controlled host: the series' flags
        and the whole ``abi_features`` mask."""
        flags = mask = 0
        if self.abi_control:
            for name in self.release.applicable_features(GuestType.PV) & self.features:
                mask |= REGISTRY[name].mask_flag
        for name, bit in self.feature_cdf_bits.items():
            if REGISTRY[name].applies_to(GuestType.PV):
                flags |= 1 << bit
        return CreateDomain(flags=flags, max_vcpus=max_vcpus, max_evtchn_port=0xFFFFFFFF, emulation_flags=0,
                            abi_features=mask)  # fmt: skip

    def known_cdf_mask(self) -> int:
        """The create flags this host accepts: its release's own, plus, with ABI control, implemented features'."""
        mask = 0
        for bit in (*self.release.cdf_bits.values(), *self.feature_cdf_bits.values()):
            mask |= 1 << bit
        return mask

    def _features_of_flags(self, flags: int) -> frozenset[str]:
        return frozenset(name for name, bit in self.feature_cdf_bits.items() if flags >> bit & 1)

    def _features_of_mask(self, mask: int) -> frozenset[str]:
        """The features the create struct's ``abi_features`` mask names (decision 10): only a host with ABI control
        has the field, and every bit must name a feature its release implements (-EINVAL otherwise)."""
        if not isinstance(mask, int) or isinstance(mask, bool) or not 0 <= mask < 1 << 64:
            raise XenError(errno.EINVAL, f"abi_features {mask!r} is not a 64-bit mask", field="abi_features")
        if not mask:
            return frozenset()
        if not self.abi_control:
            raise XenError(errno.EINVAL, "abi_features: this host has no ABI control", field="abi_features")
        known = {REGISTRY[name].bit: name for name in self.release.features}
        unknown = [bit for bit in range(64) if mask >> bit & 1 and bit not in known]
        if unknown:
            raise XenError(errno.EINVAL, f"abi_features bit {unknown[0]} names no feature of Xen "
                           f"{self.release.name}", field="abi_features")  # fmt: skip
        asked = frozenset(name for bit, name in known.items() if mask >> bit & 1)
        for name in sorted(asked & self.boot_hidden):
            option, value = REGISTRY[name].boot_option or ("", 0)
            raise XenError(errno.EINVAL, f"abi_features: {name} is hidden from every domain by this host's boot "
                           f"options ({option}={value})", field="abi_features")  # fmt: skip
        return asked

    def _sanitise(self, config: CreateDomain) -> tuple[AbiPolicy, Gating]:
        """Validate ``config`` in Xen's order (``sanitise_domain_config`` then the x86 arch checks, as of the
        host's release); return the domain's policy and what the registry hides from it."""
        release = self.release
        unknown = config.flags & ~self.known_cdf_mask()
        if unknown:
            raise XenError(errno.EINVAL, self._unknown_flags_reason(unknown), field="flags")
        real = release.cdf_bits
        if config.max_vcpus < 1:
            raise XenError(errno.EINVAL, f"max_vcpus {config.max_vcpus} is below 1", field="max_vcpus")
        if release.hap_requires_hvm and config.flags & XEN_DOMCTL_CDF_hap and not config.flags & XEN_DOMCTL_CDF_hvm:
            raise XenError(errno.EINVAL, "hap requested without hvm", field="flags")
        refused_here = {
            "iommu": "this host has no IOMMU",
            "vpmu": "no x86 Xen makes a vPMU available to guests (vpmu_is_available is Arm's)",
            "trap_unmapped_accesses": "an Arm-only flag",
        }
        for name, reason in refused_here.items():
            if name in real and config.flags >> real[name] & 1:
                raise XenError(errno.EINVAL, f"XEN_DOMCTL_CDF_{name}: {reason}", field="flags")
        if "pvh_guest" in real and config.flags >> real["pvh_guest"] & 1:
            raise NotModelled("PVHv1 guests (XEN_DOMCTL_CDF_pvh_guest, Xen 4.4-4.8) are not modelled; PVH is PVHv2")
        limit = HVM_MAX_VCPUS if config.is_hvm else PV_MAX_VCPUS
        if config.max_vcpus > limit:
            raise XenError(errno.EINVAL, f"max_vcpus {config.max_vcpus} above {limit}", field="max_vcpus")
        if config.max_vcpus > HVM_MAX_VCPUS:
            raise NotModelled(f"PV domains with more than {HVM_MAX_VCPUS} vCPUs (Xen allows {PV_MAX_VCPUS})")
        if not isinstance(config.handle, bytes) or len(config.handle) != DOMAIN_HANDLE_LEN:
            raise XenError(errno.EINVAL, f"handle must be {DOMAIN_HANDLE_LEN} bytes (xen_domain_handle_t)",
                           field="handle")  # fmt: skip
        if "nested_virt" in real and config.flags >> real["nested_virt"] & 1 and not config.flags & XEN_DOMCTL_CDF_hap:
            raise XenError(errno.EINVAL, "nested_virt needs hap", field="flags")
        guest_type = config.guest_type
        features = self._features_of_flags(config.flags) | self._features_of_mask(config.abi_features)
        for name in sorted(features, key=lambda name: REGISTRY[name].bit):
            if not REGISTRY[name].applies_to(guest_type):
                raise XenError(errno.EINVAL, f"{name} does not apply to {guest_type.value} guests", field="flags")
        if not emulation_flags_ok(config.is_hvm, config.effective_emulation_flags):
            raise XenError(
                errno.EOPNOTSUPP,
                f"emulation flags {config.effective_emulation_flags:#x} not allowed for this guest type",
                field="emulation_flags",
            )
        self._check_grant_opts(config)
        grant = config.max_grant_frames
        if grant >= 0 and grant < INITIAL_NR_GRANT_FRAMES:
            raise XenError(errno.EINVAL, f"max_grant_frames {grant} is below 1", field="max_grant_frames")
        if release.grant_limit_caps:
            if grant > OPT_MAX_GRANT_FRAMES:
                raise XenError(errno.EINVAL, f"max_grant_frames {grant} above 64", field="max_grant_frames")
            if config.max_maptrack_frames > OPT_MAX_MAPTRACK_FRAMES:
                raise XenError(errno.EINVAL, "max_maptrack_frames above 1024", field="max_maptrack_frames")
        knob_hidden = self.knob_hidden(config)
        if self.abi_control:
            for name in sorted(features & knob_hidden):
                raise XenError(errno.EINVAL, f"abi_features asks for {name}, which grant_opts hides",
                               field="abi_features")  # fmt: skip
            gating = gating_for(features)
        else:
            features = release.applicable_features(guest_type) - self.boot_hidden - knob_hidden
            gating = gating_for(release.features - self.boot_hidden - knob_hidden)
        policy = AbiPolicy(
            features,
            max_evtchn_port=config.max_evtchn_port,
            max_grant_frames=config.max_grant_frames,
            max_maptrack_frames=config.max_maptrack_frames,
        )
        return policy, gating

    @property
    def gnttab_host_max_frames(self) -> int:
        """The host's grant-frame maximum (the release's default; Xen's gnttab_max_frames= is not modelled)."""
        return self.release.gnttab_host_max_frames

    def _check_grant_opts(self, config: CreateDomain) -> None:
        """``grant_opts`` (4.16): only bits 0-3 (the maximum version), which must be 1 or 2 and at most the host's
        (``gnttab=max-ver``). None stands for what libxl passes when xl.cfg says nothing: the host's maximum."""
        opts = config.grant_opts
        if opts is None:
            return
        if not self.release.gnttab_grant_opts:
            raise XenError(errno.EINVAL, f"grant_opts: Xen {self.release.name} has no such field (4.16+)",
                           field="grant_opts")  # fmt: skip
        if not isinstance(opts, int) or isinstance(opts, bool) or opts & ~XEN_DOMCTL_GRANT_version_mask:
            raise XenError(errno.EINVAL, f"grant_opts {opts!r}: unknown grant options", field="grant_opts")
        version = opts & XEN_DOMCTL_GRANT_version_mask
        if not 1 <= version <= self.gnttab_max_version:
            raise XenError(errno.EINVAL, f"grant_opts: maximum grant version {version} (this host allows 1 to "
                           f"{self.gnttab_max_version})", field="grant_opts")  # fmt: skip

    def _grant_table(self, config: CreateDomain) -> GrantTable:
        release = self.release
        max_frames, max_maptrack = self.gnttab_host_max_frames, release.gnttab_maptrack_default
        if release.gnttab_per_domain_limits:  # before 4.10 the limits are the host's, whatever the toolstack asks
            if config.max_grant_frames >= 0:
                max_frames = config.max_grant_frames
            if config.max_maptrack_frames >= 0:
                max_maptrack = config.max_maptrack_frames
        max_version = 2
        if release.gnttab_grant_opts:
            opts = config.grant_opts
            max_version = self.gnttab_max_version if opts is None else opts & XEN_DOMCTL_GRANT_version_mask
        elif release.gnttab_max_version_opt:
            max_version = self.gnttab_max_version
        return new_grant_table(self, max_frames, max_version, max_maptrack)

    def set_domain_features(self, d: Domain, features: frozenset[str]) -> None:
        """Give a domain that has not yet run a new feature set, as its create flags would have (the hypfs
        writer's effect). Only on a host with ABI control; the features must be known here and apply."""
        if d.creation_finished:
            raise XenError(errno.EBUSY, f"d{d.domid} has already run; its ABI is fixed", field="features")
        flags = d.config.flags
        for name, bit in self.feature_cdf_bits.items():
            flags = flags | 1 << bit if name in features else flags & ~(1 << bit)
        mask = 0
        for name in features:
            mask |= REGISTRY[name].mask_flag
        config = replace(d.config, flags=flags, abi_features=mask)
        self._sanitise(config)
        d.config = config
        d.policy = replace(d.policy, features=frozenset(features))
        d.set_gating(gating_for(features))

    def cpuid(self, domid: int, leaf: int, subleaf: int = 0, vcpu: int = 0) -> tuple[int, int, int, int]:
        """What ``cpuid`` with (leaf, subleaf) returns on vCPU ``vcpu`` of the domain: (eax, ebx, ecx, edx)."""
        d = self.domain(domid)
        if not 0 <= vcpu < d.max_vcpus:
            raise XenError(errno.ENOENT, f"d{domid} has no vCPU {vcpu}", field="vcpu")
        return hypervisor_leaf(self, d, leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF, vcpu)

    def _unknown_flags_reason(self, unknown: int) -> str:
        for row in REGISTRY:
            if row.cdf_bit is not None and unknown >> row.cdf_bit & 1:
                if not self.abi_control:
                    return f"XEN_DOMCTL_CDF_{row.name} (bit {row.cdf_bit}): this host has no ABI control"
                if not self.release.implements(row):
                    return f"XEN_DOMCTL_CDF_{row.name}: Xen {self.release.name} does not implement {row.name}"
        return f"unknown CDF flags {unknown:#x} for Xen {self.release.name}"

    # --- domain lifecycle --------------------------------------------------------------------------------
    @property
    def free_memory_mb(self) -> int:
        """Host memory not given to any domain, in MiB."""
        return self.memory_mb - sum(d.memory_mb for d in self.domains.values())

    def create_domain(self, config: CreateDomain, memory_mb: int = 128) -> int:
        """XEN_DOMCTL_createdomain: validate, then build a domain paused by its controller. Returns its domid.
        A domain whose memory does not fit in what the host has free is refused (-ENOMEM) before anything is
        allocated."""
        if not isinstance(config, CreateDomain):
            raise XenError(errno.EINVAL, "config must be a CreateDomain", field="config")
        domid = self._free_domid()
        self.domains[domid] = self._build(domid, config, memory_mb)
        return domid

    def _build(self, domid: int, config: CreateDomain, memory_mb: int, *, privileged: bool = False) -> Domain:
        policy, gating = self._sanitise(config)
        if not isinstance(memory_mb, int) or isinstance(memory_mb, bool) or memory_mb < MIN_MEMORY_MB:
            raise XenError(errno.EINVAL, f"memory_mb must be at least {MIN_MEMORY_MB}", field="memory_mb")
        if domid != 0 and memory_mb > self.free_memory_mb:
            raise XenError(
                errno.ENOMEM,
                f"{memory_mb} MiB asked, {self.free_memory_mb} MiB free of the host's {self.memory_mb} MiB",
                field="memory_mb",
            )
        nr_pirqs = NR_STATIC_IRQS + (EXTRA_DOM0_PIRQS if privileged else EXTRA_DOMU_PIRQS)
        try:
            d = Domain(domid, config, policy, gating, memory_mb, release=self.release, privileged=privileged,
                       nr_pirqs=nr_pirqs)  # fmt: skip
        except MemoryError as exc:
            raise XenError(errno.ENOMEM, f"{memory_mb} MiB asked: {exc}", field="memory_mb") from exc
        if d.nr_pages <= max(XEN_PAGES):
            raise XenError(errno.EINVAL, "memory_mb too small for the shared_info pages", field="memory_mb")
        d.grant_table = self._grant_table(config)
        evtchn.evtchn_init(d)
        return d

    def _free_domid(self) -> int:
        for _ in range(DOMID_FIRST_RESERVED):
            domid = self._next_domid
            self._next_domid = domid + 1 if domid + 1 < DOMID_FIRST_RESERVED else 1
            if domid not in self.domains:
                return domid
        raise XenError(errno.ENOMEM, "no free domid")

    def domain(self, domid: int) -> Domain:
        try:
            return self.domains[domid]
        except KeyError:
            raise XenError(errno.ESRCH, f"no domain {domid}", field="domid") from None

    def pause(self, domid: int) -> None:
        """Controller pause: counted, at most 255 (-EUSERS beyond)."""
        d = self.domain(domid)
        if d.controller_pause_count + 1 > MAX_PAUSE_COUNT:
            raise XenError(errno.EUSERS, f"d{domid} already paused {MAX_PAUSE_COUNT} times", field="domid")
        d.controller_pause_count += 1
        if d.controller_pause_count == 1:
            self._sync_runstates(d)

    def unpause(self, domid: int) -> None:
        """Controller unpause; the first time the count reaches 0, creation is finished."""
        d = self.domain(domid)
        if d.controller_pause_count == 0:
            raise XenError(errno.EINVAL, f"d{domid} is not paused by its controller", field="domid")
        d.controller_pause_count -= 1
        if d.controller_pause_count == 0 and not d.creation_finished:
            d.creation_finished = True
            self._callers[domid] = d
        if d.controller_pause_count == 0:
            self._sync_runstates(d)

    def destroy_domain(self, domid: int) -> None:
        """Kill and release a domain: every port is closed (peers revert to UNBOUND), FIFO state freed."""
        d = self.domain(domid)
        if d.privileged and domid == 0:
            raise XenError(errno.EINVAL, "dom0 cannot be destroyed", field="domid")
        d.is_dying = True
        for port in range(1, d.valid_evtchns):
            evtchn.evtchn_close(self, d, port, guest=False)
        if d.fifo is not None:
            fifo_destroy(d)
        for pirq in list(d.pirq_to_port):
            self.pirq_guest_unbind(d, pirq)
        del self.domains[domid]
        self._callers.pop(domid, None)
        d.release_memory()

    def close(self) -> None:
        """The host is switched off: every domain is destroyed and its RAM, dom0's included, given back at once. A
        host that is merely dropped keeps its domains' RAM until the cyclic collector breaks the cycles between
        domains, vCPUs and channels, whenever that happens to run; whoever is done with a host closes it."""
        for domid in [domid for domid in self.domains if domid != 0]:
            self.destroy_domain(domid)
        for d in self.domains.values():
            d.release_memory()
        self.domains.clear()
        self._callers.clear()

    def shutdown_domain(self, domid: int, reason: str) -> None:
        """``domain_shutdown``: the guest asked to stop (SCHEDOP_shutdown, :mod:`xenabi.hypervisor.shutdown`) or Xen
        crashed it (``domain_crash``, reason "crash"). ``reason`` is a ``SHUTDOWN_*`` name (``soft_reset``...) or
        ``code N`` for a code no header names. Its vCPUs stop; a domain keeps its first reason; the toolstack
        decides what happens next."""
        d = self.domain(domid)
        if reason not in SHUTDOWN_REASONS:
            raise XenError(errno.EINVAL, f"unknown shutdown reason {reason!r}", field="reason")
        if d.shutdown_reason is None:
            d.shutdown_reason = reason
            self._sync_runstates(d)

    def resume_domain(self, domid: int) -> None:
        """``domain_resume``: a domain that shut down runs again, its shutdown forgotten."""
        d = self.domain(domid)
        if d.shutdown_reason is not None:
            d.shutdown_reason = None
            self._sync_runstates(d)

    def soft_reset(self, domid: int) -> None:
        """``XEN_DOMCTL_soft_reset`` from the control domain (4.7+; :mod:`xenabi.hypervisor.shutdown`): a domain
        that shut down is reset in place and runs again, its memory untouched. :class:`XenError` with Xen's errno
        when it cannot be (the domain is then left as it was, or for a PV domain, without its areas)."""
        d = self.domain(domid)
        if not self.release.soft_reset:
            raise XenError(errno.ENOSYS, f"Xen {self.release.name} has no XEN_DOMCTL_soft_reset (4.7, 1a043f9dc7)")
        if d.privileged:
            raise XenError(errno.EINVAL, "the control domain cannot soft-reset itself", field="domid")
        rc = shutdown.domain_soft_reset(self, d, resuming=False)
        while rc == -errno.ERESTART:  # XEN_DOMCTL_soft_reset_cont (4.15): the toolstack's call continues
            rc = shutdown.domain_soft_reset(self, d, resuming=True)
        if rc:
            raise XenError(-rc, f"XEN_DOMCTL_soft_reset of d{domid}: {errno_name(rc)}", field="domid")

    # --- vCPUs and the model clock (xenabi.hypervisor.vcpu) -------------------------------------------------
    @property
    def clock_ns(self) -> int:
        """The host's deterministic model clock: nanoseconds since boot. It moves only by :meth:`advance_clock`."""
        return self._clock_ns

    def advance_clock(self, ns: int) -> int:
        """Let ``ns`` nanoseconds pass (the scenarios' and tests' notion of time). Returns the new time."""
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise XenError(errno.EINVAL, f"time only moves forward: {ns!r} ns", field="ns")
        self._clock_ns += ns
        return self._clock_ns

    def vcpu_up(self, domid: int, vcpu: int, up: bool = True) -> None:
        """Bring a vCPU up (an HVM guest's INIT-SIPI, a PV guest's VCPUOP_up, which the model does not decode) or,
        with ``up=False``, take it down. Its runstate follows."""
        d = self.domain(domid)
        if not isinstance(vcpu, int) or not 0 <= vcpu < d.max_vcpus:
            raise XenError(errno.ENOENT, f"d{domid} has no vCPU {vcpu!r}", field="vcpu")
        v = d.vcpus[vcpu]
        v.up = bool(up)
        v.initialised = v.initialised or v.up
        self._sync_runstates(d)

    def _sync_runstates(self, d: Domain) -> None:
        """Each vCPU runs while it is up and its domain runs (the model has no scheduler); else it is offline."""
        running = d.creation_finished and d.controller_pause_count == 0 and d.shutdown_reason is None
        now = self._clock_ns
        for v in d.vcpus:
            set_runstate(v, Runstate.running if running and v.up else Runstate.offline, now)

    def send_virq(self, domid: int, virq: int, vcpu: int = 0) -> bool:
        """``send_guest_vcpu_virq``: raise a per-vCPU VIRQ (the timer, say) if the guest bound it. Returns whether
        it was bound."""
        d = self.domain(domid)
        if not 0 <= vcpu < d.max_vcpus or not 0 <= virq < NR_VIRQS or d.shutdown_reason is not None:
            return False
        port = d.vcpus[vcpu].virq_to_evtchn[virq]
        if not port:
            return False
        d.port_ops.set_pending(d, vcpu, d.chans[port])
        return True

    def set_target(self, domid: int, target: int | None) -> None:
        """XEN_DOMCTL_set_target: ``domid`` becomes the device model of ``target`` (XSM_TARGET allows it)."""
        d = self.domain(domid)
        if target is not None:
            self.domain(target)
        d.target = target

    def permit_pirq(self, domid: int, pirq: int) -> None:
        """XEN_DOMCTL_irq_permission: let a PV domain bind ``pirq``."""
        d = self.domain(domid)
        if d.permitted_pirqs is not None:
            d.permitted_pirqs.add(pirq)

    def set_guest_width(self, domid: int, bits: int) -> None:
        """Latch a 32- or 64-bit shared_info (``has_32bit_shinfo``): the 2-level capacity is 1024 or 4096."""
        d = self.domain(domid)
        if bits not in (32, 64):
            raise XenError(errno.EINVAL, "guest width must be 32 or 64", field="bits")
        d.set_word_bits(bits)

    # --- Xen-internal event channels ----------------------------------------------------------------------
    def alloc_xen_event_channel(
        self, domid: int, vcpu: int, remote_domid: int, notify: Callable[[int, int], None]
    ) -> int:
        """``alloc_unbound_xen_event_channel``: a port in ``domid`` consumed by Xen (ioreq, vm_event...)."""
        d = self.domain(domid)
        port = evtchn.get_free_port(d)
        if port < 0:
            raise XenError(-port, f"no free port in d{domid}")
        self._xen_consumers.append(notify)
        chn = d.chans[port]
        chn.state = UNBOUND
        chn.remote_domid = remote_domid
        chn.notify_vcpu_id = vcpu
        chn.xen_consumer = len(self._xen_consumers)
        d.port_ops.init(d, chn)
        d.xen_evtchns += 1
        return port

    def notify_xen_consumer(self, d: Domain, chn: Chan) -> None:
        self._xen_consumers[chn.xen_consumer - 1](d.domid, chn.port)

    def pirq_guest_bind(self, d: Domain, pirq: int, will_share: bool) -> int:
        binders = self._pirq_binders.setdefault(pirq, {})
        if binders and not (will_share and all(binders.values())):
            return -errno.EBUSY
        binders[d.domid] = will_share
        return 0

    def pirq_guest_unbind(self, d: Domain, pirq: int) -> None:
        binders = self._pirq_binders.get(pirq)
        if binders is not None:
            binders.pop(d.domid, None)

    # --- hypercalls ----------------------------------------------------------------------------------------
    def lookup(self, cur: Domain, domid: int) -> Domain | None:
        """``rcu_lock_domain_by_any_id``: DOMID_SELF is the caller."""
        if domid == DOMID_SELF:
            return cur
        return self.domains.get(domid)

    def hypercall(
        self, caller: int, op: int, cmd: int, arg: object, *, count: int = 1, vcpuid: int = 0, vcpu: int = 0
    ) -> int:
        """Issue a hypercall from domain ``caller`` with an argument struct; OUT fields are written iff rc == 0.

        An argument of the wrong struct type, or with a field that is not a C integer of its field's width, cannot
        be copied in: -EFAULT. ``count`` is grant_table_op's count, ``vcpuid`` the vCPU a vcpu_op names, ``vcpu``
        the caller's vCPU making the call. Never raises, except :class:`~xenabi.errors.GuestNotRunning` for a
        caller whose vCPUs have never run (or a ``vcpu`` that is not up) and
        :class:`~xenabi.errors.NotModelled` for an operation the model does not implement.
        """
        # The entry sequence below is repeated in hypercall_raw on purpose: a shared helper would cost a call
        # on every hypercall, and this is the dispatch floor.
        cur = self._callers.get(caller)
        if cur is None:
            return self._not_a_caller(caller)
        key = (op, cmd)
        if key in cur.hidden_ops:
            return _ENOSYS
        entry = DISPATCH.entries.get(key)
        if entry is None:
            miss = DISPATCH.lookup_miss(op, cmd, count, vcpuid, vcpu)
            if isinstance(miss, int):
                return miss
            entry = miss
        if entry.precheck is not None:
            rc = entry.precheck(self, cur)
            if rc:
                return rc
        if type(arg) is not entry.struct:
            return _EFAULT
        try:
            entry.struct.copy_in_check(arg)  # copy-in: every field must be an integer that fits its C type
        except struct.error:
            return _EFAULT
        return entry.handler(self, cur, arg)

    def hypercall_raw(
        self, caller: int, op: int, cmd: int, data: bytes, *, count: int = 1, vcpuid: int = 0, vcpu: int = 0
    ) -> tuple[int, bytes]:
        """The same in C layout: ``data`` in, ``(rc, bytes)`` out; a short buffer is -EFAULT. Never raises.

        The bytes returned are the argument as the guest sees it afterwards: on success the struct with its OUT
        fields written back, otherwise exactly what was passed.
        """
        if not isinstance(data, _BYTES_LIKE):
            return _EFAULT, b""
        data = bytes(data)
        cur = self._callers.get(caller)
        if cur is None:
            return self._not_a_caller(caller), data
        key = (op, cmd)
        if key in cur.hidden_ops:
            return _ENOSYS, data
        entry = DISPATCH.entries.get(key)
        if entry is None:
            miss = DISPATCH.lookup_miss(op, cmd, count, vcpuid, vcpu)
            if isinstance(miss, int):
                return miss, data
            entry = miss
        if entry.precheck is not None:
            rc = entry.precheck(self, cur)
            if rc:
                return rc, data
        arg_type = entry.struct
        size = arg_type.LAYOUT.size
        if len(data) < size:
            return _EFAULT, data
        arg = arg_type.unpack(data)
        rc = entry.handler(self, cur, arg)
        if rc == 0 and arg_type.OUT:
            return 0, arg.pack() + data[size:]
        return rc, data

    # --- tracing ---------------------------------------------------------------------------------------------------
    def start_trace(self, trace: HypercallTrace | None = None) -> HypercallTrace:
        """Record every hypercall this host answers from now on (:mod:`xenabi.hypervisor.trace`); returns the
        trace. The recording wrappers are instance attributes in front of the class's methods, so a host that is
        not traced runs the dispatch floor unchanged. (They are set and reset as attributes, never through
        ``__dict__``: reaching for the instance dict would make CPython materialise it, and every later method
        lookup on this host about 7% slower.)"""
        self.stop_trace()
        self.trace = HypercallTrace() if trace is None else trace
        cls = type(self)
        self.hypercall = traced_hypercall(self, self.trace, MethodType(cls.hypercall, self))  # type: ignore[method-assign]
        self.hypercall_raw = traced_hypercall_raw(  # type: ignore[method-assign]
            self, self.trace, MethodType(cls.hypercall_raw, self)
        )
        return self.trace

    def stop_trace(self) -> HypercallTrace | None:
        """Stop recording; returns the trace that was recording, if any. The host's own methods answer again (as
        bound methods in the same attributes, which look up as fast as the class's)."""
        trace, self.trace = self.trace, None
        if trace is not None:
            cls = type(self)
            self.hypercall = MethodType(cls.hypercall, self)  # type: ignore[method-assign]
            self.hypercall_raw = MethodType(cls.hypercall_raw, self)  # type: ignore[method-assign]
        return trace

    def _not_a_caller(self, caller: int) -> int:
        """A hypercall from a domain that is not running guest code: none at all (-ESRCH, as the model has always
        answered), or one that has never run, which cannot issue hypercalls (raises)."""
        if caller in self.domains:
            raise GuestNotRunning(caller)
        return _ESRCH


XEN_KNOBS: dict[str, Callable[[Hypervisor, CreateDomain], bool]] = {
    # grant_opts (4.16): a maximum grant version of 1 is Xen's own way to hide grant v2 from one domain
    "gnttab_grant_opts": lambda hv, config: (
        config.grant_opts is not None and config.grant_opts & XEN_DOMCTL_GRANT_version_mask == 1
    ),
}
"""Release-table field naming a per-domain knob (``AbiFeature.xen_knob``) -> whether a create struct uses it to
hide the feature."""


def gating_for(exposed: frozenset[str]) -> Gating:
    """What every registry feature outside ``exposed`` hides: its whole operations at entry, its late and value
    gates for the handlers (decision 2: each answers -ENOSYS and changes nothing)."""
    hidden = [row for row in REGISTRY if row.name not in exposed]
    return Gating(
        entry=frozenset(gate for row in hidden for gate in row.gates),
        late=frozenset(key for row in hidden for key in row.hidden_keys()),
        exposed=frozenset(row.name for row in REGISTRY if row.name in exposed),
    )
