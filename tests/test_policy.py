"""Releases 4.3-4.14 and AbiPolicy (DESIGN.md decisions 3, 6, 7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.domctl import GuestType
from xenabi.errors import PolicyError
from xenabi.policy import RELEASES, AbiPolicy, get_release, legacy_policy


def test_releases_4_3_to_4_14() -> None:
    assert list(RELEASES) == [f"4.{minor}" for minor in range(3, 15)]


@pytest.mark.parametrize(
    ("release", "features"),
    [
        ("4.3", set()),
        ("4.4", {"evtchn_fifo"}),
        ("4.5", {"evtchn_fifo"}),
        ("4.6", {"evtchn_fifo", "evtchn_upcall"}),
        ("4.14", {"evtchn_fifo", "evtchn_upcall"}),
    ],
)
def test_release_features(release: str, features: set[str]) -> None:
    assert get_release(release).features == features


@pytest.mark.parametrize("release", RELEASES)
def test_spec_3_13_expand_array_before_init_control_rc_per_release(release: str) -> None:
    expected = -errno.ENOSYS if get_release(release).version < (4, 8) else -errno.EOPNOTSUPP
    assert RELEASES[release].expand_array_uninit_rc == expected


def test_applicable_features_per_guest_type() -> None:
    assert get_release("4.14").applicable_features(GuestType.PV) == {"evtchn_fifo"}
    assert get_release("4.14").applicable_features(GuestType.HVM) == {"evtchn_fifo", "evtchn_upcall"}


def test_unknown_release_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"4\.99") as info:
        get_release("4.99")
    assert info.value.name == "4.99"


def test_legacy_policy_is_what_the_release_implements() -> None:
    assert legacy_policy("4.3").features == frozenset()
    assert legacy_policy("4.5").features == {"evtchn_fifo"}
    assert legacy_policy("4.10").features == {"evtchn_fifo", "evtchn_upcall"}


policies = st.builds(
    AbiPolicy,
    st.frozensets(st.sampled_from(["evtchn_fifo", "evtchn_upcall"])),
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
