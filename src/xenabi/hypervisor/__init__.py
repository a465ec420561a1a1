"""The hypervisor model: domains, hypercall dispatch and gating, event channels (2-level and FIFO), hvm ops.

``DESIGN.md`` "Public API": ``Hypervisor(release, abi_control)``, ``create_domain``, ``hypercall``,
``hypercall_raw``, ``domain(domid)``.
"""

from xenabi.errors import XenError
from xenabi.hypervisor.domain import Chan, ChanState, Domain, Upcall, UpcallVia, Vcpu
from xenabi.hypervisor.hypervisor import Hypervisor

__all__ = ["Chan", "ChanState", "Domain", "Hypervisor", "Upcall", "UpcallVia", "Vcpu", "XenError"]
