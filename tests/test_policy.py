"""Releases 4.3-4.14 and AbiPolicy (DESIGN.md decisions 3, 6, 7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.domctl import GuestType
from xenabi.abi.features import REGISTRY
from xenabi.errors import AbiIncompatible, PolicyError
from xenabi.policy import (
    RELEASES,
    AbiPolicy,
    RefusalKind,
    admission,
    admit,
    default_features,
    get_release,
    legacy_policy,
)


def test_releases_4_3_to_4_22() -> None:
    assert list(RELEASES) == [f"4.{minor}" for minor in range(3, 23)]


@pytest.mark.parametrize(
    ("release", "features"),
    [
        ("4.3", {"gnttab_v2"}),
        ("4.4", {"evtchn_fifo", "gnttab_v2"}),
        ("4.5", {"evtchn_fifo", "gnttab_v2"}),
        ("4.6", {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}),
        ("4.14", {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}),
        ("4.18", {"evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area"}),
        ("4.20", {"evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area", "xenver_varbuf"}),
    ],
)
def test_release_features(release: str, features: set[str]) -> None:
    assert get_release(release).features == features


@pytest.mark.parametrize("release", RELEASES)
def test_spec_3_13_expand_array_before_init_control_rc_per_release(release: str) -> None:
    expected = -errno.ENOSYS if get_release(release).version < (4, 8) else -errno.EOPNOTSUPP
    assert RELEASES[release].expand_array_uninit_rc == expected


def test_applicable_features_per_guest_type() -> None:
    assert get_release("4.14").applicable_features(GuestType.PV) == {"evtchn_fifo", "gnttab_v2"}
    assert get_release("4.14").applicable_features(GuestType.HVM) == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}


def test_unknown_release_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"4\.99") as info:
        get_release("4.99")
    assert info.value.name == "4.99"


def test_legacy_policy_is_what_the_release_implements() -> None:
    assert legacy_policy("4.3").features == {"gnttab_v2"}
    assert legacy_policy("4.5").features == {"evtchn_fifo", "gnttab_v2"}
    assert legacy_policy("4.10").features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}


policies = st.builds(
    AbiPolicy,
    st.frozensets(st.sampled_from(REGISTRY.names())),
    st.integers(0, 2**32 - 1),
    st.integers(-1, 64),
    st.integers(-1, 1024),
)


@given(policies)
def test_policy_json_round_trip(policy: AbiPolicy) -> None:
    assert AbiPolicy.from_json(policy.dumps()) == policy
    assert AbiPolicy.from_json(policy.to_json()) == policy


@given(policies, policies)
def test_level_is_common_ground(a: AbiPolicy, b: AbiPolicy) -> None:
    level = a.level(b)
    assert level.features == a.features & b.features
    assert level == b.level(a)
    added, lacked = a.diff(b)
    assert added == b.features - a.features and lacked == a.features - b.features


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ('{"features": ["evtchn_fifo", "warp_drive"]}', "warp_drive"),
        ('{"features": "evtchn_fifo"}', "list"),
        ('{"features": [], "colour": 1}', "colour"),
        ('{"max_evtchn_port": "many"}', "max_evtchn_port"),
        ("[1, 2]", "object"),
        ("{not json", "does not parse"),
    ],
)
def test_policy_json_errors_name_the_problem(doc: str, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        AbiPolicy.from_json(doc)


# --- admission (DESIGN.md decision 8): one named row per case ------------------------------------------------------
FIFO, UPCALL, GNT, PHYS = "evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area"
NI, NA, WA = RefusalKind.NOT_IMPLEMENTED, RefusalKind.NOT_APPLICABLE, RefusalKind.WOULD_APPEAR
HD = RefusalKind.HOST_DISABLED
ADMISSION_CASES = [
    # name, policy features, release, abi_control, guest type, expected refusals
    ("same-everything-controlled", {FIFO, UPCALL}, "4.14", True, "hvm", []),
    ("subset-on-controlled", {FIFO}, "4.14", True, "hvm", []),
    ("nothing-on-controlled", set(), "4.14", True, "hvm", []),
    ("exact-on-legacy", {FIFO, UPCALL, GNT}, "4.14", False, "hvm", []),
    ("legacy-4.3-vm-on-4.3", {GNT}, "4.3", False, "hvm", []),
    ("legacy-4.3-vm-on-legacy-4.14", {GNT}, "4.14", False, "hvm", [(FIFO, WA), (UPCALL, WA)]),
    ("legacy-4.3-vm-on-controlled-4.14", {GNT}, "4.14", True, "hvm", []),
    ("fifo-vm-on-4.3", {FIFO, GNT}, "4.3", False, "hvm", [(FIFO, NI)]),
    ("fifo-vm-on-controlled-4.3", {FIFO}, "4.3", True, "hvm", [(FIFO, NI)]),
    ("upcall-vm-on-4.5", {FIFO, UPCALL}, "4.5", True, "hvm", [(UPCALL, NI)]),
    ("4.5-vm-on-legacy-4.6", {FIFO, GNT}, "4.6", False, "hvm", [(UPCALL, WA)]),
    ("4.5-pv-vm-on-legacy-4.6", {FIFO, GNT}, "4.6", False, "pv", []),  # upcall does not apply to PV
    ("upcall-on-pv", {UPCALL}, "4.14", True, "pv", [(UPCALL, NA)]),
    ("both-reasons", {UPCALL, GNT}, "4.5", False, "hvm", [(FIFO, WA), (UPCALL, NI)]),
    # grant v2: no knob before 4.16, so a legacy host shows it; grant_opts hides it from 4.16 (7379f9e10a)
    ("no-grant-v2-on-legacy-4.15", {FIFO, UPCALL}, "4.15", False, "hvm", [(GNT, WA)]),
    ("no-grant-v2-on-legacy-4.16", {FIFO, UPCALL}, "4.16", False, "hvm", []),
    ("4.17-vm-on-legacy-4.18", {FIFO, UPCALL, GNT}, "4.18", False, "hvm", [(PHYS, WA)]),
    ("4.17-vm-on-controlled-4.18", {FIFO, UPCALL, GNT}, "4.18", True, "hvm", []),
    ("4.18-vm-on-4.17", {FIFO, UPCALL, GNT, PHYS}, "4.17", True, "hvm", [(PHYS, NI)]),
]


@pytest.mark.parametrize(
    ("features", "release", "control", "kind", "expected"),
    [case[1:] for case in ADMISSION_CASES],
    ids=[case[0] for case in ADMISSION_CASES],
)
def test_admission(features: set[str], release: str, control: bool, kind: str, expected: list[tuple[str, str]]) -> None:
    refusals = admission(AbiPolicy(frozenset(features)), release, control, kind)
    assert [(r.feature, r.kind) for r in refusals] == expected
    for refusal in refusals:
        assert refusal.feature in str(refusal) and refusal.to_json()["kind"] == refusal.kind.value


def test_admission_knows_the_hosts_boot_options() -> None:
    """gnttab=max-ver:1 (dc96c65ed6) hides grant v2 from every domain: a VM that has it cannot come, one that
    lacks it sees no difference even without ABI control."""
    hidden = frozenset({GNT})
    refusals = admission(AbiPolicy(frozenset({FIFO, UPCALL, GNT})), "4.14", True, "hvm", hidden)
    assert [(r.feature, r.kind) for r in refusals] == [(GNT, HD)] and "boot options" in str(refusals[0])
    assert admission(AbiPolicy(frozenset({FIFO, UPCALL})), "4.14", False, "hvm", hidden) == ()


def test_admit_raises_with_every_reason_unless_forced() -> None:
    policy = AbiPolicy(frozenset({UPCALL, GNT}))
    with pytest.raises(AbiIncompatible) as info:
        admit(policy, "4.5", False, "hvm", host="h1")
    assert len(info.value.reasons) == 2 and "h1" in str(info.value)
    assert len(admit(policy, "4.5", False, "hvm", force=True)) == 2
    assert admit(AbiPolicy(frozenset({GNT})), "4.3", False, "hvm") == ()


def test_default_features_is_the_v5_default() -> None:
    assert default_features("4.14", "hvm") == {FIFO, UPCALL, GNT}
    assert default_features("4.14", "pvh") == {FIFO, UPCALL, GNT}  # PVH is an HVM container (decision 1)
    assert default_features("4.3", "hvm") == {GNT}
