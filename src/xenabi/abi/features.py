"""The ABI feature registry: the one place an ABI feature is declared.

One row per feature: its name (the xl.cfg / libxl name), its registry bit (libxl's enum value, the hypervisor CPUID
leaf bit), the release it appeared in, the (hypercall, sub-op) pairs it gates, the guest types it applies to and
its ``XEN_DOMCTL_CDF_*`` bit. Every control surface (create-flag validation, dispatch gating, dom0's flags, the
hypervisor CPUID leaf, hypfs leaves and the xl.cfg names) is derived from these rows; no other code names a
feature to gate it.
``DESIGN.md`` decisions 1-2; ``spec/abi-control.md`` §1.2-§1.5.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xenabi.abi.cpuid import XEN_HVM_CPUID_UPCALL_VECTOR
from xenabi.abi.domctl import CDF_BITS, GuestType
from xenabi.abi.evtchn import EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_set_priority
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op

ALL_GUEST_TYPES = frozenset(GuestType)


@dataclass(frozen=True, slots=True)
class AbiFeature:
    name: str
    bit: int
    since: tuple[int, int]
    gates: frozenset[tuple[int, int]]
    guest_types: frozenset[GuestType]
    cdf_bit: int
    summary: str = field(default="", compare=False)
    # Xen's own advertisement of the feature in its HVM CPUID leaf (0x40000004 eax), where it has one: a hidden
    # feature clears it too (DESIGN decision 10)
    cpuid_leaf4_bit: int = 0

    @property
    def cdf_flag(self) -> int:
        return 1 << self.cdf_bit

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
                ("cdf_bit", row.cdf_bit == feature.cdf_bit),
                ("gates", bool(row.gates & feature.gates)),
            )
            for what, collides in clash:
                if collides:
                    raise ValueError(f"feature {feature.name!r}: {what} collides with {row.name!r}")
        if feature.cdf_bit in CDF_BITS.values() and CDF_BITS.get(feature.name) != feature.cdf_bit:
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

    def gating(self, op: int, cmd: int) -> AbiFeature | None:
        """The feature that owns (hypercall, sub-op), if any."""
        for row in self._rows.values():
            if (op, cmd) in row.gates:
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
        ),
    )
)
"""The registry every layer reads. Tests may add rows through :meth:`FeatureRegistry.register`."""
