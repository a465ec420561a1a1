"""Fleet planning: where each VM may run, the levelled default for a pool, and safe rolling upgrades.

Admission is :func:`xenabi.policy.admission` (decision 8), the same function the toolstack calls on restore; a VM's
policy is its pinned set, or the legacy policy of the release it knows (decision 7). The planner never asks it about
single VMs and hosts: VMs are grouped by (guest type, policy) into *VM classes* and hosts by (release, abi_control, the
boot option gnttab_max_version) into *host classes*, admission is decided once per pair of classes, and the answer is
expanded with counts from SQL. A fleet of millions of VMs has a few dozen classes of each kind, so the work is classes x
classes plus a few grouped scans of the inventory, with memory bounded by the number of classes (and, for an upgrade
plan, by the number of hosts being upgraded). :func:`direct_admissible_hosts` is the per-pair evaluation the tests and
the benchmark compare against.

Upgrade plans, with capacity and waves, are :mod:`xenabi.fleet.upgrade`; they use :func:`class_admission` too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from xenabi.abi.domctl import GuestType
from xenabi.abi.features import REGISTRY
from xenabi.abi.gnttab import GNTTAB_MAX_VERSION_DEFAULT
from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, VmPolicy, parse_policy
from xenabi.policy import AbiPolicy, Refusal, admission, get_release

Progress = Callable[[int], None]


@dataclass(frozen=True, order=True)
class HostClass:
    # classes sort by release version (4.6 before 4.10), not by the release's text
    sort_key: tuple[int, ...] = field(init=False, repr=False)
    release: str
    abi_control: bool
    # the host's boot option gnttab=max-ver:N (2, Xen's default, unless the inventory says 1)
    gnttab_max_version: int = GNTTAB_MAX_VERSION_DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "sort_key", (*get_release(self.release).point, len(self.release)))

    @property
    def default_boot(self) -> bool:
        """Booted without options that change what a domain gets (Xen's defaults)."""
        return self.gnttab_max_version == GNTTAB_MAX_VERSION_DEFAULT

    @property
    def boot_hidden(self) -> frozenset[str]:
        """The features this class's boot options hide from every domain."""
        return REGISTRY.boot_hidden({"gnttab_max_version": self.gnttab_max_version})

    def upgraded(self, target: HostClass) -> HostClass:
        """This host after an upgrade to ``target``'s release and control: its boot options stay as they were."""
        return HostClass(target.release, target.abi_control, self.gnttab_max_version)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "abi_control": self.abi_control,
                "gnttab_max_version": self.gnttab_max_version}  # fmt: skip

    def __str__(self) -> str:
        boot = "" if self.default_boot else f", booted with gnttab=max-ver:{self.gnttab_max_version}"
        return f"Xen {self.release} {'with' if self.abi_control else 'without'} ABI control{boot}"


@dataclass(frozen=True, order=True)
class VmClass:
    guest_type: str
    policy: str  # pinned:... or legacy:<release>

    @property
    def features(self) -> frozenset[str]:
        return parse_policy(self.policy).features(self.guest_type)

    def __str__(self) -> str:
        return f"{self.guest_type} {self.policy}"


@cache
def class_admission(vm: VmClass, host: HostClass) -> tuple[Refusal, ...]:
    """Decision 8 for a pair of classes (the one call per pair the planner makes)."""
    return admission(AbiPolicy(vm.features), host.release, host.abi_control, vm.guest_type, host.boot_hidden)


# --- grouped reads -------------------------------------------------------------------------------------------------
def host_classes(inv: Inventory, where: str = "", args: Iterable[Any] = ()) -> dict[HostClass, int]:
    rows = inv.db.execute(
        f"SELECT release, abi_control, gnttab_max_version, COUNT(*) FROM hosts {where} "
        "GROUP BY release, abi_control, gnttab_max_version",
        tuple(args),
    )
    return {HostClass(r, bool(c), v): n for r, c, v, n in rows}


