"""HVMOP_get_param and HVMOP_set_param (``xenabi.hypervisor.hvm``; ``hvmop_get_param``, ``hvmop_set_param``,
``hvm_allow_set_param`` read at RELEASE-4.6.0 and 4.17.0)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.hvm import (
    HVM_NR_PARAMS,
    HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_STORE_EVTCHN,
    HVMOP_get_param,
    HVMOP_set_param,
    HvmParam,
    hvm_callback_vector,
)
from xenabi.abi.xen import DOMID_SELF, HYPERVISOR_hvm_op
from xenabi.errors import NotModelled
from xenabi.hypervisor import Hypervisor

from ..conftest import new_domu


def hvm_op(hv: Hypervisor, caller: int, cmd: int, domid: int, index: int, value: int = 0) -> tuple[int, int]:
    arg = HvmParam(domid=domid, index=index, value=value)
    rc = hv.hypercall(caller, HYPERVISOR_hvm_op, cmd, arg)
    return rc, arg.value


@pytest.mark.parametrize("release", ["4.6", "4.17"])
@pytest.mark.parametrize("cmd", [HVMOP_get_param, HVMOP_set_param])
def test_check_order_index_domain_type_then_xsm(release: str, cmd: int) -> None:
    hv = Hypervisor(release)
    hvm, other, pv = new_domu(hv, "hvm"), new_domu(hv, "hvm"), new_domu(hv, "pv")
    assert hvm_op(hv, hvm, cmd, 0x7777, HVM_NR_PARAMS)[0] == -errno.EINVAL  # the index before the domain
    assert hvm_op(hv, hvm, cmd, 0x7777, HVM_PARAM_CALLBACK_IRQ)[0] == -errno.ESRCH
    assert hvm_op(hv, pv, cmd, DOMID_SELF, HVM_PARAM_CALLBACK_IRQ)[0] == -errno.EINVAL  # not an HVM container
    assert hvm_op(hv, hvm, cmd, other, HVM_PARAM_CALLBACK_IRQ)[0] == -errno.EPERM  # XSM_TARGET


def test_a_guest_sets_its_callback_and_reads_it_back() -> None:
    """``hvm_set_callback_via`` accepts any value; the param reads back as written (Linux's vector callback)."""
    hv = Hypervisor("4.17")
    domid = new_domu(hv, "hvm")
    value = hvm_callback_vector(0xF3)
    assert value == 0x02000000000000F3
    assert hvm_op(hv, domid, HVMOP_set_param, DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, value) == (0, value)
    assert hvm_op(hv, domid, HVMOP_get_param, DOMID_SELF, HVM_PARAM_CALLBACK_IRQ) == (0, value)
    assert hvm_op(hv, 0, HVMOP_get_param, domid, HVM_PARAM_CALLBACK_IRQ) == (0, value)  # the control domain too


def test_other_params_are_not_modelled_once_the_checks_pass() -> None:
    hv = Hypervisor("4.17")
    domid = new_domu(hv, "hvm")
    with pytest.raises(NotModelled, match="HVM param 2"):
        hvm_op(hv, domid, HVMOP_set_param, DOMID_SELF, HVM_PARAM_STORE_EVTCHN, 5)
    assert hv.domain(domid).hvm_params.get(HVM_PARAM_STORE_EVTCHN) != 5


@given(cmd=st.sampled_from([HVMOP_get_param, HVMOP_set_param]), data=st.binary(max_size=24))
def test_garbage_never_raises_but_for_unmodelled_params(cmd: int, data: bytes) -> None:
    hv = Hypervisor("4.17", memory_mb=64)
    domid = new_domu(hv, "hvm", memory_mb=4)
    try:
        rc, _ = hv.hypercall_raw(domid, HYPERVISOR_hvm_op, cmd, data)
    except NotModelled:
        assert cmd == HVMOP_set_param and HvmParam.unpack(data).index != HVM_PARAM_CALLBACK_IRQ
        return
    assert rc <= 0
