"""Scenarios run on the model, ungated and controlled; the CLI's ``demo`` and the tests use them.

``abi_probe``: a Linux-like guest boots on a host (FIFO first, 2-level on any negative result, as
``xen_init_IRQ`` does; ``spec/evtchn.md`` §5.8), tries the per-vCPU upcall vector, binds a channel to a dom0
backend and handles every event the backend sends, through guest memory. Its fingerprint is what the registry's
operations answered. Comparing fingerprints shows what ABI control is for: a controlled 4.14 host can give a VM
exactly the environment Xen 4.3 gave it (``DESIGN.md`` decisions 2 and 7).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.errno import errno_name
from xenabi.abi.features import REGISTRY
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op
from xenabi.guest.evtchn_2l import TwoLevelGuest
from xenabi.guest.evtchn_fifo import FifoGuest
from xenabi.hypervisor import Hypervisor
from xenabi.policy import AbiPolicy, legacy_policy

LINUX_UPCALL_VECTOR = 0xF3  # HYPERVISOR_CALLBACK_VECTOR


@dataclass(frozen=True)
class ProbeResult:
    host: str
    release: str
    abi_control: bool
    policy: str
    init_control: str
    upcall_vector: str
    abi: str
    upcall_via: str
    sent: int
    handled: int

    @property
    def fingerprint(self) -> tuple[str, str, str]:
        return self.init_control, self.upcall_vector, self.abi

    def to_json(self) -> dict[str, object]:
        return asdict(self) | {"fingerprint": list(self.fingerprint)}


def abi_probe(release: str, abi_control: bool, policy: AbiPolicy | None = None, events: int = 200) -> ProbeResult:
    """Boot an HVM guest on ``release`` and exercise its event channels; ``policy`` only on controlled hosts."""
    hv = Hypervisor(release, abi_control=abi_control)
    flags = 0
    if abi_control:
        wanted = (
            policy.features
            if policy is not None
            else hv.release.applicable_features(CreateDomain.for_type("hvm").guest_type)
        )
        for name in wanted:
            flags |= REGISTRY[name].cdf_flag
    domid = hv.create_domain(CreateDomain.for_type("hvm", features=flags), memory_mb=4)
    hv.unpause(domid)

    fifo = FifoGuest(hv, domid)
    init_rc = fifo.init_control(0)
    guest: FifoGuest | TwoLevelGuest = fifo if init_rc == 0 else TwoLevelGuest(hv, domid)
    if isinstance(guest, TwoLevelGuest):
        guest.mask_all()
    vector_rc = hv.hypercall(
        domid,
        HYPERVISOR_hvm_op,
        HVMOP_set_evtchn_upcall_vector,
        EvtchnUpcallVector(vcpu=0, vector=LINUX_UPCALL_VECTOR),
    )

    port = E.AllocUnbound(dom=domid, remote_dom=0)
    assert hv.hypercall(domid, HYPERVISOR_event_channel_op, E.EVTCHNOP_alloc_unbound, port) == 0
    if isinstance(guest, FifoGuest):
        assert guest.setup_port(port.port) == 0
    backend = E.BindInterdomain(remote_dom=domid, remote_port=port.port)
    assert hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_bind_interdomain, backend) == 0
    guest.upcall(0, lambda _port: None)  # the bind's own notification
    guest.unmask(port.port)

    handled: list[int] = []
    for _ in range(events):
        hv.hypercall(0, HYPERVISOR_event_channel_op, E.EVTCHNOP_send, E.Send(backend.local_port))
        guest.upcall(0, handled.append)
    vcpu = hv.domain(domid).vcpus[0]
    kind = "controlled" if abi_control else "uncontrolled"
    if abi_control:
        policy_name = "default" if policy is None else "pinned: " + (", ".join(sorted(policy.features)) or "none")
    else:
        policy_name = "everything implemented"
    return ProbeResult(
        host=f"Xen {release} ({kind})",
        release=release,
        abi_control=abi_control,
        policy=policy_name,
        init_control=errno_name(init_rc),
        upcall_vector=errno_name(vector_rc),
        abi=hv.domain(domid).evtchn_abi,
        upcall_via=vcpu.upcalls[-1].via.value if vcpu.upcalls else "-",
        sent=events,
        handled=sum(1 for p in handled if p == port.port),
    )


def probe_matrix(events: int = 200) -> list[ProbeResult]:
    """The demo's rows: old and new hosts, ungated and controlled, with the default and a pinned 4.3 policy."""
    return [
        abi_probe("4.3", False, events=events),
        abi_probe("4.14", False, events=events),
        abi_probe("4.14", True, events=events),
        abi_probe("4.14", True, legacy_policy("4.3"), events=events),
        abi_probe("4.14", True, AbiPolicy(frozenset({"evtchn_fifo"})), events=events),
    ]
