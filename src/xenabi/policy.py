"""``AbiPolicy``, the set of ABI features (plus limits) a domain is given, and admission.

A release (``xenabi.releases``, re-exported here) implements every registry feature whose ``since`` it has
reached; its other guest-visible differences are fields of the release table.
``DESIGN.md`` decisions 3, 6 and 7: a host is a release plus ``abi_control``; the legacy policy of a release is
exactly what it implements. Decision 8, admission, is :func:`admission`: the one implementation that the toolstack
(create, restore, migrate) and the fleet planner call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from xenabi.abi.domctl import GuestType
from xenabi.abi.features import REGISTRY
from xenabi.errors import AbiIncompatible, PolicyError
from xenabi.releases import RELEASES, Release, get_release

__all__ = ["RELEASES", "AbiPolicy", "Refusal", "RefusalKind", "Release", "admission", "get_release"]


@dataclass(frozen=True, slots=True)
class AbiPolicy:
    """The guest-visible ABI of a domain: its features and its event channel and grant limits."""

    features: frozenset[str] = field(default_factory=frozenset)
    max_evtchn_port: int = 1023
    max_grant_frames: int = -1
    max_maptrack_frames: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", frozenset(self.features))
        unknown = sorted(self.features - set(REGISTRY.names()))
        if unknown:
            raise PolicyError(f"unknown ABI feature {unknown[0]!r}", name=unknown[0])

    def level(self, other: AbiPolicy) -> AbiPolicy:
        """The richest policy both admit: common features, the smaller limits."""
        return AbiPolicy(
            self.features & other.features,
            min(self.max_evtchn_port, other.max_evtchn_port),
            _min_limit(self.max_grant_frames, other.max_grant_frames),
            _min_limit(self.max_maptrack_frames, other.max_maptrack_frames),
        )

    def diff(self, other: AbiPolicy) -> tuple[frozenset[str], frozenset[str]]:
        """(features ``other`` adds, features ``other`` lacks) relative to this policy."""
        return other.features - self.features, self.features - other.features

    def to_json(self) -> dict[str, object]:
        return {
            "features": sorted(self.features, key=lambda name: REGISTRY[name].bit),
            "max_evtchn_port": self.max_evtchn_port,
            "max_grant_frames": self.max_grant_frames,
            "max_maptrack_frames": self.max_maptrack_frames,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, doc: object) -> AbiPolicy:
        if isinstance(doc, str | bytes):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise PolicyError(f"policy JSON does not parse: {exc}") from exc
        if not isinstance(doc, dict):
            raise PolicyError("a policy must be a JSON object")
        allowed = {"features", "max_evtchn_port", "max_grant_frames", "max_maptrack_frames"}
        for key in doc:
            if key not in allowed:
                raise PolicyError(f"unknown policy key {key!r}", name=str(key))
        features = doc.get("features", [])
        if not isinstance(features, list) or not all(isinstance(name, str) for name in features):
            raise PolicyError("policy 'features' must be a list of feature names", name="features")
        limits: dict[str, int] = {}
        for key in allowed - {"features"}:
            if key in doc:
                value = doc[key]
                if not isinstance(value, int) or isinstance(value, bool):
                    raise PolicyError(f"policy {key!r} must be an integer", name=key)
                limits[key] = value
        return cls(frozenset(features), **limits)


def _min_limit(a: int, b: int) -> int:
    """Grant limits: < 0 is the hypervisor default, which any explicit value may undercut."""
    if a < 0:
        return b
    if b < 0:
        return a
    return min(a, b)


def legacy_policy(release: str | Release, **limits: int) -> AbiPolicy:
    """What a domain got from ``release`` before ABI control existed: everything it implements (decision 7)."""
    return AbiPolicy(get_release(release).features, **limits)


class RefusalKind(StrEnum):
    NOT_IMPLEMENTED = "not-implemented"  # the host's release predates the feature
    NOT_APPLICABLE = "not-applicable"  # the feature does not exist for this guest type
    WOULD_APPEAR = "would-appear"  # a host without ABI control would expose a feature the policy lacks
    HOST_DISABLED = "host-disabled"  # the host's boot options hide the feature from every domain
    LIMIT = "limit"  # a pinned limit the guest can read that this host would not give it


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason a host cannot run a VM with its policy: the feature and why."""

    feature: str
    kind: RefusalKind
    release: str
    detail: str = ""

    def __str__(self) -> str:
        if self.kind is RefusalKind.NOT_IMPLEMENTED:
            return f"{self.feature}: Xen {self.release} does not implement it"
        if self.kind is RefusalKind.NOT_APPLICABLE:
            return f"{self.feature}: does not apply to this guest type"
        if self.kind is RefusalKind.HOST_DISABLED:
            return f"{self.feature}: this Xen {self.release} host's boot options hide it from every domain"
        if self.kind is RefusalKind.LIMIT:
            return f"{self.feature}: {self.detail} on Xen {self.release}"
        return f"{self.feature}: Xen {self.release} has no ABI control and would expose it, but the policy lacks it"

    def to_json(self) -> dict[str, str]:
        return {"feature": self.feature, "kind": self.kind.value, "release": self.release, "reason": str(self)}


