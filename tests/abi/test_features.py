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


def test_registry_order_and_lookup() -> None:
    assert REGISTRY.names() == ("evtchn_fifo", "evtchn_upcall")
    assert REGISTRY.gating(32, EVTCHNOP_set_priority) is REGISTRY["evtchn_fifo"]
    assert REGISTRY.gating(32, 4) is None
    assert REGISTRY.cdf_mask() == (1 << 7) | (1 << 8)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"name": "evtchn_fifo", "bit": 9, "cdf_bit": 20}, "name"),
        ({"bit": 0, "cdf_bit": 20}, "bit"),
        ({"cdf_bit": 7}, "cdf_bit"),
        ({"cdf_bit": 20, "gates": frozenset({(32, EVTCHNOP_init_control)})}, "gates"),
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
