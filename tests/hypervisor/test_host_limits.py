"""Issue 11: what a host refuses before anything happens: memory it does not have, hypercalls from domains that
have never run, argument fields that are not C integers; and RAM given back the moment a domain is destroyed."""

from __future__ import annotations

import pytest

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op
from xenabi.errors import GuestNotRunning
from xenabi.hypervisor import Hypervisor, XenError
from xenabi.hypervisor.hypervisor import machine_memory_mb

from ..conftest import ev, interdomain, new_domu

FIFO_LEAF = "/domain/{}/abi-features/evtchn_fifo"
UPCALL_LEAF = "/domain/{}/abi-features/evtchn_upcall"


# --- host memory ---------------------------------------------------------------------------------------------
def test_a_host_has_the_machines_memory_by_default() -> None:
    hv = Hypervisor("4.14")
    assert hv.memory_mb == machine_memory_mb() > 0
    assert hv.free_memory_mb == hv.memory_mb - hv.domain(0).memory_mb


def test_a_domain_that_does_not_fit_is_refused_with_enomem_before_allocation() -> None:
    hv = Hypervisor("4.14", memory_mb=64)  # dom0 takes 16
    with pytest.raises(XenError) as refused:
        hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=49)
    assert refused.value.errno == errno.ENOMEM and refused.value.field == "memory_mb"
    assert "49 MiB asked, 48 MiB free" in str(refused.value)
    assert list(hv.domains) == [0]
    domid = hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=48)  # exactly full
    assert hv.free_memory_mb == 0
    hv.destroy_domain(domid)
    assert hv.free_memory_mb == 48


def test_a_claim_far_beyond_the_machine_is_refused_not_a_memory_error() -> None:
    hv = Hypervisor("4.14")
    with pytest.raises(XenError) as refused:
        hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=64 << 30)
    assert refused.value.errno == errno.ENOMEM


@pytest.mark.parametrize("memory_mb", [0, 8, -1, True, 2.5])
def test_a_host_smaller_than_dom0_is_refused(memory_mb: object) -> None:
    with pytest.raises(XenError) as refused:
        Hypervisor("4.14", memory_mb=memory_mb)  # type: ignore[arg-type]
    assert refused.value.field == "memory_mb"


def test_guest_ram_reads_zero_and_costs_nothing_until_touched() -> None:
    hv = Hypervisor("4.14", memory_mb=8 << 10)
    d = hv.domain(new_domu(hv, memory_mb=4 << 10))  # 4 GiB of RAM
    assert len(d.memory) == 4 << 30 and d.memory[123 << 20] == 0
    d.memory[(4 << 30) - 1] = 7
    assert d.memory[(4 << 30) - 1] == 7


def test_destroy_gives_the_ram_back_even_with_references_left() -> None:
    hv = Hypervisor("4.14")
    domid = new_domu(hv, memory_mb=4)
    d = hv.domain(domid)
    d.memory[0:4] = b"live"
    hv.destroy_domain(domid)
    assert d.memory[0:4] == b"\0\0\0\0"  # the mapping stays valid, its pages are gone


# --- a domain that has never run issues no hypercall ---------------------------------------------------------
def test_a_never_run_domain_cannot_issue_hypercalls() -> None:
    hv = Hypervisor("4.14")
    domid = new_domu(hv, "hvm", start=False)
    with pytest.raises(GuestNotRunning) as refused:
        ev(hv, domid, "init_control", control_gfn=100, offset=0, vcpu=0)
    assert refused.value.domid == domid
    with pytest.raises(GuestNotRunning):
        hv.hypercall_raw(domid, HYPERVISOR_event_channel_op, E.EVTCHNOP_bind_ipi, bytes(8))
    assert hv.domain(domid).evtchn_abi == "2l"
    assert hv.hypercall(4242, HYPERVISOR_event_channel_op, E.EVTCHNOP_bind_ipi, E.BindIpi()) == -errno.ESRCH


def test_hidden_after_hypfs_write_means_never_used() -> None:
    """The attack from issue 11: a domain switches to FIFO and sets a vector before it runs, then dom0 hides both
    features through hypfs. Now the domain cannot act before it runs, so hiding leaves nothing in use."""
    hv = Hypervisor("4.14")
    domid = new_domu(hv, "hvm", start=False)
    with pytest.raises(GuestNotRunning):
        hv.hypercall(domid, HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, EvtchnUpcallVector(0, 0xF3))
    assert hv.hypfs.write(0, FIFO_LEAF.format(domid), b"\0") == 0
    assert hv.hypfs.write(0, UPCALL_LEAF.format(domid), b"\0") == 0
    hv.unpause(domid)
    d = hv.domain(domid)
    assert d.evtchn_abi == "2l" and all(v.upcall_vector == 0 for v in d.vcpus)
    assert ev(hv, domid, "init_control", control_gfn=100, offset=0, vcpu=0)[0] == -errno.ENOSYS
    # paused again after running is still a domain that has run (pause is not "never run")
    hv.pause(domid)
    assert ev(hv, domid, "bind_ipi", vcpu=0)[0] == 0


# --- typed arguments are copied in as C integers ---------------------------------------------------------------
@pytest.mark.parametrize(
    "arg",
    [
        E.BindVcpu(1, 1.5),  # type: ignore[arg-type]
        E.BindVcpu("1", 0),  # type: ignore[arg-type]
        E.BindVcpu(1, -1),
        E.BindVcpu(1, 1 << 32),
        E.BindVcpu(None, 0),  # type: ignore[arg-type]
    ],
    ids=["float", "str", "negative", "too-wide", "none"],
)
def test_typed_fields_that_are_not_c_integers_are_efault(arg: E.BindVcpu) -> None:
    hv = Hypervisor("4.14")
    a = new_domu(hv, max_vcpus=2)
    b = new_domu(hv)
    port, _ = interdomain(hv, a, b)
    if arg.port == 1:
        arg.port = port
    assert hv.hypercall(a, HYPERVISOR_event_channel_op, E.EVTCHNOP_bind_vcpu, arg) == -errno.EFAULT
    assert hv.domain(a).chans[port].notify_vcpu_id == 0
    # the channel is untouched, so another domain's raw hypercalls still work on it
    rc, _ = hv.hypercall_raw(b, HYPERVISOR_event_channel_op, E.EVTCHNOP_send, port.to_bytes(4, "little"))
    assert rc == 0
