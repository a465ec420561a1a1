"""The ABI feature registry: the one place an ABI feature is declared.

One row per feature: its name (the xl.cfg / libxl name), its registry bit (libxl's enum value, the hypervisor CPUID
leaf bit, the bit of the create struct's ``abi_features`` mask), the release it appeared in, what it gates, the guest
types it applies to and, for the series' two features only, its ``XEN_DOMCTL_CDF_*`` bit. Every control surface
(create-flag and mask validation, dispatch gating, dom0's features, the hypervisor CPUID leaves, Xen's own XENFEAT
advertisement, hypfs leaves and the xl.cfg names) is derived from these rows; no other code names a feature to
gate it. ``DESIGN.md`` decisions 1-2 and 10; ``spec/abi-control.md`` §1.2-§1.5; ``spec/gnttab-vcpu-version.md``.

A row gates in three ways, each a set of keys the domain carries when the feature is hidden (decision 2: the
hidden answer is -ENOSYS and nothing changes):

- ``gates``: whole (hypercall, sub-op) pairs, answered at hypercall entry before anything is looked at;
- ``late_gates``: (hypercall, sub-op) pairs whose hypercall makes one check first in every release (a vCPU op
  checks its vcpuid: -ENOENT before -ENOSYS); the handler asks the domain after that check;
- ``value_gates``: (hypercall, sub-op, value): one value of the sub-op's argument (grant_table_op set_version's
  version 2), asked by the handler after the argument is read and validated, where Xen's own per-domain knob for
  the same thing answers.

Where Xen has a knob of its own for a feature, the row names it: a per-domain one (``xen_knob``, a release-table
field: grant_opts from 4.16) and a host-wide boot option (``boot_option``: ``gnttab=max-ver:1``).

Create flags are a scarce namespace shared with Xen's own flags (``cdf_bit`` None for every later feature); the
``abi_features`` mask names every feature by its registry bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from xenabi.abi.cpuid import XEN_HVM_CPUID_UPCALL_VECTOR
from xenabi.abi.domctl import CDF_BITS, GuestType
from xenabi.abi.evtchn import EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_set_priority
from xenabi.abi.gnttab import GNTTABOP_set_version
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector
from xenabi.abi.vcpu import VcpuOp
from xenabi.abi.version import Xenfeat, XenVer
from xenabi.abi.xen import (
    HYPERVISOR_event_channel_op,
    HYPERVISOR_grant_table_op,
    HYPERVISOR_hvm_op,
    HYPERVISOR_vcpu_op,
    HYPERVISOR_xen_version,
)

ALL_GUEST_TYPES = frozenset(GuestType)


@dataclass(frozen=True, slots=True)
class AbiFeature:
    name: str
    bit: int
    since: tuple[int, int]
    gates: frozenset[tuple[int, int]]
    guest_types: frozenset[GuestType]
    cdf_bit: int | None = None
    summary: str = field(default="", compare=False)
    # Xen's own advertisement of the feature in its HVM CPUID leaf (0x40000004 eax), where it has one: a hidden
    # feature clears it too (DESIGN decision 10)
    cpuid_leaf4_bit: int = 0
    late_gates: frozenset[tuple[int, int]] = frozenset()
    value_gates: frozenset[tuple[int, int, int]] = frozenset()
    # XENVER_get_features submap-0 bits Xen sets for the feature: clear while it is hidden (decision 10)
    xenfeat_bits: tuple[int, ...] = ()
    # the Xen commit that introduced the feature (rows older than the release table: the release it came with)
    commit: str = field(default="", compare=False)
    # Xen's own per-domain knob for hiding the feature, by the release-table field that says a release has it
    # (grant_opts' maximum version: ``gnttab_grant_opts``); a host without ABI control can still hide the feature
    # where its release has the knob (decision 10), and admission counts on it
    xen_knob: str = ""
    # a boot option that hides the feature from every domain of the host: (Hypervisor attribute, value)
    boot_option: tuple[str, int] | None = None

    @property
    def cdf_flag(self) -> int:
        return 0 if self.cdf_bit is None else 1 << self.cdf_bit

    @property
    def mask_flag(self) -> int:
        """The feature's bit in the create struct's ``abi_features`` mask."""
        return 1 << self.bit

    def hidden_keys(self) -> frozenset[tuple[int, ...]]:
        """Everything a domain without the feature carries in its late-gate set (see the module docstring)."""
        return frozenset(self.late_gates) | frozenset(self.value_gates)

    @property
    def since_name(self) -> str:
        return f"{self.since[0]}.{self.since[1]}"

    def applies_to(self, guest_type: GuestType) -> bool:
        return guest_type in self.guest_types


class FeatureRegistry:
    """An ordered table of :class:`AbiFeature` rows with unique names, bits, CDF bits and gated operations."""

    def __init__(self, rows: tuple[AbiFeature, ...] = ()) -> None:
        self._rows: dict[str, AbiFeature] = {}
        for row in rows:
            self.register(row)

    def register(self, feature: AbiFeature) -> AbiFeature:
        """Add a row. Names, bits, create flags and gated operations must not collide with existing rows."""
        for row in self._rows.values():
            clash = (
                ("name", row.name == feature.name),
                ("bit", row.bit == feature.bit),
                ("cdf_bit", row.cdf_bit is not None and row.cdf_bit == feature.cdf_bit),
                ("gates", bool(row.gates & feature.gates or row.hidden_keys() & feature.hidden_keys())),
            )
            for what, collides in clash:
                if collides:
                    raise ValueError(f"feature {feature.name!r}: {what} collides with {row.name!r}")
        if (
            feature.cdf_bit is not None
            and feature.cdf_bit in CDF_BITS.values()
            and CDF_BITS.get(feature.name) != feature.cdf_bit
        ):
            raise ValueError(f"feature {feature.name!r}: CDF bit {feature.cdf_bit} belongs to another flag")
        self._rows[feature.name] = feature
        return feature

    def unregister(self, name: str) -> AbiFeature:
        """Remove a row (experiments and tests that register their own feature clean up with this)."""
        return self._rows.pop(name)

    def __iter__(self) -> Iterator[AbiFeature]:
        return iter(sorted(self._rows.values(), key=lambda row: row.bit))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __getitem__(self, name: str) -> AbiFeature:
        return self._rows[name]

    def names(self) -> tuple[str, ...]:
        return tuple(row.name for row in self)

    def cdf_mask(self) -> int:
        """Every create flag owned by a feature."""
        mask = 0
        for row in self:
            mask |= row.cdf_flag
        return mask

    def mask(self) -> int:
        """Every bit of the ``abi_features`` mask that names a feature."""
        mask = 0
        for row in self:
            mask |= row.mask_flag
        return mask

    def boot_hidden(self, options: Mapping[str, int]) -> frozenset[str]:
        """The features a host's boot ``options`` (``{"gnttab_max_version": 1}``) hide from every domain."""
        return frozenset(row.name for row in self
                         if row.boot_option and options.get(row.boot_option[0]) == row.boot_option[1])  # fmt: skip

    def gating(self, op: int, cmd: int) -> AbiFeature | None:
        """The feature that owns (hypercall, sub-op), whole or late, if any (value gates own one value only)."""
        for row in self._rows.values():
            if (op, cmd) in row.gates or (op, cmd) in row.late_gates:
                return row
        return None


