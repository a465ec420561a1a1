"""Toolstack.create: admission before creation (decision 8), pinning (decision 5), defaults (decision 6)."""

from __future__ import annotations

import pytest

from xenabi.errors import AbiIncompatible
from xenabi.hypervisor import Hypervisor
from xenabi.policy import RefusalKind
from xenabi.toolstack import DomainConfig, Toolstack

G = "gnttab_v2"  # every release in the table implements it


def xl(body: str = "", kind: str = "hvm") -> DomainConfig:
    return DomainConfig.from_xl(f'name = "vm"\ntype = "{kind}"\nmemory = 8\n{body}\n')


def test_controlled_host_pins_the_default() -> None:
    ts = Toolstack(Hypervisor("4.14", abi_control=True))
    domid = ts.create(xl())
    stored = ts.config(domid)
    assert stored.pinned_features == {"evtchn_fifo", "evtchn_upcall", G} == ts.hv.domain(domid).policy.features
    assert "xen_abi_features_pinned" in stored.to_xl()


def test_pinned_config_does_not_drift_on_a_newer_host() -> None:
    old = Toolstack(Hypervisor("4.5", abi_control=True))
    stored = old.config(old.create(xl()))
    assert stored.pinned_features == {"evtchn_fifo", G}
    new = Toolstack(Hypervisor("4.14", abi_control=True))
    domid = new.create(stored)
    assert new.hv.domain(domid).policy.features == {"evtchn_fifo", G}  # the v5 default would add evtchn_upcall
    assert new.config(domid).pinned_features == {"evtchn_fifo", G}


def test_legacy_toolstack_pins_nothing() -> None:
    ts = Toolstack(Hypervisor("4.14", abi_control=False))
    domid = ts.create(xl())
    assert ts.config(domid).pinned_features is None
    assert ts.hv.domain(domid).policy.features == {"evtchn_fifo", "evtchn_upcall", G}


def test_asking_an_uncontrolled_host_to_hide_is_refused_before_creation() -> None:
    hv = Hypervisor("4.14", abi_control=False)
    ts = Toolstack(hv)
    with pytest.raises(AbiIncompatible) as info:
        ts.create(xl('xen_abi_features = [ "!evtchn_fifo" ]'))
    assert [(r.feature, r.kind) for r in info.value.reasons] == [("evtchn_fifo", RefusalKind.WOULD_APPEAR)]
    assert list(hv.domains) == [0] and ts.configs == {}


def test_asking_for_an_unimplemented_feature_is_refused() -> None:
    hv = Hypervisor("4.5", abi_control=True)
    with pytest.raises(AbiIncompatible) as info:
        Toolstack(hv).create(xl('xen_abi_features = [ "evtchn_upcall" ]'))
    assert [(r.feature, r.kind) for r in info.value.reasons] == [("evtchn_upcall", RefusalKind.NOT_IMPLEMENTED)]
    assert "Xen 4.5.5 does not implement" in str(info.value) and list(hv.domains) == [0]


def test_pinned_policy_refused_by_an_older_host_lists_every_reason() -> None:
    stored = xl().pinned(frozenset({"evtchn_fifo", "evtchn_upcall", G}))
    hv = Hypervisor("4.3", abi_control=False)
    with pytest.raises(AbiIncompatible) as info:
        Toolstack(hv).create(stored)
    assert {r.feature for r in info.value.reasons} == {"evtchn_fifo", "evtchn_upcall"}


def test_force_overrides_and_records_it() -> None:
    hv = Hypervisor("4.3", abi_control=False)
    ts = Toolstack(hv)
    domid = ts.create(xl().pinned(frozenset({"evtchn_fifo", G})), force=True)
    assert [r.feature for r in ts.overrides[domid]] == ["evtchn_fifo"]
    assert hv.domain(domid).policy.features == {G}


def test_pool_default() -> None:
    ts = Toolstack(Hypervisor("4.14", abi_control=True), default_features=frozenset({"evtchn_fifo"}))
    assert ts.config(ts.create(xl())).pinned_features == {"evtchn_fifo"}


def test_start_unpauses_and_locks_hypfs() -> None:
    ts = Toolstack(Hypervisor("4.14", abi_control=True))
    domid = ts.create(xl(), start=True)
    assert ts.hv.domain(domid).creation_finished
    assert ts.hv.hypfs.write(0, f"/domain/{domid}/abi-features/evtchn_fifo", b"\0") == -16  # -EBUSY


def test_destroy_forgets_the_config() -> None:
    ts = Toolstack(Hypervisor("4.14", abi_control=True))
    domid = ts.create(xl())
    ts.destroy(domid)
    assert domid not in ts.configs and domid not in ts.hv.domains


@pytest.mark.parametrize(
    ("release", "control", "flags"), [("4.14", True, 1 << 7), ("4.3", True, 0), ("4.14", False, 0)]
)
def test_dom0_gets_fifo_where_it_exists_and_never_upcall(release: str, control: bool, flags: int) -> None:
    hv = Hypervisor(release, abi_control=control)
    assert hv.domain(0).config.flags == flags
    assert hv.domain(0).creation_finished  # dom0 runs from boot


def test_a_vm_that_cannot_get_its_toolstack_ports_is_not_left_behind() -> None:
    from xenabi.errors import XenError

    hv = Hypervisor("4.14", abi_control=True)
    with pytest.raises(XenError):
        Toolstack(hv).create(xl("max_event_channels = 1"))  # port 1 only: no room for the console's port
    assert list(hv.domains) == [0]


def test_a_4_16_host_without_control_hides_grant_v2_by_grant_opts() -> None:
    """Decision 10 (7379f9e10a): admission counts grant_opts as a way to hide grant v2, and the toolstack uses it;
    the guest's set_version(2) then answers -ENOSYS, as it would on a controlled host."""
    stored = xl().pinned(frozenset({"evtchn_fifo", "evtchn_upcall"}))
    with pytest.raises(AbiIncompatible) as info:
        Toolstack(Hypervisor("4.15", abi_control=False)).create(stored)
    assert [(r.feature, r.kind) for r in info.value.reasons] == [(G, RefusalKind.WOULD_APPEAR)]
    hv = Hypervisor("4.16", abi_control=False)
    domid = Toolstack(hv).create(stored)
    d = hv.domain(domid)
    assert d.config.grant_opts == 1 and d.grant_table.max_version == 1
    assert d.policy.features == {"evtchn_fifo", "evtchn_upcall"}


def test_boot_option_max_ver_1_refuses_a_vm_with_grant_v2() -> None:
    """gnttab=max-ver:1 (dc96c65ed6): no domain of the host has grant v2, so a VM pinned with it is refused."""
    hv = Hypervisor("4.14", abi_control=True, gnttab_max_version=1)
    with pytest.raises(AbiIncompatible) as info:
        Toolstack(hv).create(xl().pinned(frozenset({"evtchn_fifo", G})))
    assert [(r.feature, r.kind) for r in info.value.reasons] == [(G, RefusalKind.HOST_DISABLED)]
    assert list(hv.domains) == [0]
    domid = Toolstack(hv).create(xl())
    assert hv.domain(domid).policy.features == {"evtchn_fifo", "evtchn_upcall"}  # the default: what the host has
