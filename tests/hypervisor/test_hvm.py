"""HVMOP_set_evtchn_upcall_vector (spec/abi-control.md §1.3; xen/arch/x86/hvm/hvm.c) and per-vCPU delivery."""

from __future__ import annotations

from xenabi.abi import errno
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERVISOR_hvm_op
from xenabi.hypervisor import Hypervisor, UpcallVia

from ..conftest import ev, new_domu, port_of


def set_vector(hv: Hypervisor, domid: int, vcpu: int, vector: int) -> int:
    arg = EvtchnUpcallVector(vcpu=vcpu, vector=vector)
    return hv.hypercall(domid, HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, arg)


def test_check_order(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    assert set_vector(hv, a, 5, 0x0F) == -errno.EINVAL  # vector before vCPU
    assert set_vector(hv, a, 5, 0xF3) == -errno.ENOENT
    assert set_vector(hv, a, 1, 0xF3) == 0


def test_non_hvm_is_einval_before_copy_in_on_an_uncontrolled_host() -> None:
    hv = Hypervisor("4.14", abi_control=False)
    pv = new_domu(hv, "pv")
    assert hv.hypercall_raw(pv, HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, b"")[0] == -errno.EINVAL
    pvh = new_domu(hv, "pvh")  # an HVM container: Xen accepts it when nothing hides the op
    assert set_vector(hv, pvh, 0, 0xF3) == 0


def test_hidden_for_pv_on_a_controlled_host_and_available_to_pvh(hv: Hypervisor) -> None:
    assert set_vector(hv, new_domu(hv, "pv"), 0, 0xF3) == -errno.ENOSYS
    assert set_vector(hv, new_domu(hv, "pvh"), 0, 0xF3) == 0  # an HVM container (DESIGN decision 1)
    assert set_vector(hv, new_domu(hv, "pvh", "evtchn_fifo"), 0, 0xF3) == -errno.ENOSYS  # hidden


def test_vector_delivery_per_vcpu(hv: Hypervisor) -> None:
    a = new_domu(hv, max_vcpus=2)
    assert set_vector(hv, a, 1, 0xF3) == 0
    ipis = [port_of(hv, a, "bind_ipi", vcpu=v) for v in (0, 1)]
    for port in ipis:
        ev(hv, a, "send", port=port)
    d = hv.domain(a)
    assert d.vcpus[0].upcalls[-1].via is UpcallVia.DOMAIN_CALLBACK
    assert d.vcpus[1].upcalls[-1].via is UpcallVia.VCPU_VECTOR and d.vcpus[1].upcalls[-1].vector == 0xF3
