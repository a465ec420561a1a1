"""``__xen_evtchn_do_upcall``: the ABI-independent upcall loop of a Linux guest (``spec/evtchn.md`` §4.5).

Clear ``evtchn_upcall_pending``, let the ABI handle events, and go round again while Xen set the flag meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from xenabi.hypervisor import Domain

Deliver = Callable[[int], None]


def do_upcall(d: Domain, vcpu: int, handle_events: Callable[[int, Deliver], int], deliver: Deliver) -> int:
    """Run the upcall loop on ``vcpu``; returns how many events were delivered."""
    memory = d.memory
    info = d.vcpus[vcpu].info_offset
    handled = 0
    while True:
        memory[info] = 0
        handled += handle_events(vcpu, deliver)
        if not memory[info]:
            return handled
