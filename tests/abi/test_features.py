"""DESIGN.md decision 1: the feature registry rows, and the registry's own rules."""

from __future__ import annotations

import pytest

from xenabi.abi.domctl import GuestType
from xenabi.abi.evtchn import EVTCHNOP_expand_array, EVTCHNOP_init_control, EVTCHNOP_set_priority
from xenabi.abi.features import REGISTRY, AbiFeature, FeatureRegistry
from xenabi.abi.hvm import HVMOP_set_evtchn_upcall_vector


def test_evtchn_fifo_row() -> None:
    row = REGISTRY["evtchn_fifo"]
    assert (row.bit, row.since, row.cdf_bit, row.cdf_flag) == (0, (4, 4), 7, 1 << 7)
    assert row.gates == {(32, EVTCHNOP_init_control), (32, EVTCHNOP_expand_array), (32, EVTCHNOP_set_priority)}
    assert row.guest_types == set(GuestType)


def test_evtchn_upcall_row() -> None:
    row = REGISTRY["evtchn_upcall"]
    assert (row.bit, row.since, row.cdf_bit) == (1, (4, 6), 8)
    assert row.gates == {(34, HVMOP_set_evtchn_upcall_vector)}
    # DESIGN decision 1 (corrected in issue 12): HVM containers, PVH included, as v5's is_hvm_domain check
    assert row.guest_types == {GuestType.HVM, GuestType.PVH}


def test_gnttab_v2_row_gates_one_argument_value() -> None:
    """Decision 10: set_version's version 2 only; no create flag (bits 6-8 went to Xen's own flags)."""
    row = REGISTRY["gnttab_v2"]
    assert (row.bit, row.since, row.cdf_bit, row.cdf_flag, row.mask_flag) == (2, (4, 0), None, 0, 1 << 2)
    assert (row.gates, row.late_gates, row.value_gates) == (frozenset(), frozenset(), {(20, 8, 2)})


def test_vcpu_phys_area_row_answers_after_the_vcpuid_check() -> None:
    """4.18 (d5df44275e, 60e544a8c5; XENFEAT 18/19 by 48a3fd1432): ops 14 and 15, late-gated."""
    row = REGISTRY["vcpu_phys_area"]
    assert (row.bit, row.since, row.cdf_bit, row.xenfeat_bits) == (3, (4, 18), None, (18, 19))
    assert (row.gates, row.late_gates) == (frozenset(), {(24, 14), (24, 15)})
    assert row.guest_types == set(GuestType)


def test_xenver_varbuf_row() -> None:
    """4.20 (e3bb1b6525): xen_version sub-ops 11-14, gated at entry."""
    row = REGISTRY["xenver_varbuf"]
    assert (row.bit, row.since, row.cdf_bit) == (4, (4, 20), None)
    assert row.gates == {(17, 11), (17, 12), (17, 13), (17, 14)}


def test_registry_order_and_lookup() -> None:
    assert REGISTRY.names() == ("evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area", "xenver_varbuf")
    assert REGISTRY.gating(32, EVTCHNOP_set_priority) is REGISTRY["evtchn_fifo"]
    assert REGISTRY.gating(24, 15) is REGISTRY["vcpu_phys_area"]
    assert REGISTRY.gating(32, 4) is None
    assert REGISTRY.gating(20, 8) is None  # only one value of set_version is the feature's
    assert REGISTRY.cdf_mask() == (1 << 7) | (1 << 8)
    assert REGISTRY.mask() == 0b11111


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"name": "evtchn_fifo", "bit": 9, "cdf_bit": 20}, "name"),
        ({"bit": 0, "cdf_bit": 20}, "bit"),
        ({"cdf_bit": 7}, "cdf_bit"),
        ({"cdf_bit": 20, "gates": frozenset({(32, EVTCHNOP_init_control)})}, "gates"),
        ({"cdf_bit": None, "late_gates": frozenset({(24, 14)})}, "gates"),
        ({"cdf_bit": None, "value_gates": frozenset({(20, 8, 2)})}, "gates"),
        ({"cdf_bit": 0}, "CDF bit 0"),
    ],
)
def test_register_refuses_collisions(change: dict, what: str) -> None:
    registry = FeatureRegistry(tuple(REGISTRY))
    fields = dict(
        name="test_feature", bit=5, since=(4, 3), gates=frozenset({(32, 99)}), guest_types=frozenset(GuestType)
    )
    fields |= {"cdf_bit": 20} | change
    with pytest.raises(ValueError, match=what):
        registry.register(AbiFeature(**fields))
