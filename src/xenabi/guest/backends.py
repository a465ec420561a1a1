"""Backends in dom0: xenstored, xenconsoled and a network backend, each connected to one guest channel.

A backend binds an interdomain channel from dom0 to the port the guest (or, for xenstore and the console, the
toolstack) allocated for it, as the real daemons do with EVTCHNOP_bind_interdomain, and notifies the guest with
EVTCHNOP_send. Each notification that Xen accepted is counted as sent; the scenarios compare that with what the
guest kernel handled. After a restore or migration the guest has new ports, so backends connect afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from xenabi.abi import evtchn as E
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.hypervisor import Hypervisor


@dataclass
class Backend:
    name: str
    hv: Hypervisor
    guest: int
    local_port: int = 0
    rc: int = 0  # the bind's result; a backend that could not connect sends nothing

    @classmethod
    def connect(cls, hv: Hypervisor, name: str, guest: int, guest_port: int) -> Backend:
        arg = E.BindInterdomain(remote_dom=guest, remote_port=guest_port)
        rc = hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_bind_interdomain, arg)
        return cls(name, hv, guest, arg.local_port if rc == 0 else 0, rc)

    @property
    def connected(self) -> bool:
        return self.rc == 0 and self.guest in self.hv.domains

    def notify(self) -> bool:
        """One event to the guest; True if Xen accepted it for a connected channel."""
        if not self.connected:
            return False
        return self.hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_send, E.Send(self.local_port)) == 0

    def close(self) -> None:
        if self.rc == 0 and self.local_port:
            self.hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_close, E.Close(self.local_port))
            self.local_port = 0
