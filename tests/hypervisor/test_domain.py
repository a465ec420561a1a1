"""Domain creation (sanitise_domain_config + the registry's feature flags), dom0, lifecycle, memory layout.

DESIGN.md decisions 3-4; spec/evtchn.md §2.4 (initialisation) and §6 (limits).
"""

from __future__ import annotations

import pytest

from xenabi.abi import errno
from xenabi.abi.domctl import (
    CreateDomain,
    GuestType,
    XEN_DOMCTL_CDF_evtchn_fifo,
    XEN_DOMCTL_CDF_evtchn_upcall,
    XEN_DOMCTL_CDF_hap,
    XEN_DOMCTL_CDF_hvm,
)
from xenabi.hypervisor import ChanState, Hypervisor, XenError
from xenabi.hypervisor.domain import SHARED_INFO_GFN, Lifecycle

FIFO, UPCALL = XEN_DOMCTL_CDF_evtchn_fifo, XEN_DOMCTL_CDF_evtchn_upcall


def refused(hv: Hypervisor, config: CreateDomain, field: str, code: int = errno.EINVAL) -> XenError:
    before = set(hv.domains)
    with pytest.raises(XenError) as info:
        hv.create_domain(config, memory_mb=4)
    assert (info.value.errno, info.value.field) == (code, field)
    assert set(hv.domains) == before  # nothing created
    return info.value


def test_dom0_is_privileged_pv_domid_0(hv: Hypervisor) -> None:
    dom0 = hv.domain(0)
    assert dom0.privileged and dom0.guest_type is GuestType.PV
    assert dom0.max_evtchn_port == 0x7FFFFFFF  # -1 clamped to INT_MAX (§2.3)


@pytest.mark.parametrize(
    ("release", "control", "features"),
    [
        ("4.14", True, {"evtchn_fifo", "gnttab_v2"}),
        ("4.3", True, {"gnttab_v2"}),
        ("4.14", False, {"evtchn_fifo", "gnttab_v2"}),
        ("4.22", True, {"evtchn_fifo", "gnttab_v2", "vcpu_phys_area", "xenver_varbuf"}),
    ],
)
def test_dom0_gets_every_implemented_feature_that_applies_to_it(release, control, features) -> None:
    assert Hypervisor(release, control).domain(0).policy.features == features


def test_unknown_flag(hv: Hypervisor) -> None:
    refused(hv, CreateDomain(flags=1 << 20), "flags")


def test_hap_without_hvm(hv: Hypervisor) -> None:
    refused(hv, CreateDomain(flags=XEN_DOMCTL_CDF_hap, emulation_flags=0), "flags")


def test_max_vcpus_zero(hv: Hypervisor) -> None:
    refused(hv, CreateDomain.for_type("hvm", max_vcpus=0), "max_vcpus")


def test_feature_flag_the_release_does_not_implement() -> None:
    error = refused(Hypervisor("4.3", True), CreateDomain.for_type("hvm", features=FIFO), "flags")
    assert "4.3.4 does not implement evtchn_fifo" in str(error)
    refused(Hypervisor("4.5", True), CreateDomain.for_type("hvm", features=UPCALL), "flags")


def test_feature_flag_on_a_host_without_abi_control() -> None:
    error = refused(Hypervisor("4.14", False), CreateDomain.for_type("hvm", features=FIFO), "flags")
    assert "no ABI control" in str(error)


@pytest.mark.parametrize("kind", ["pv"])
def test_evtchn_upcall_for_a_non_hvm_guest(hv: Hypervisor, kind: str) -> None:
    error = refused(hv, CreateDomain.for_type(kind, features=UPCALL), "flags")
    assert "does not apply" in str(error)


def test_emulation_flags_must_fit_the_type(hv: Hypervisor) -> None:
    refused(hv, CreateDomain(flags=XEN_DOMCTL_CDF_hvm, emulation_flags=0x3), "emulation_flags", errno.EOPNOTSUPP)


@pytest.mark.parametrize(
    ("field", "value"), [("max_grant_frames", 0), ("max_grant_frames", 65), ("max_maptrack_frames", 1025)]
)
def test_grant_limits(hv: Hypervisor, field: str, value: int) -> None:
    refused(hv, CreateDomain.for_type("hvm", **{field: value}), field)


def test_create_domain_rejects_garbage(hv: Hypervisor) -> None:
    with pytest.raises(XenError):
        hv.create_domain("not a config")  # type: ignore[arg-type]
    with pytest.raises(XenError) as info:
        hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=0)
    assert info.value.field == "memory_mb"


