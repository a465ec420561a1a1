"""One registry, every control surface (issue 4; ``DESIGN.md`` decision 2): create flags, the CPUID leaf, hypfs
leaves and xl.cfg ``xen_abi_features`` all say the same thing, and a new registry row gets all of them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.cpuid import abi_feature_bits
from xenabi.abi.cstruct import CStruct, cstruct
from xenabi.abi.domctl import CreateDomain, GuestType
from xenabi.abi.features import ALL_GUEST_TYPES, REGISTRY, AbiFeature
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.errors import XenError
from xenabi.fingerprint import gate_answers
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.dispatch import DISPATCH
from xenabi.toolstack import DomainConfig, Toolstack

from .conftest import create_with

CPUID_ABI_LEAF = 0x40000006


def probe_gates(hv: Hypervisor, domid: int) -> dict[tuple[int, ...], bool]:
    """For every gated operation: does it answer -ENOSYS? (The instrument's probe, which changes nothing.)"""
    return {key: not answers for key, answers in gate_answers(hv, domid).items()}


def surfaces(hv: Hypervisor, domid: int) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(features by CPUID bit, features by hypfs leaf, features whose operations are not gated)."""
    cpuid = abi_feature_bits(hv.cpuid(domid, CPUID_ABI_LEAF))
    by_cpuid = frozenset(row.name for row in REGISTRY if row.bit in cpuid)
    by_hypfs = frozenset(
        row.name for row in REGISTRY if hv.hypfs.read(0, f"/domain/{domid}/abi-features/{row.name}")[1][12:] == b"\1"
    )
    gated = probe_gates(hv, domid)
    by_gates = frozenset(row.name for row in REGISTRY
                         if not any(gated[key] for key in (*row.gates, *row.late_gates, *row.value_gates)))  # fmt: skip
    return by_cpuid, by_hypfs, by_gates


SURFACE_HOSTS = ("4.14", "4.22")  # the series' flags at their own bits; moved off Xen's, with every row implemented
applicable_subsets = st.tuples(st.sampled_from(SURFACE_HOSTS), st.sampled_from(list(GuestType))).flatmap(
    lambda case: st.tuples(
        st.just(case),
        st.sets(st.sampled_from(sorted(Hypervisor(case[0]).release.applicable_features(case[1])))),
    )
)


@given(applicable_subsets)
def test_create_flags_hypfs_and_xl_make_the_same_domain(case: tuple[tuple[str, GuestType], set[str]]) -> None:
    (release, kind), wanted = case
    features = frozenset(wanted)
    hv = Hypervisor(release, abi_control=True)
    # 1. the create struct: the series' flags where this release puts them, and the abi_features mask
    by_flags = hv.create_domain(create_with(hv, kind, features), memory_mb=4)
    # 2. hypfs, before the first unpause
    by_hypfs = hv.create_domain(CreateDomain.for_type(kind), memory_mb=4)
    for row in REGISTRY:
        if row.applies_to(kind) and hv.release.implements(row):
            value = b"\1" if row.name in features else b"\0"
            assert hv.hypfs.write(0, f"/domain/{by_hypfs}/abi-features/{row.name}", value) == 0
    # 3. xl.cfg through the toolstack
    entries = ", ".join(f'"{name}"' if name in features else f'"!{name}"' for name in sorted(
        hv.release.applicable_features(kind)))  # fmt: skip
    cfg = DomainConfig.from_xl(f'name = "vm"\ntype = "{kind.value}"\nmemory = 4\nxen_abi_features = [ {entries} ]\n')
    by_xl = Toolstack(hv).create(cfg)
    for domid in (by_flags, by_hypfs, by_xl):
        hv.unpause(domid)  # the guests run: only now can they probe the gated operations
    domains = [hv.domain(domid) for domid in (by_flags, by_hypfs, by_xl)]
    # the same domain but for its handle: the toolstack gave the xl one a UUID (issue 19), the others have none
    assert len({(replace(d.config, handle=bytes(16)), d.policy, d.hidden_ops) for d in domains}) == 1
    assert domains[0].policy.features == features
    for domid in (by_flags, by_hypfs, by_xl):
        assert surfaces(hv, domid) == (features, features, features)


@pytest.mark.parametrize("release", ["4.3", "4.14", "4.18", "4.22"])
def test_uncontrolled_host_exposes_everything_it_implements(release: str) -> None:
    hv = Hypervisor(release, abi_control=False)
    domid = hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=4)
    hv.unpause(domid)
    hidden = probe_gates(hv, domid)
    for row in REGISTRY:  # hidden exactly where the release predates the feature
        for key in (*row.gates, *row.late_gates, *row.value_gates):
            assert hidden[key] == (not hv.release.implements(row)), (row.name, key)


# --- scalability: a third feature, added through the public API only ------------------------------------------
EVTCHNOP_test_only = 99


@cstruct("I4x", out=("answer",))
class ProbeArg(CStruct):
    answer: int = 0


def probe_handler(hv: Hypervisor, cur: object, arg: ProbeArg) -> int:
    arg.answer = 42
    return 0


TEST_FEATURE = AbiFeature(
    name="test_only",
    bit=9,
    since=(4, 10),
    gates=frozenset({(HYPERVISOR_event_channel_op, EVTCHNOP_test_only)}),
    guest_types=ALL_GUEST_TYPES,
    cdf_bit=9,
    summary="a feature that exists only in this test",
)


@pytest.fixture
def third_feature() -> Iterator[AbiFeature]:
    DISPATCH.register(HYPERVISOR_event_channel_op, EVTCHNOP_test_only, ProbeArg, probe_handler)
    REGISTRY.register(TEST_FEATURE)
    try:
        yield TEST_FEATURE
    finally:
        REGISTRY.unregister(TEST_FEATURE.name)
        DISPATCH.unregister(HYPERVISOR_event_channel_op, EVTCHNOP_test_only)


def test_a_new_registry_row_gets_every_surface(third_feature: AbiFeature) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    flag = 1 << 9
    with_it = hv.create_domain(CreateDomain.for_type("pv", features=flag), memory_mb=4)
    without = hv.create_domain(CreateDomain.for_type("pv"), memory_mb=4)
    later = hv.create_domain(CreateDomain.for_type("pv"), memory_mb=4)  # its feature set is written through hypfs
    hv.unpause(with_it)
    hv.unpause(without)
    # gated: -ENOSYS without, the handler with
    arg = ProbeArg()
    assert hv.hypercall(without, HYPERVISOR_event_channel_op, EVTCHNOP_test_only, arg) == -errno.ENOSYS
    assert arg.answer == 0
    assert hv.hypercall(with_it, HYPERVISOR_event_channel_op, EVTCHNOP_test_only, arg) == 0 and arg.answer == 42
    # create flag: known where implemented, refused where not
    assert hv.known_cdf_mask() & flag
    with pytest.raises(XenError):
        Hypervisor("4.9", abi_control=True).create_domain(CreateDomain.for_type("pv", features=flag))
    # CPUID bit 9, its registry bit
    assert 9 in abi_feature_bits(hv.cpuid(with_it, CPUID_ABI_LEAF))
    assert 9 not in abi_feature_bits(hv.cpuid(without, CPUID_ABI_LEAF))
    # the abi_features mask names it too
    by_mask = hv.create_domain(CreateDomain.for_type("pv", abi_features=1 << 9), memory_mb=4)
    assert "test_only" in hv.domain(by_mask).policy.features
    # hypfs leaf, writable before the first unpause
    leaf = f"/domain/{later}/abi-features/test_only"
    assert hv.hypfs.read(0, leaf)[1][12:] == b"\0"
    assert hv.hypfs.write(0, leaf, b"\1") == 0
    hv.unpause(later)
    assert hv.hypercall(later, HYPERVISOR_event_channel_op, EVTCHNOP_test_only, ProbeArg()) == 0
    # xl.cfg name, and the default of a brand-new VM includes it on a release that implements it
    ts = Toolstack(hv)
    off = ts.create(DomainConfig.from_xl('name = "a"\nmemory = 4\nxen_abi_features = [ "!test_only" ]\n'))
    assert "test_only" not in hv.domain(off).policy.features
    on = ts.create(DomainConfig.from_xl('name = "b"\nmemory = 4\n'))
    assert "test_only" in hv.domain(on).policy.features
    assert "test_only" in ts.config(on).pinned_features  # type: ignore[operator]
    # legacy hosts: the release implements it from 4.10, so an old host never shows it
    assert "test_only" not in Hypervisor("4.9", abi_control=False).release.features


def test_the_registry_is_back_to_its_rows() -> None:
    assert REGISTRY.names() == ("evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area", "xenver_varbuf")
