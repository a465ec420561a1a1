"""The ABI fingerprint: a model instrument of the scenarios and tests, not something a guest does (issue 21).

Linux never probes which operations exist: it reads XENFEAT and CPUID and tries what it needs
(``spec/linux-guests.md`` §1). The scenarios still want to know whether a guest's environment changed when it moved,
so the harness, not the guest kernel, takes a *fingerprint* of a domain when it asks: which registry features'
operations answer something other than -ENOSYS, found by issuing each gated operation with an argument that fails
harmlessly, and which features the CPUID ABI leaf advertises (None where the host has no such leaf). Two
fingerprints differ when the operations differ, or when both have the leaf and it differs: a leaf that appears
describes what the guest already had, and a guest that never saw it cannot depend on it.

The probe, by the three kinds of gate (``xenabi.abi.features``):

- A whole sub-op in the dispatch table: its argument struct, all ones, which every handler refuses untouched.
- A whole sub-op of a hypercall that reads its own (xen_version's varbuf sub-ops): a null handle, which asks only
  for a size.
- A late gate (a vCPU op): vCPU 0 and an argument address outside the guest's RAM: an exposed op answers -EFAULT
  reading it, a hidden one -ENOSYS, and nothing is registered.
- A value gate (set_version's 2) cannot be issued without switching the guest's grant table, which would change
  what the guest sees; the instrument reads the domain's gating for it instead, and the set_version tests check
  that gating against the hypercall itself.

Nothing the probe does changes the domain: no guest memory is written. Its hypercalls do appear in a hypercall
trace, issued by the domain they probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xenabi.abi import errno
from xenabi.abi.cpuid import XEN_CPUID_FIRST_LEAF, XEN_CPUID_LEAF_ABI_FEATURES, abi_feature_bits
from xenabi.abi.features import REGISTRY, AbiFeature
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.dispatch import DISPATCH

_OUTSIDE_RAM = 1 << 62


def gate_answers(hv: Hypervisor, domid: int) -> dict[tuple[int, ...], bool]:
    """For every gate key of every registry row: does the operation answer (True) or is it hidden (-ENOSYS)?"""
    seen: dict[tuple[int, ...], bool] = {}
    d = hv.domain(domid)
    for row in REGISTRY:
        for op, cmd in row.gates:
            entry = DISPATCH.entries.get((op, cmd))
            if entry is not None:
                rc = hv.hypercall(domid, op, cmd, entry.struct.unpack(b"\xff" * entry.struct.size()))
            else:
                rc = hv.hypercall_raw(domid, op, cmd, bytes(8))[0]  # a null handle
            seen[(op, cmd)] = rc != -errno.ENOSYS
        for op, cmd in row.late_gates:
            rc = hv.hypercall_raw(domid, op, cmd, _OUTSIDE_RAM.to_bytes(8, "little"), vcpuid=0)[0]
            seen[(op, cmd)] = rc != -errno.ENOSYS
        for key in row.value_gates:
            seen[key] = key not in d.hidden_late
    return seen


def usable(row: AbiFeature, answers: dict[tuple[int, ...], bool]) -> bool:
    """A feature shows when any of its gated operations answers (a hidden feature answers none)."""
    keys = (*row.gates, *row.late_gates, *row.value_gates)
    return any(answers[key] for key in keys)


def usable_features(hv: Hypervisor, domid: int) -> tuple[str, ...]:
    """The registry features whose operations the domain can use, in registry order."""
    answers = gate_answers(hv, domid)
    return tuple(row.name for row in REGISTRY if usable(row, answers))


@dataclass(frozen=True)
class Fingerprint:
    operations: tuple[str, ...]  # features whose operations answer (not -ENOSYS)
    cpuid: tuple[str, ...] | None  # features the ABI CPUID leaf advertises; None: the host has no such leaf

    def differs_from(self, other: Fingerprint) -> bool:
        if self.operations != other.operations:
            return True
        return self.cpuid is not None and other.cpuid is not None and self.cpuid != other.cpuid

    def to_json(self) -> dict[str, Any]:
        return {"operations": list(self.operations), "cpuid": None if self.cpuid is None else list(self.cpuid)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Fingerprint:
        cpuid = doc["cpuid"]
        return cls(tuple(doc["operations"]), None if cpuid is None else tuple(cpuid))

    def __str__(self) -> str:
        ops = ", ".join(self.operations) or "none"
        leaf = "no leaf" if self.cpuid is None else ", ".join(self.cpuid) or "none"
        return f"operations: {ops}; CPUID leaf: {leaf}"


def take_fingerprint(hv: Hypervisor, domid: int) -> Fingerprint:
    """Probe every gated operation harmlessly (:mod:`xenabi.guest.probe`) and read the ABI leaf."""
    present = list(usable_features(hv, domid))
    top = hv.cpuid(domid, XEN_CPUID_FIRST_LEAF)[0]
    leaf = XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_ABI_FEATURES
    cpuid = None
    if top >= leaf:
        bits = abi_feature_bits(hv.cpuid(domid, leaf))
        cpuid = tuple(row.name for row in REGISTRY if row.bit in bits)
    return Fingerprint(tuple(present), cpuid)