def test_policy_from_create_flags_on_a_controlled_host(hv: Hypervisor) -> None:
    domid = hv.create_domain(CreateDomain.for_type("hvm", features=FIFO, max_evtchn_port=4000))
    policy = hv.domain(domid).policy
    assert policy.features == {"evtchn_fifo"} and policy.max_evtchn_port == 4000


def test_uncontrolled_host_exposes_everything_it_implements() -> None:
    hv = Hypervisor("4.14", abi_control=False)
    hvm = hv.domain(hv.create_domain(CreateDomain.for_type("hvm")))
    pv = hv.domain(hv.create_domain(CreateDomain.for_type("pv")))
    assert hvm.policy.features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}
    assert pv.policy.features == {"evtchn_fifo", "gnttab_v2"}
    # only what 4.14 does not implement stays hidden: those operations do not exist there
    for d in (hvm, pv):
        assert d.hidden_ops == {(17, 11), (17, 12), (17, 13), (17, 14)}  # xenver_varbuf (4.20)
        assert d.hidden_late == {(24, 14), (24, 15)}  # vcpu_phys_area (4.18)


def test_spec_2_4_new_domain_is_2l_with_port_0_reserved(hv: Hypervisor) -> None:
    d = hv.domain(hv.create_domain(CreateDomain.for_type("hvm")))
    assert d.evtchn_abi == "2l"
    assert d.chans[0].state == ChanState.RESERVED
    assert (d.valid_evtchns, d.active_evtchns) == (64, 0)


def test_lifecycle_counts_pauses(hv: Hypervisor) -> None:
    domid = hv.create_domain(CreateDomain.for_type("hvm"))
    d = hv.domain(domid)
    assert d.lifecycle is Lifecycle.CREATED and d.controller_pause_count == 1
    hv.pause(domid)
    hv.unpause(domid)
    assert not d.creation_finished
    hv.unpause(domid)
    assert d.lifecycle is Lifecycle.RUNNING and d.creation_finished
    with pytest.raises(XenError) as info:
        hv.unpause(domid)
    assert info.value.errno == errno.EINVAL
    hv.pause(domid)
    assert d.lifecycle is Lifecycle.PAUSED


def test_pause_count_limit_is_255(hv: Hypervisor) -> None:
    domid = hv.create_domain(CreateDomain.for_type("hvm"))
    for _ in range(254):
        hv.pause(domid)
    with pytest.raises(XenError) as info:
        hv.pause(domid)
    assert info.value.errno == errno.EUSERS
    assert hv.domain(domid).controller_pause_count == 255


def test_destroy_removes_the_domain_and_dom0_is_not_destroyable(hv: Hypervisor) -> None:
    domid = hv.create_domain(CreateDomain.for_type("hvm"))
    hv.destroy_domain(domid)
    assert domid not in hv.domains
    with pytest.raises(XenError) as info:
        hv.domain(domid)
    assert info.value.errno == errno.ESRCH
    with pytest.raises(XenError):
        hv.destroy_domain(0)


def test_memory_is_one_buffer_of_4k_pages(hv: Hypervisor) -> None:
    d = hv.domain(hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=2))
    assert len(d.memory) == 2 << 20 and d.nr_pages == 512
    assert d.page(SHARED_INFO_GFN).nbytes == 4096
    assert not d.is_guest_ram(SHARED_INFO_GFN) and d.is_guest_ram(10) and not d.is_guest_ram(512)


def test_send_virq_only_to_a_bound_virq_of_a_running_domain() -> None:
    from xenabi.abi.xen import VIRQ_TIMER
    from xenabi.hypervisor import Hypervisor

    from ..conftest import ev, new_domu

    hv = Hypervisor("4.14", abi_control=True)
    domu = new_domu(hv, "hvm", max_vcpus=2)
    assert not hv.send_virq(domu, VIRQ_TIMER, 0)  # not bound
    assert ev(hv, domu, "bind_virq", virq=VIRQ_TIMER, vcpu=1)[0] == 0
    assert hv.send_virq(domu, VIRQ_TIMER, 1) and not hv.send_virq(domu, 999, 1) and not hv.send_virq(domu, 0, 7)
    hv.shutdown_domain(domu, "crash")
    assert not hv.send_virq(domu, VIRQ_TIMER, 1) and hv.domain(domu).lifecycle.value == "shut down"
