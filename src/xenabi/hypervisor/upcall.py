"""``vcpu_mark_events_pending``: raising an upcall on a vCPU (``spec/evtchn.md`` §4.2, [x86dom.c]).

Bit 0 of ``vcpu_info.evtchn_upcall_pending`` is test-and-set; only a 0->1 transition notifies. An HVM vCPU with a
per-vCPU vector (HVMOP_set_evtchn_upcall_vector) gets that vector; otherwise the domain's callback is used (the
HVM callback IRQ, or the PV event callback). Each notification is recorded on the vCPU so guest models and tests
can see how it was delivered. ``evtchn_upcall_mask`` gates a PV guest's delivery, but Xen does not change it
here and the model does not either.
"""

from __future__ import annotations

from xenabi.hypervisor.domain import Upcall, UpcallVia, Vcpu

_BY_CALLBACK = Upcall(UpcallVia.DOMAIN_CALLBACK)


def vcpu_mark_events_pending(v: Vcpu) -> None:
    memory = v.domain.memory
    offset = v.info_offset  # evtchn_upcall_pending is the first byte of vcpu_info
    flag = memory[offset]
    if flag & 1:
        return
    memory[offset] = flag | 1
    v.upcall_count += 1
    vector = v.upcall_vector
    v.upcalls.append(Upcall(UpcallVia.VCPU_VECTOR, vector) if vector and v.domain.is_hvm else _BY_CALLBACK)


def vcpu_assert_vector(v: Vcpu) -> None:
    """``hvm_assert_evtchn_irq`` for a vCPU with its own vector: the vector is raised in the vLAPIC directly,
    whether or not an event is pending and without touching ``evtchn_upcall_pending`` (a spurious upcall)."""
    v.upcall_count += 1
    v.upcalls.append(Upcall(UpcallVia.VCPU_VECTOR, v.upcall_vector))