def vm_classes(inv: Inventory) -> dict[VmClass, int]:
    rows = inv.db.execute(
        "SELECT v.guest_type, p.text, COUNT(*) FROM vms v JOIN policies p ON p.id = v.policy_id "
        "GROUP BY v.guest_type, v.policy_id"
    )
    return {VmClass(t, text): n for t, text, n in rows}


def admissible_count(vm: VmClass, hosts: dict[HostClass, int]) -> int:
    return sum(n for hc, n in hosts.items() if not class_admission(vm, hc))


# --- where may a VM run ---------------------------------------------------------------------------------------------
@dataclass
class Placement:
    vm: str
    vm_class: VmClass
    host: str
    admissible: dict[HostClass, int]  # host class -> number of hosts
    refused: dict[HostClass, tuple[Refusal, ...]]
    refused_hosts: dict[HostClass, int]
    examples: dict[HostClass, list[str]] = field(default_factory=dict)

    @property
    def admissible_hosts(self) -> int:
        return sum(self.admissible.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "guest_type": self.vm_class.guest_type,
            "policy": self.vm_class.policy,
            "features": sorted(self.vm_class.features),
            "host": self.host,
            "admissible_hosts": self.admissible_hosts,
            "admissible": [
                {**hc.to_json(), "hosts": n, "examples": self.examples.get(hc, [])}
                for hc, n in sorted(self.admissible.items())
            ],
            "refused": [
                {**hc.to_json(), "hosts": self.refused_hosts[hc], "reasons": [r.to_json() for r in reasons]}
                for hc, reasons in sorted(self.refused.items())
            ],
        }


def where(inv: Inventory, vm: str, *, examples: int = 5) -> Placement:
    guest_type, host, policy = inv.vm(vm)
    vmc = VmClass(guest_type, policy)
    classes = host_classes(inv)
    placement = Placement(vm, vmc, host, {}, {}, {})
    for hc, n in sorted(classes.items()):
        reasons = class_admission(vmc, hc)
        if reasons:
            placement.refused[hc] = reasons
            placement.refused_hosts[hc] = n
        else:
            placement.admissible[hc] = n
            placement.examples[hc] = [
                row[0]
                for row in inv.db.execute(
                    "SELECT name FROM hosts WHERE release = ? AND abi_control = ? AND gnttab_max_version = ? "
                    "ORDER BY id LIMIT ?",
                    (hc.release, int(hc.abi_control), hc.gnttab_max_version, examples),
                )
            ]
    return placement


# --- the whole fleet --------------------------------------------------------------------------------------------------
@dataclass
class ClassSummary:
    vm_class: VmClass
    vms: int
    admissible_hosts: int
    refused: dict[HostClass, tuple[Refusal, ...]]
    stranded_vms: int  # VMs of this class on a host that does not admit them

    def to_json(self) -> dict[str, Any]:
        return {
            "guest_type": self.vm_class.guest_type,
            "policy": self.vm_class.policy,
            "vms": self.vms,
            "admissible_hosts": self.admissible_hosts,
            "stranded_vms": self.stranded_vms,
            "refused": [
                {**hc.to_json(), "reasons": [str(r) for r in reasons]} for hc, reasons in sorted(self.refused.items())
            ],
        }


def summary(inv: Inventory) -> list[ClassSummary]:
    """For every VM class: how many VMs, how many hosts may take them, and which host classes refuse and why."""
    hosts = host_classes(inv)
    host_class = {
        hid: HostClass(r, bool(c), v)
        for hid, r, c, v in inv.db.execute("SELECT id, release, abi_control, gnttab_max_version FROM hosts")
    }
    policies = dict(inv.db.execute("SELECT id, text FROM policies"))
    # One pass over the covering index (host, type, policy): a row per host and VM class on it, no table lookups.
    rows = inv.db.execute(
        "SELECT host_id, guest_type, policy_id, COUNT(*) FROM vms GROUP BY host_id, guest_type, policy_id"
    )
    pairs: dict[tuple[str, int, HostClass], int] = defaultdict(int)
    for host_id, guest_type, policy_id, n in rows:
        pairs[(guest_type, policy_id, host_class[host_id])] += n
    vms: dict[VmClass, int] = defaultdict(int)
    stranded: dict[VmClass, int] = defaultdict(int)
    for (guest_type, policy_id, hc), n in pairs.items():
        vmc = VmClass(guest_type, policies[policy_id])
        vms[vmc] += n
        if class_admission(vmc, hc):
            stranded[vmc] += n
    out = []
    for vmc in sorted(vms):
        refused = {hc: reasons for hc in sorted(hosts) if (reasons := class_admission(vmc, hc))}
        out.append(ClassSummary(vmc, vms[vmc], admissible_count(vmc, hosts), refused, stranded[vmc]))
    return out


