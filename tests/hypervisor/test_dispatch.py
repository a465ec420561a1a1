"""spec/evtchn.md §1: hypercall entry, sub-op numbers, copy-in/copy-back, the compat hypercall; gating (DESIGN.md
decision 2) and garbage arguments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import (
    DOMID_SELF,
    HYPERVISOR_event_channel_op,
    HYPERVISOR_event_channel_op_compat,
    HYPERVISOR_hvm_op,
)
from xenabi.hypervisor import Hypervisor

from ..conftest import ev, new_domu

EC, COMPAT, HVMOP = HYPERVISOR_event_channel_op, HYPERVISOR_event_channel_op_compat, HYPERVISOR_hvm_op


@pytest.mark.parametrize("cmd", [15, 16, 100, 2**31])
def test_section1_unknown_subop_is_enosys(hv: Hypervisor, cmd: int) -> None:
    assert hv.hypercall(0, EC, cmd, E.Send(1)) == -errno.ENOSYS
    assert hv.hypercall_raw(0, EC, cmd, b"\0" * 32)[0] == -errno.ENOSYS


def test_unknown_hypercall_and_unknown_hvmop_are_enosys(hv: Hypervisor) -> None:
    assert hv.hypercall(0, 99, 0, E.Send(1)) == -errno.ENOSYS
    assert hv.hypercall(0, HVMOP, 77, E.Send(1)) == -errno.ENOSYS


def test_section1_short_buffer_is_efault(hv: Hypervisor) -> None:
    for cmd in E.EvtchnOp:
        size = E.ARG_STRUCTS[cmd].size()
        rc, out = hv.hypercall_raw(0, EC, cmd, b"\xff" * (size - 1))
        assert (rc, out) == (-errno.EFAULT, b"\xff" * (size - 1))


def test_section1_out_fields_copied_back_only_on_success(hv: Hypervisor) -> None:
    domu = new_domu(hv)
    good = E.AllocUnbound(dom=domu, remote_dom=0).pack()
    rc, out = hv.hypercall_raw(0, EC, E.EVTCHNOP_alloc_unbound, good)
    assert rc == 0 and E.AllocUnbound.unpack(out).port == 1
    bad = E.AllocUnbound(dom=999, remote_dom=0, port=0xDEAD).pack()
    assert hv.hypercall_raw(0, EC, E.EVTCHNOP_alloc_unbound, bad) == (-errno.ESRCH, bad)
    arg = E.BindVirq(virq=99, port=0xBEEF)
    assert hv.hypercall(domu, EC, E.EVTCHNOP_bind_virq, arg) == -errno.EINVAL
    assert arg.port == 0xBEEF


def test_section1_bytes_past_the_struct_are_kept(hv: Hypervisor) -> None:
    rc, out = hv.hypercall_raw(0, EC, E.EVTCHNOP_bind_ipi, E.BindIpi(vcpu=0).pack() + b"tail")
    assert rc == 0 and out.endswith(b"tail")


def test_section1_domid_self_and_nonexistent_domid(hv: Hypervisor) -> None:
    assert ev(hv, 0, "alloc_unbound", dom=DOMID_SELF, remote_dom=0)[0] == 0
    assert ev(hv, 0, "alloc_unbound", dom=4242, remote_dom=0)[0] == -errno.ESRCH


def test_section1_compat_forwards_subops_0_to_9(hv: Hypervisor) -> None:
    inner = E.AllocUnbound(dom=DOMID_SELF, remote_dom=0).pack()
    op = E.CompatEvtchnOp(cmd=E.EVTCHNOP_alloc_unbound, u=inner.ljust(24, b"\0"))
    rc, out = hv.hypercall_raw(0, COMPAT, 0, op.pack())
    assert rc == 0 and E.AllocUnbound.unpack(E.CompatEvtchnOp.unpack(out).u).port == 1
    assert hv.domain(0).chans[1].state == 2  # UNBOUND


@pytest.mark.parametrize("cmd", [10, 11, 12, 13, 14, 99])
def test_section1_compat_refuses_other_commands(hv: Hypervisor, cmd: int) -> None:
    op = E.CompatEvtchnOp(cmd=cmd)
    assert hv.hypercall(0, COMPAT, 0, op) == -errno.ENOSYS
    assert hv.hypercall_raw(0, COMPAT, 0, op.pack()[:27])[0] == -errno.EFAULT  # copied in whole first


def test_wrong_struct_type_or_garbage_fields_is_efault(hv: Hypervisor) -> None:
    assert hv.hypercall(0, EC, E.EVTCHNOP_send, E.Close(1)) == -errno.EFAULT
    assert hv.hypercall(0, EC, E.EVTCHNOP_send, "port 1") == -errno.EFAULT
    assert hv.hypercall(0, EC, E.EVTCHNOP_send, E.Send(port="one")) == -errno.EFAULT
    assert hv.hypercall_raw(0, EC, E.EVTCHNOP_send, None) == (-errno.EFAULT, b"")  # type: ignore[arg-type]


def test_unknown_caller_is_esrch(hv: Hypervisor) -> None:
    assert hv.hypercall(77, EC, E.EVTCHNOP_send, E.Send(1)) == -errno.ESRCH


@pytest.mark.parametrize("cmd", [E.EVTCHNOP_init_control, E.EVTCHNOP_expand_array, E.EVTCHNOP_set_priority])
def test_gating_hidden_fifo_ops_are_enosys_before_copy_in(cmd: int) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    domu = new_domu(hv, "hvm", "evtchn_upcall")
    assert hv.hypercall_raw(domu, EC, cmd, b"")[0] == -errno.ENOSYS
    assert hv.hypercall(domu, EC, cmd, E.ARG_STRUCTS[cmd]()) == -errno.ENOSYS


def test_gating_release_before_the_feature_is_enosys_everywhere() -> None:
    for control in (True, False):
        hv = Hypervisor("4.3", abi_control=control)
        domu = new_domu(hv, "hvm", *())
        assert hv.hypercall(domu, EC, E.EVTCHNOP_init_control, E.InitControl(control_gfn=10)) == -errno.ENOSYS
        upcall = EvtchnUpcallVector(vcpu=0, vector=0xF3)
        assert hv.hypercall(domu, HVMOP, HVMOP_set_evtchn_upcall_vector, upcall) == -errno.ENOSYS


@given(cmd=st.integers(0, 2**32 - 1), data=st.binary(max_size=64), caller=st.sampled_from([0, 1, 2, 9]))
def test_garbage_never_raises(cmd: int, data: bytes, caller: int) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    new_domu(hv)
    for op in (EC, COMPAT, HVMOP, 42, 7):
        rc, out = hv.hypercall_raw(caller, op, cmd, data)
        assert rc <= 0 and isinstance(out, bytes)


def test_section1_compat_takes_its_command_from_the_struct_not_the_cmd_argument(hv: Hypervisor) -> None:
    op = E.CompatEvtchnOp(cmd=E.EVTCHNOP_bind_ipi, u=E.BindIpi(vcpu=0).pack().ljust(24, b"\0"))
    assert hv.hypercall(0, COMPAT, 12345, op) == 0
    assert E.BindIpi.unpack(op.u).port == 1
