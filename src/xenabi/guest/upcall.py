"""``__xen_evtchn_do_upcall``: the ABI-independent upcall loop of a Linux guest (``spec/evtchn.md`` §4.5).

Clear ``evtchn_upcall_pending``, let the ABI handle events, and go round again while Xen set the flag meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from xenabi.abi.xen import XEN_LEGACY_MAX_VCPUS
from xenabi.hypervisor import Domain
from xenabi.hypervisor.domain import shared_info_vcpu_info

Deliver = Callable[[int], None]


def do_upcall(d: Domain, info: int, vcpu: int, handle_events: Callable[[int, Deliver], int], deliver: Deliver) -> int:
    """Run the upcall loop on ``vcpu``, whose vcpu_info the kernel reads at guest address ``info`` (where it
    believes Xen writes it); returns how many events were delivered."""
    memory = d.memory
    handled = 0
    while True:
        memory[info] = 0
        handled += handle_events(vcpu, deliver)
        if not memory[info]:
            return handled


def vcpu_info_slot(cpu: int) -> int:
    """Where a CPU's vcpu_info is before the kernel places it (``xen_vcpu_info_reset``): its slot in shared_info,
    or 0 (none) for a CPU numbered 32 or more."""
    return shared_info_vcpu_info(cpu) if cpu < XEN_LEGACY_MAX_VCPUS else 0