def admission(
    policy: AbiPolicy,
    release: str | Release,
    abi_control: bool,
    guest_type: GuestType | str,
    boot_hidden: frozenset[str] = frozenset(),
) -> tuple[Refusal, ...]:
    """Decision 8: every reason host (``release``, ``abi_control``, and the features its boot options hide from
    every domain, ``boot_hidden``) cannot give a ``guest_type`` VM exactly ``policy``; empty when it can. Every
    policy feature must be implemented, not disabled at boot, and apply to the guest type; a host without ABI
    control must not expose an applicable feature outside the policy that its release cannot hide per domain by
    a knob of its own (``Release.can_hide``, decision 10)."""
    host = get_release(release)
    kind = GuestType(guest_type)
    refusals: list[Refusal] = []
    for row in REGISTRY:
        if row.name in policy.features:
            if not host.implements(row):
                refusals.append(Refusal(row.name, RefusalKind.NOT_IMPLEMENTED, host.name))
            elif not row.applies_to(kind):
                refusals.append(Refusal(row.name, RefusalKind.NOT_APPLICABLE, host.name))
            elif row.name in boot_hidden:
                refusals.append(Refusal(row.name, RefusalKind.HOST_DISABLED, host.name))
        elif (not abi_control and host.implements(row) and row.applies_to(kind) and row.name not in boot_hidden
              and not host.can_hide(row)):  # fmt: skip
            refusals.append(Refusal(row.name, RefusalKind.WOULD_APPEAR, host.name))
    refusals += limit_refusals(policy, host)
    return tuple(refusals)


GRANT_FRAMES_CAP, MAPTRACK_FRAMES_CAP = 64, 1024  # the creation caps of 4.10-4.17 (grant_limit_caps)


def limit_refusals(policy: AbiPolicy, host: Release) -> list[Refusal]:
    """Decision 10: a pinned grant limit (query_size's max_nr_frames, and the maptrack limit) must be given to the
    domain. From 4.10 each domain gets its own number, the pinned one, except that 4.10-4.17 refuse more than
    64 / 1024 at creation (b2ea81d2b9 lifted that in 4.18). Before 4.10 every domain has the host's limit (32 grant
    frames; 256 or 1024 maptrack frames): a smaller one than pinned is refused (a Linux guest finds fewer grant
    frames than it had and gives up its grant table on resume); a larger one is admitted, since it only lets the
    guest do more, which is what an in-place upgrade from 4.4 to 4.5 (maptrack 256 to 1024) has always done."""
    refusals = []
    for name, pinned, host_wide, cap in (
        ("max_grant_frames", policy.max_grant_frames, host.gnttab_host_max_frames, GRANT_FRAMES_CAP),
        ("max_maptrack_frames", policy.max_maptrack_frames, host.gnttab_maptrack_default, MAPTRACK_FRAMES_CAP),
    ):
        if pinned < 0:
            continue
        if not host.gnttab_per_domain_limits and pinned > host_wide:
            detail = f"pinned at {pinned}, but every domain gets the host's {host_wide}"
        elif host.gnttab_per_domain_limits and host.grant_limit_caps and pinned > cap:
            detail = f"pinned at {pinned}, above the {cap} this release allows at creation"
        else:
            continue
        refusals.append(Refusal(name, RefusalKind.LIMIT, host.name, detail))
    return refusals


def legacy_limits(release: str | Release) -> tuple[int, int]:
    """Decision 7 for limits: the grant and maptrack frame limits a VM created by ``release``'s own toolstack
    had, when its config named none (xl's default, or the host-wide limit before 4.10)."""
    host = get_release(release)
    return host.xl_grant_frames_default, host.gnttab_maptrack_default


def admit(
    policy: AbiPolicy,
    release: str | Release,
    abi_control: bool,
    guest_type: GuestType | str,
    *,
    host: str = "",
    force: bool = False,
    boot_hidden: frozenset[str] = frozenset(),
) -> tuple[Refusal, ...]:
    """:func:`admission` that raises :class:`AbiIncompatible` with every reason, unless ``force``; returns the
    reasons that ``force`` overrode, so the caller can say so."""
    refusals = admission(policy, release, abi_control, guest_type, boot_hidden)
    if refusals and not force:
        raise AbiIncompatible(refusals, host=host or f"Xen {get_release(release).name}")
    return refusals


def default_features(release: str | Release, guest_type: GuestType | str) -> frozenset[str]:
    """Decision 6, the v5 default for a brand-new VM: every feature the release implements that applies."""
    return get_release(release).applicable_features(GuestType(guest_type))


def features_of_version(version: tuple[int, int], guest_type: GuestType | str) -> frozenset[str]:
    """Decision 7: the policy a stream from Xen ``version`` carries when its config pins none: what that release
    implements that applies to the guest type. A version outside the release table is a PolicyError."""
    return get_release("{}.{}".format(*version)).applicable_features(GuestType(guest_type))
