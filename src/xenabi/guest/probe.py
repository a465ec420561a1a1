"""A model instrument, not guest behaviour: which registry features' operations a domain can use, found by issuing
each gated operation with an argument that fails harmlessly (``xenabi.abi.features``: the three kinds of gate).

- A whole sub-op in the dispatch table: its argument struct, all ones, which every handler refuses untouched.
- A whole sub-op of a hypercall that reads its own (xen_version's varbuf sub-ops): a null handle, which asks only
  for a size.
- A late gate (a vCPU op): vCPU 0 and an argument address outside the guest's RAM: an exposed op answers -EFAULT
  reading it, a hidden one -ENOSYS, and nothing is registered.
- A value gate (set_version's 2) cannot be issued without switching the guest's grant table, which would change
  what the guest sees; the instrument reads the domain's gating for it instead, and the set_version tests check
  that gating against the hypercall itself.

Nothing the probe does changes the domain: no guest memory is written.
"""

from __future__ import annotations

from xenabi.abi import errno
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