REGISTRY = FeatureRegistry(
    (
        AbiFeature(
            name="evtchn_fifo",
            bit=0,
            since=(4, 4),
            gates=frozenset(
                (HYPERVISOR_event_channel_op, int(cmd))
                for cmd in (EVTCHNOP_init_control, EVTCHNOP_expand_array, EVTCHNOP_set_priority)
            ),
            guest_types=ALL_GUEST_TYPES,
            cdf_bit=CDF_BITS["evtchn_fifo"],
            summary="FIFO-based event channel ABI (EVTCHNOP_init_control, expand_array, set_priority)",
            commit="4.4: d2d50c2f30 evtchn: add FIFO-based event channel ABI",
        ),
        AbiFeature(
            name="evtchn_upcall",
            bit=1,
            since=(4, 6),
            gates=frozenset({(HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector)}),
            # x86 HVM containers: the v5 hypervisor checks is_hvm_domain, which PVH passes, and every release
            # from 4.6 answers the hypercall for PVH guests (DESIGN decision 1)
            guest_types=frozenset({GuestType.HVM, GuestType.PVH}),
            cdf_bit=CDF_BITS["evtchn_upcall"],
            summary="per-vCPU event channel upcall vector (HVMOP_set_evtchn_upcall_vector), x86 HVM and PVH",
            cpuid_leaf4_bit=XEN_HVM_CPUID_UPCALL_VECTOR,
            commit="4.6: 04447f4453 x86/hvm: add per-vcpu evtchn upcalls",
        ),
        AbiFeature(
            name="gnttab_v2",
            bit=2,
            # older than every release in the table (Xen 4.0); Xen's own per-domain knob for it is grant_opts'
            # maximum version (4.16), which answers the same -ENOSYS in the same place
            since=(4, 0),
            gates=frozenset(),
            value_gates=frozenset({(HYPERVISOR_grant_table_op, GNTTABOP_set_version, 2)}),
            guest_types=ALL_GUEST_TYPES,
            summary="grant table v2 (GNTTABOP_set_version 2); hidden: -ENOSYS, the current version written back",
            xen_knob="gnttab_grant_opts",
            boot_option=("gnttab_max_version", 1),
            commit="4.0: grant table v2 (the release came with it)",
        ),
        AbiFeature(
            name="vcpu_phys_area",
            bit=3,
            since=(4, 18),
            gates=frozenset(),
            late_gates=frozenset(
                (HYPERVISOR_vcpu_op, int(op))
                for op in (VcpuOp.register_runstate_phys_area, VcpuOp.register_vcpu_time_phys_area)
            ),
            guest_types=ALL_GUEST_TYPES,
            xenfeat_bits=(Xenfeat.runstate_phys_area, Xenfeat.vcpu_time_phys_area),
            summary="runstate and vCPU time areas by guest-physical address (VCPUOP 14, 15; XENFEAT 18, 19)",
            commit="4.18: d5df44275e, 60e544a8c5 (the ops), 48a3fd1432 (XENFEAT 18 and 19)",
        ),
        AbiFeature(
            name="xenver_varbuf",
            bit=4,
            since=(4, 20),
            gates=frozenset(
                (HYPERVISOR_xen_version, int(cmd))
                for cmd in (XenVer.extraversion2, XenVer.capabilities2, XenVer.changeset2, XenVer.commandline2)
            ),
            guest_types=ALL_GUEST_TYPES,
            summary="untruncated xen_version strings (XENVER_extraversion2 .. commandline2, sub-ops 11-14)",
            commit="4.20: e3bb1b6525 xen/version: Introduce non-truncating deterministically-signed XENVER_* subops",
        ),
    )
)
"""The registry every layer reads. Tests may add rows through :meth:`FeatureRegistry.register`."""