def direct_admissible_hosts(inv: Inventory, vm_names: Iterable[str]) -> dict[str, int]:
    """The per-pair evaluation: for each VM, admission against every host, one call per (VM, host)."""
    hosts = list(inv.db.execute("SELECT release, abi_control, gnttab_max_version FROM hosts"))
    out = {}
    for name in vm_names:
        guest_type, _host, policy = inv.vm(name)
        features = parse_policy(policy).features(guest_type)
        out[name] = sum(
            1
            for release, control, max_version in hosts
            if not admission(
                AbiPolicy(features),
                release,
                bool(control),
                guest_type,
                REGISTRY.boot_hidden({"gnttab_max_version": max_version}),
            )
        )
    return out


# --- levelling ------------------------------------------------------------------------------------------------------
@dataclass
class Level:
    pool: str
    guest_type: str
    hosts: int
    policy: frozenset[str] | None  # None: no policy is admissible on every host of the pool
    limiting: dict[str, list[HostClass]]  # feature -> host classes that keep it out of the levelled policy
    conflict: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "guest_type": self.guest_type,
            "hosts": self.hosts,
            "policy": None if self.policy is None else sorted(self.policy),
            "xl": None if self.policy is None else _xl_entries(self.policy, self.guest_type),
            "limited_by": {f: [str(hc) for hc in classes] for f, classes in sorted(self.limiting.items())},
            "conflict": self.conflict,
        }


def _xl_entries(policy: frozenset[str], guest_type: str) -> str:
    entries = [
        row.name if row.name in policy else f"!{row.name}" for row in REGISTRY if row.applies_to(GuestType(guest_type))
    ]
    return "xen_abi_features = [ " + ", ".join(f'"{e}"' for e in entries) + " ]"


def level(inv: Inventory, pool: str) -> list[Level]:
    """The richest policy, per guest type, that every host of ``pool`` admits (and what limits it)."""
    classes = host_classes(inv, "WHERE pool = ?", (pool,))
    if not classes:
        raise InventoryError(f"no pool named {pool!r}", field="pool")
    total = sum(classes.values())
    out = []
    for kind in GuestType:
        offered = {hc: get_release(hc.release).applicable_features(kind) - hc.boot_hidden for hc in classes}
        union = frozenset().union(*offered.values())
        richest: frozenset[str] | None = frozenset.intersection(*offered.values())
        assert richest is not None
        # what a host without ABI control shows every domain: its features, less those a knob of its own hides
        forced = {hc: frozenset(f for f in offered[hc] if not get_release(hc.release).can_hide(REGISTRY[f]))
                  for hc in classes if not hc.abi_control}  # fmt: skip
        extra = {hc: shown - richest for hc, shown in sorted(forced.items()) if shown - richest}
        policy = None if extra else richest
        conflict = (
            ""
            if not extra
            else "hosts without ABI control expose features other hosts lack: "
            + "; ".join(f"{hc}: {', '.join(sorted(more))}" for hc, more in extra.items())
        )
        if policy is not None:
            assert all(not class_admission(VmClass(kind.value, _pinned(policy)), hc) for hc in classes)
        limiting = {
            feature: sorted(hc for hc in classes if feature not in offered[hc] or not hc.abi_control)
            for feature in sorted(union - (policy or frozenset()))
        }
        out.append(Level(pool, kind.value, total, policy, limiting, conflict))
    return out


def _pinned(features: frozenset[str]) -> str:
    return str(VmPolicy(pinned=features))
