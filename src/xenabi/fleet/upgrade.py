"""Rolling upgrades an operator can execute: capacity, waves, and every VM moved or accounted for (issue 15).

The hosts named by the operator move to a target release and ABI control; each keeps its boot options (the inventory's
``gnttab_max_version``), so a host's *target class* is the target release and control with its own boot options
(:meth:`~xenabi.fleet.planner.HostClass.upgraded`), and hosts of one plan may have different ones. A host is upgraded by
rebooting it into the new Xen, so every VM on it is first either **migrated** to another host (the default: XAPI's
rolling pool upgrade evacuates each host before it upgrades it) or, with ``suspend_in_place``, **suspended and resumed**
on the same host, which is allowed only for a VM the target class admits (otherwise its environment would change across
the reboot; the VMs it does not admit still migrate). Admission is decision 8, decided once per (VM class, host class)
pair as in :mod:`xenabi.fleet.planner`.

**Where a VM may go.** VMs migrate within their pool: a pool shares storage and networks, and a rolling upgrade does
not storage-migrate between pools (``across_pools`` treats the fleet as one pool). A target is a host that stays up
during the wave, has room, and admits the VM; if that host is itself upgraded in a later wave, the target class must
admit the VM too, so that it is admitted now and after every later wave. Room: memory is never overcommitted (Xen
allocates a domain's RAM when it builds it), and a host runs at most ``floor(pcpus * vcpu_overcommit)`` vCPUs. A host
the inventory already shows over its capacity takes no VM until it has room again.

**Placement is first-fit decreasing by memory** (ties: more vCPUs first, then VM class). Hosts are tried in one fixed
order: first the hosts whose class is final (not being upgraded, or already upgraded), then the hosts still waiting
for their upgrade, each group by inventory id; so a VM moves twice only when it must. FFD rather than best-fit or an
exact search because: the wave's VMs arrive at once and are known, which is the setting FFD is made for (it never
uses more than 11/9 of the optimal number of hosts plus one, Dósa 2007); placing the largest VMs first places the
ones most likely to strand while the most room is left; and a fixed host order packs VMs onto the first hosts and
leaves the last ones empty, which is what an upgrade wants of the hosts it will evacuate next. An exact packing is
NP-hard and would not make a plan an operator can follow line by line. First-fit of k identical VMs fills the
hosts in order, so the placement works per *shape* (VM class, memory, vCPUs) with a few numpy operations over the
pool's hosts, which is exactly FFD, at a cost set by the number of shapes rather than of VMs.

**The pool master goes first**, as in XAPI: when the inventory marks a pool's master (``pool_master``) and the plan
upgrades it, no other host of its pool is upgraded before it; if it cannot be emptied, the pool's other hosts stay
too (a note says so). Upgrading other hosts of a pool whose master stays on an older release is refused.

**Waves.** At most ``max_parallel`` hosts of each pool are upgraded at a time: a number, or a percentage of the
pool's hosts (rounded up, at least one). Pools are independent, so wave *w* of every pool runs at the same time and
the plan's wave *w* is their union. Each wave of a pool takes the hosts still to upgrade in order of the memory that
must leave them, least first (hosts whose VMs have somewhere to go come first; hosts freed and upgraded by earlier
waves become targets for the later ones). A host whose VMs do not all fit is deferred and the next host takes its
place; a deferred host gets a chance alone before the pool is declared blocked. A host that cannot be emptied alone
because a VM the target class refuses has no room is left on its release at once: only hosts that stay on their
release can ever take such a VM, so waiting would not help it, and as a host that stays it takes other hosts' VMs
from then on (greedy; it is also what keeps a pool whose VMs the new release refuses at one trial per host rather
than one per host and wave). When no remaining host of a pool can be emptied, those hosts are not upgraded either.
The VMs that keep a host from its upgrade are **stranded**, each with its reason: no other host of the pool admits
it, it is larger than every admitting host, or no admitting host has room. A plan with stranded VMs is incomplete
(the CLI exits 1); nothing is left out silently.

Memory: the VMs of the hosts being upgraded are held in numpy arrays (about 30 bytes each), every other VM only as
its host's totals; a plan holds its moves as arrays of indices, and names are read from the inventory when the plan
is written (:mod:`xenabi.fleet.planfile`).
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, parse_release, vcpu_limit
from xenabi.fleet.planner import HostClass, VmClass, class_admission
from xenabi.policy import get_release

Progress = Callable[[int], None]
IntArray: TypeAlias = npt.NDArray[np.int64]

SETTLED, PENDING, IN_WAVE, UPGRADED = 0, 1, 2, 3  # a host's state during the plan
GUEST_TYPES = ("hvm", "pvh", "pv")
FETCH = 200_000  # VM rows read from SQLite at a time
ALL_POOLS = "(all pools)"  # the one placement domain of an across-pools plan


# --- the request -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaxParallel:
    """At most ``hosts`` hosts of a pool at a time, or ``percent`` of the pool's hosts (rounded up, at least 1)."""

    hosts: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str | int) -> MaxParallel:
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                percent = float(raw[:-1])
                if not 0 < percent <= 100:
                    raise ValueError
                return cls(percent=percent)
            hosts = int(raw)
            if hosts < 1:
                raise ValueError
            return cls(hosts=hosts)
        except ValueError:
            raise InventoryError(f"{raw[:40]!r} is neither a number of hosts (1 or more) nor a percentage such as "
                                 "10%", field="max_parallel") from None  # fmt: skip

    def limit(self, pool_hosts: int) -> int:
        if self.hosts is not None:
            return self.hosts
        assert self.percent is not None
        return max(1, math.ceil(pool_hosts * self.percent / 100 - 1e-9))

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.hosts)


# --- the plan --------------------------------------------------------------------------------------------------------
@dataclass
class Wave:
    number: int
    hosts: list[int] = field(default_factory=list)  # indices into UpgradePlan.host_names
    migrate_vm: list[IntArray] = field(default_factory=list)  # VM ids, one array per pool (moves() joins them)
    migrate_from: list[IntArray] = field(default_factory=list)  # host indices
    migrate_to: list[IntArray] = field(default_factory=list)
    suspend_vm: list[IntArray] = field(default_factory=list)
    suspend_host: list[IntArray] = field(default_factory=list)
    headroom_mib: int = 0  # free memory of the hosts that stay up during the wave, after its migrations
    tightest_pool: str = ""
    tightest_headroom_mib: int = -1

    @property
    def migrations(self) -> int:
        return sum(len(a) for a in self.migrate_vm)

    @property
    def suspends(self) -> int:
        return sum(len(a) for a in self.suspend_vm)

    def moves(self) -> list[tuple[int, int, int]]:
        """(VM id, from host index, to host index), in the order they run."""
        if not self.migrate_vm:
            return []
        columns = (np.concatenate(c).tolist() for c in (self.migrate_vm, self.migrate_from, self.migrate_to))
        return list(zip(*columns, strict=True))

    def stays(self) -> list[tuple[int, int]]:
        """(VM id, host index) of the VMs suspended in place."""
        if not self.suspend_vm:
            return []
        return list(zip(np.concatenate(self.suspend_vm).tolist(), np.concatenate(self.suspend_host).tolist(),
                        strict=True))  # fmt: skip


@dataclass
class Stranded:
    vm_id: int
    host: int
    memory_mib: int
    vcpus: int
    vm_class: VmClass
    reason: str


@dataclass
class PoolMemory:
    """A pool's memory (MiB), in use per host class before and after the plan, and its tightest wave."""

    capacity_mib: int = 0
    before: dict[HostClass, int] = field(default_factory=lambda: defaultdict(int))
    after: dict[HostClass, int] = field(default_factory=lambda: defaultdict(int))
    min_headroom_mib: int | None = None


@dataclass
class UpgradePlan:
    target: HostClass
    mode: str  # "migrate" or "suspend-in-place"
    max_parallel: MaxParallel
    across_pools: bool
    host_names: list[str]
    host_pools: list[str]
    requested: int  # hosts named
    vms_on_hosts: int
    waves: list[Wave]
    blocked_hosts: list[int]
    stranded: list[Stranded]
    moved_twice: int
    pools: dict[str, PoolMemory]
    over_capacity_hosts: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.stranded and not self.blocked_hosts

    @property
    def migrations(self) -> int:
        return sum(w.migrations for w in self.waves)

    @property
    def suspends(self) -> int:
        return sum(w.suspends for w in self.waves)

    @property
    def upgraded(self) -> int:
        return sum(len(w.hosts) for w in self.waves)

    def summary(self) -> dict[str, object]:
        return {
            "to": {"release": self.target.release, "abi_control": self.target.abi_control},
            "mode": self.mode,
            "max_parallel": str(self.max_parallel),
            "across_pools": self.across_pools,
            "placement": "first-fit decreasing by memory",
            "hosts": self.requested,
            "upgraded_hosts": self.upgraded,
            "blocked_hosts": len(self.blocked_hosts),
            "waves": len(self.waves),
            "vms_on_hosts": self.vms_on_hosts,
            "migrations": self.migrations,
            "moved_twice": self.moved_twice,
            "suspends": self.suspends,
            "stranded_vms": len(self.stranded),
            "complete": self.complete,
        }


# --- loading the fleet -------------------------------------------------------------------------------------------
@dataclass
class _Fleet:
    names: list[str]
    pools: list[str]
    classes: list[HostClass]
    class_code: npt.NDArray[np.int32]  # per host
    memory: IntArray  # capacity per host
    vcpus: IntArray  # vCPU limit per host
    used_memory: IntArray
    used_vcpus: IntArray
    masters: frozenset[int]  # hosts that are their pool's master
    vm_classes: list[VmClass]
    # the VMs of the hosts being upgraded, sorted by host
    vm_id: IntArray
    vm_host: IntArray
    vm_class: npt.NDArray[np.int32]
    vm_memory: IntArray
    vm_vcpus: IntArray


def _load(inv: Inventory, upgrading: npt.NDArray[np.bool_], host_row: dict[int, int]) -> _Fleet:
    db = inv.db
    rows = list(db.execute("SELECT id, name, pool, release, abi_control, memory_mib, pcpus, vcpu_overcommit, "
                           "pool_master, gnttab_max_version FROM hosts ORDER BY id"))  # fmt: skip
    classes: dict[HostClass, int] = {}
    class_code = np.empty(len(rows), dtype=np.int32)
    for index, (_id, _name, _pool, release, control, *_capacity, _master, max_version) in enumerate(rows):
        class_code[index] = classes.setdefault(HostClass(release, bool(control), max_version), len(classes))
    memory = np.array([r[5] for r in rows], dtype=np.int64)
    vcpus = np.array([vcpu_limit(r[6], r[7]) for r in rows], dtype=np.int64)
    lookup = np.full(max(host_row, default=0) + 1, -1, dtype=np.int64)
    for host_id, index in host_row.items():
        lookup[host_id] = index
    used_memory = np.zeros(len(rows), dtype=np.int64)
    used_vcpus = np.zeros(len(rows), dtype=np.int64)
    kept: list[IntArray] = []
    cursor = db.execute(
        "SELECT id, host_id, policy_id * 3 + (CASE guest_type WHEN 'hvm' THEN 0 WHEN 'pvh' THEN 1 ELSE 2 END), "
        "memory_mib, vcpus FROM vms"
    )
    while chunk := cursor.fetchmany(FETCH):
        block = np.array(chunk, dtype=np.int64)
        hosts = lookup[block[:, 1]]
        used_memory += np.bincount(hosts, weights=block[:, 3], minlength=len(rows)).astype(np.int64)
        used_vcpus += np.bincount(hosts, weights=block[:, 4], minlength=len(rows)).astype(np.int64)
        block[:, 1] = hosts
        kept.append(block[upgrading[hosts]])
    table = np.concatenate(kept) if kept else np.empty((0, 5), dtype=np.int64)
    del kept
    order = np.argsort(table[:, 1], kind="stable")  # by host; each column is gathered once, never the whole table
    policies = dict(db.execute("SELECT id, text FROM policies"))
    codes, vm_class = np.unique(table[order, 2], return_inverse=True)
    vm_classes = [VmClass(GUEST_TYPES[int(code) % 3], policies[int(code) // 3]) for code in codes]
    return _Fleet(
        names=[r[1] for r in rows], pools=[r[2] for r in rows], classes=list(classes), class_code=class_code,
        memory=memory, vcpus=vcpus, used_memory=used_memory, used_vcpus=used_vcpus,
        masters=frozenset(index for index, row in enumerate(rows) if row[8]), vm_classes=vm_classes,
        vm_id=table[order, 0], vm_host=table[order, 1], vm_class=vm_class.astype(np.int32).reshape(-1),
        vm_memory=table[order, 3], vm_vcpus=table[order, 4],
    )  # fmt: skip


# --- one pool ----------------------------------------------------------------------------------------------------
class _Pool:
    """The simulation of one placement domain (a pool, or the whole fleet with ``across_pools``)."""

    def __init__(self, fleet: _Fleet, hosts: IntArray, admits: npt.NDArray[np.bool_],
                 target_codes: npt.NDArray[np.int32], suspend: bool) -> None:  # fmt: skip
        self.fleet = fleet
        self.hosts = hosts  # global host indices, by inventory id
        self.admits = admits  # [VM class, host class]
        # each host's class once upgraded: the target release and control, with the host's own boot options
        self.target = target_codes[hosts]
        self.suspend = suspend
        self.free_memory = fleet.memory[hosts] - fleet.used_memory[hosts]
        self.free_vcpus = fleet.vcpus[hosts] - fleet.used_vcpus[hosts]
        self.code = fleet.class_code[hosts].copy()
        self.state = np.full(len(hosts), SETTLED, dtype=np.int8)
        self.local = {int(h): i for i, h in enumerate(hosts)}
        self.members: dict[int, list[IntArray]] = {}  # local host -> indices of the VMs on it (of the loaded ones)
        self.masters: dict[str, int] = {}  # pool -> its master's local index, when the plan upgrades it

    def start(self, upgrading: list[int], vm_range: Callable[[int], IntArray]) -> None:
        for host in upgrading:
            local = self.local[host]
            self.state[local] = PENDING
            self.members[local] = [vm_range(host)]
        # each pool's master, when it is to be upgraded: no other host of its pool goes before it
        self.masters = {self.fleet.pools[h]: self.local[h] for h in upgrading if h in self.fleet.masters}

    def is_master(self, local: int) -> bool:
        return int(self.hosts[local]) in self.fleet.masters

    def eligible(self, local: int) -> bool:
        """A host may go in a wave once its pool's master (if the plan upgrades it) has been upgraded."""
        master = self.masters.get(self.fleet.pools[int(self.hosts[local])])
        return master is None or master == local or self.state[master] == UPGRADED

    def vms_of(self, local: int) -> IntArray:
        return np.concatenate(self.members[local])

    def leaving(self, vms: IntArray, source: IntArray | int) -> npt.NDArray[np.bool_]:
        """Which of these VMs (on local hosts ``source``) must migrate: all, unless suspended in place where their
        host's upgraded class admits them."""
        if not self.suspend:
            return np.ones(len(vms), dtype=bool)
        admitted: npt.NDArray[np.bool_] = self.admits[self.fleet.vm_class[vms], self.target[source]]
        return ~admitted

    def need(self, local: int) -> int:
        vms = self.vms_of(local)
        return int(self.fleet.vm_memory[vms][self.leaving(vms, local)].sum())

    def place(self, vms: IntArray) -> IntArray:
        """First-fit decreasing of ``vms`` onto the hosts that are up; their local target, or -1. Updates the free
        capacity of the targets (the caller snapshots and restores it when a trial fails)."""
        fleet = self.fleet
        targets = np.full(len(vms), -1, dtype=np.int64)
        if not len(vms):
            return targets
        memory, vcpus, classes = fleet.vm_memory[vms], fleet.vm_vcpus[vms], fleet.vm_class[vms]
        order = np.lexsort((classes, -vcpus, -memory))
        final = np.flatnonzero((self.state == SETTLED) | (self.state == UPGRADED))
        waiting = np.flatnonzero(self.state == PENDING)
        candidates = np.concatenate((final, waiting))
        masks: dict[int, npt.NDArray[np.bool_]] = {}
        m, v, c = memory[order], vcpus[order], classes[order]
        edges = np.flatnonzero((m[1:] != m[:-1]) | (v[1:] != v[:-1]) | (c[1:] != c[:-1])) + 1
        starts = np.concatenate(([0], edges))
        ends = np.concatenate((edges, [len(order)]))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            vm_class, need_memory, need_vcpus = int(c[start]), int(m[start]), int(v[start])
            mask = masks.get(vm_class)
            if mask is None:
                mask = self.admits[vm_class, self.code[candidates]]
                mask[len(final) :] &= self.admits[vm_class, self.target[waiting]]
                masks[vm_class] = mask
            room = np.minimum(self.free_memory[candidates] // need_memory, self.free_vcpus[candidates] // need_vcpus)
            room = np.where(mask, np.maximum(room, 0), 0)
            total = np.cumsum(room)
            count = end - start
            placed = min(count, int(total[-1])) if len(total) else 0
            if placed:
                last = int(np.searchsorted(total, placed))
                take = room[: last + 1].copy()
                take[last] -= int(total[last]) - placed
                chosen = candidates[: last + 1]
                self.free_memory[chosen] -= take * need_memory
                self.free_vcpus[chosen] -= take * need_vcpus
                targets[order[start : start + placed]] = np.repeat(chosen, take)
        return targets

    def snapshot(self) -> tuple[IntArray, IntArray]:
        return self.free_memory.copy(), self.free_vcpus.copy()

    def restore(self, saved: tuple[IntArray, IntArray]) -> None:
        self.free_memory[:], self.free_vcpus[:] = saved

    def trial(self, wave: list[int]) -> tuple[IntArray, IntArray, IntArray, list[int]]:
        """Empty the hosts of ``wave`` at once: (VMs, their local source, local target or -1 for staying), and the
        hosts whose leaving VMs did not all fit."""
        for local in wave:
            self.state[local] = IN_WAVE
        parts = [self.vms_of(local) for local in wave]
        vms = np.concatenate(parts)
        source = np.repeat(np.array(wave, dtype=np.int64), [len(p) for p in parts])
        leaving = self.leaving(vms, source)
        targets = np.full(len(vms), -2, dtype=np.int64)  # -2: suspended in place
        targets[leaving] = self.place(vms[leaving])
        failed = sorted(set(source[targets == -1].tolist()))
        return vms, source, targets, failed


def _run_pool(pool: _Pool, upgrading: list[int], limit: int, waves: dict[int, Wave], label: str,
              moved: npt.NDArray[np.bool_], stranded: list[Stranded],
              blocked: list[int], notes: list[str]) -> tuple[int, int | None]:  # fmt: skip
    """Plan one pool's waves into ``waves`` (by number). Returns how many migrations moved a VM a second time and
    the pool's least headroom in any wave (None when no wave ran)."""
    fleet = pool.fleet
    twice = 0
    least: int | None = None
    pending = [pool.local[h] for h in upgrading]
    need = {local: pool.need(local) for local in pending}
    number = 0
    while pending:
        number += 1
        ready = [local for local in pending if pool.eligible(local)]
        if not ready:  # their masters stay on their release: XAPI would not upgrade them either
            _behind_master(pool, pending, blocked, notes)
            return twice, least
        queue = sorted(ready, key=lambda local: (not pool.is_master(local), need[local], local))
        saved = pool.snapshot()
        chosen: list[int] = []
        deferred: list[int] = []
        settled = 0  # hosts found this round that can never be emptied
        result = None
        while result is None:
            room = limit - len(chosen)
            chosen += queue[:room]
            del queue[:room]
            if not chosen:
                break
            pool.restore(saved)
            attempt = pool.trial(chosen)
            if not attempt[3]:
                result = attempt
                break
            for local in chosen:  # back to waiting; the hosts that fitted are tried again with new company
                pool.state[local] = PENDING
            if len(chosen) == 1:
                pool.restore(saved)
                settled += _settle_if_hopeless(pool, chosen[0], attempt, stranded, blocked)
            else:
                deferred += attempt[3]
            chosen = [local for local in chosen if local not in attempt[3]]
        if result is None:  # nothing fitted together: a deferred host alone, if one can go
            for local in deferred:
                pool.restore(saved)
                attempt = pool.trial([local])
                if not attempt[3]:
                    chosen, result = [local], attempt
                    break
                pool.state[local] = PENDING
                pool.restore(saved)
                settled += _settle_if_hopeless(pool, local, attempt, stranded, blocked)
        pending = [local for local in pending if pool.state[local] == PENDING or local in chosen]
        if result is None and (settled or not pending):  # hosts that now stay may take the others' VMs: again
            pool.restore(saved)
            number -= 1
            continue
        if result is None:
            pool.restore(saved)
            _strand(pool, ready, stranded, blocked)
            _behind_master(pool, [local for local in pending if local not in ready], blocked, notes)
            return twice, least
        vms, source, targets, _failed = result
        wave = waves.setdefault(number, Wave(number))
        going = targets >= 0
        headroom = int(pool.free_memory[pool.state != IN_WAVE].sum())
        wave.headroom_mib += headroom
        if wave.tightest_headroom_mib < 0 or headroom < wave.tightest_headroom_mib:
            wave.tightest_pool, wave.tightest_headroom_mib = label, headroom
        least = headroom if least is None else min(least, headroom)
        movers = vms[going]
        twice += int(moved[movers].sum())
        moved[movers] = True
        wave.migrate_vm.append(fleet.vm_id[movers])
        wave.migrate_from.append(pool.hosts[source[going]])
        wave.migrate_to.append(pool.hosts[targets[going]])
        staying = targets == -2
        wave.suspend_vm.append(fleet.vm_id[vms[staying]])
        wave.suspend_host.append(pool.hosts[source[staying]])
        for local in chosen:  # the host is empty but for its suspended VMs; it comes back as the target class
            mine = source == local
            out = mine & going
            pool.free_memory[local] += int(fleet.vm_memory[vms[out]].sum())
            pool.free_vcpus[local] += int(fleet.vm_vcpus[vms[out]].sum())
            pool.members[local] = [vms[mine & staying]]
            pool.state[local] = UPGRADED
            pool.code[local] = pool.target[local]
            wave.hosts.append(int(pool.hosts[local]))
        for target in set(targets[going].tolist()):  # VMs that landed on hosts still waiting move with them later
            if pool.state[target] == PENDING:
                pool.members[target].append(vms[going & (targets == target)])
                need[target] = pool.need(target)
        pending = [local for local in pending if pool.state[local] == PENDING]
    return twice, least


def _behind_master(pool: _Pool, waiting: list[int], blocked: list[int], notes: list[str]) -> None:
    """Hosts that cannot go because their pool's master could not be upgraded first."""
    fleet = pool.fleet
    by_pool: dict[str, list[int]] = defaultdict(list)
    for local in waiting:
        host = int(pool.hosts[local])
        blocked.append(host)
        by_pool[fleet.pools[host]].append(host)
    for name, hosts in sorted(by_pool.items()):
        master = fleet.names[int(pool.hosts[pool.masters[name]])]
        notes.append(f"pool {name}: its master {master} cannot be emptied, so its other {len(hosts)} host(s) are "
                     "not upgraded either (the pool master is upgraded first, as XAPI does)")  # fmt: skip


def _settle_if_hopeless(pool: _Pool, local: int, attempt: tuple[IntArray, IntArray, IntArray, list[int]],
                        stranded: list[Stranded], blocked: list[int]) -> bool:  # fmt: skip
    """A host that could not be emptied alone because a VM the target class refuses has no room: only hosts that
    stay on their release can ever take that VM, so the host stays on its release now (greedy: it becomes a host
    that stays, and takes other hosts' VMs from then on). Its VMs that did not fit are stranded."""
    vms, _source, targets, _failed = attempt
    unplaced = vms[targets == -1]
    later = np.unique(pool.target[pool.state != SETTLED])  # the classes the pool's upgraded hosts will have
    if pool.admits[np.ix_(pool.fleet.vm_class[unplaced], later)].any(axis=1).all():
        return False  # every VM that did not fit may go to an upgraded host later: the host waits
    up = pool.state != IN_WAVE
    up[local] = True
    for vm in unplaced.tolist():
        stranded.append(_stranded_vm(pool, vm, local, up))
    blocked.append(int(pool.hosts[local]))
    pool.state[local] = SETTLED
    return True


def _strand(pool: _Pool, pending: list[int], stranded: list[Stranded], blocked: list[int]) -> None:
    """No remaining host of the pool can be emptied: each stays on its release, and the VMs that keep it there are
    stranded, with the reason (tried host by host against the pool as it is now)."""
    saved = pool.snapshot()
    up = (pool.state == SETTLED) | (pool.state == UPGRADED) | (pool.state == PENDING)
    for local in pending:
        blocked.append(int(pool.hosts[local]))
        pool.restore(saved)
        vms, _source, targets, _failed = pool.trial([local])
        pool.state[local] = PENDING
        for vm in vms[targets == -1].tolist():
            stranded.append(_stranded_vm(pool, vm, local, up))
    pool.restore(saved)


def _stranded_vm(pool: _Pool, vm: int, local: int, up: npt.NDArray[np.bool_]) -> Stranded:
    fleet = pool.fleet
    vm_class = int(fleet.vm_class[vm])
    memory, vcpus = int(fleet.vm_memory[vm]), int(fleet.vm_vcpus[vm])
    others = up.copy()
    others[local] = False
    admitting = others & pool.admits[vm_class, pool.code]
    admitting &= (pool.state != PENDING) | pool.admits[vm_class, pool.target]
    cls = fleet.vm_classes[vm_class]
    host = int(pool.hosts[local])
    if not admitting.any():
        # the classes the other hosts have now and, for those still to be upgraded, after their upgrade
        codes = [*pool.code[others].tolist(), *pool.target[others & (pool.state == PENDING)].tolist()]
        reasons = dict.fromkeys(str(r) for code in sorted(set(codes))
                                for r in class_admission(cls, fleet.classes[code]))  # fmt: skip
        why = "; ".join(reasons) if reasons else "its own release is the only one that admits it"
        reason = f"no other host of the pool admits it ({why})"
    else:
        capacity = fleet.memory[pool.hosts[admitting]]
        limit = fleet.vcpus[pool.hosts[admitting]]
        if memory > int(capacity.max()) or vcpus > int(limit.max()):
            reason = (f"larger than every admitting host ({memory} MiB, {vcpus} vCPUs; the largest has "
                      f"{int(capacity.max())} MiB, {int(limit.max())} vCPUs)")  # fmt: skip
        else:
            free = int(pool.free_memory[admitting].max())
            reason = (f"no admitting host has room: it needs {memory} MiB and {vcpus} vCPUs, the most free memory "
                      f"on one is {max(free, 0)} MiB")  # fmt: skip
    return Stranded(int(fleet.vm_id[vm]), host, memory, vcpus, cls, reason)


# --- the planner ---------------------------------------------------------------------------------------------------
def plan_upgrade(
    inv: Inventory,
    hosts: list[str],
    release: str,
    abi_control: bool,
    *,
    max_parallel: MaxParallel | str | int = 1,
    suspend_in_place: bool = False,
    across_pools: bool = False,
    progress: Progress | None = None,
) -> UpgradePlan:
    """Plan the upgrade of ``hosts`` to (``release``, ``abi_control``) in waves (see the module docstring)."""
    try:
        target = HostClass(parse_release(release), abi_control)
    except ValueError as exc:
        raise InventoryError(str(exc), field="release") from None
    limit_rule = max_parallel if isinstance(max_parallel, MaxParallel) else MaxParallel.parse(max_parallel)
    ids = inv.db.execute("SELECT id FROM hosts ORDER BY id")
    host_row = {int(host_id): index for index, (host_id,) in enumerate(ids)}
    upgrading = np.zeros(len(host_row), dtype=bool)
    requested: list[int] = []
    for name in hosts:
        try:
            host_id = inv.host(name)[0]
        except InventoryError:
            raise InventoryError(f"no host named {name!r}", field="hosts") from None
        except sqlite3.Error as exc:  # pragma: no cover - the inventory vanished under us
            raise InventoryError(str(exc), field="hosts") from exc
        index = host_row[host_id]
        if not upgrading[index]:
            upgrading[index] = True
            requested.append(index)
    fleet = _load(inv, upgrading, host_row)
    _masters_first(fleet, requested, target)
    upgraded = [cls.upgraded(target) for cls in fleet.classes]  # each host keeps its boot options
    for cls in upgraded:
        if cls not in fleet.classes:
            fleet.classes.append(cls)
    target_codes = np.array([fleet.classes.index(cls) for cls in upgraded], dtype=np.int32)[fleet.class_code]
    admits = np.array(
        [[not class_admission(vmc, hc) for hc in fleet.classes] for vmc in fleet.vm_classes], dtype=bool
    ).reshape(len(fleet.vm_classes), len(fleet.classes))
    starts = np.searchsorted(fleet.vm_host, np.arange(len(fleet.names) + 1))

    def vm_range(host: int) -> IntArray:
        return np.arange(starts[host], starts[host + 1], dtype=np.int64)

    domains: dict[str, list[int]] = defaultdict(list)
    for index, pool_name in enumerate(fleet.pools):
        domains[ALL_POOLS if across_pools else pool_name].append(index)
    wanted: dict[str, list[int]] = defaultdict(list)
    for index in sorted(requested):
        wanted[ALL_POOLS if across_pools else fleet.pools[index]].append(index)
    touched = {fleet.pools[index] for index in requested}
    pools = {name: PoolMemory() for name in sorted(touched)}
    waves: dict[int, Wave] = {}
    stranded: list[Stranded] = []
    blocked: list[int] = []
    notes: list[str] = []
    moved = np.zeros(len(fleet.vm_id), dtype=bool)
    twice = 0
    for domain in sorted(wanted):
        members = np.array(domains[domain], dtype=np.int64)
        pool = _Pool(fleet, members, admits, target_codes, suspend_in_place)
        pool.start(wanted[domain], vm_range)
        more, least = _run_pool(pool, wanted[domain], limit_rule.limit(len(members)), waves, domain, moved,
                                stranded, blocked, notes)  # fmt: skip
        twice += more
        after = fleet.memory[members] - pool.free_memory
        for local, host in enumerate(members.tolist()):
            memory = pools.get(fleet.pools[host])
            if memory is not None:
                memory.capacity_mib += int(fleet.memory[host])
                memory.before[fleet.classes[fleet.class_code[host]]] += int(fleet.used_memory[host])
                memory.after[fleet.classes[pool.code[local]]] += int(after[local])
        if not across_pools:
            pools[domain].min_headroom_mib = least
        if progress is not None:
            progress(len(wanted[domain]))
    over = [int(i) for i in np.flatnonzero((fleet.used_memory > fleet.memory) | (fleet.used_vcpus > fleet.vcpus))]
    return UpgradePlan(
        target=target, mode="suspend-in-place" if suspend_in_place else "migrate", max_parallel=limit_rule,
        across_pools=across_pools, host_names=fleet.names, host_pools=fleet.pools, requested=len(requested),
        vms_on_hosts=len(fleet.vm_id), waves=[waves[n] for n in sorted(waves)], blocked_hosts=sorted(blocked),
        stranded=stranded, moved_twice=twice, pools=pools, over_capacity_hosts=over, notes=notes,
    )  # fmt: skip


def _masters_first(fleet: _Fleet, requested: list[int], target: HostClass) -> None:
    """XAPI upgrades the pool master first: upgrading other hosts of a pool past a master that stays on an older
    release is refused, naming the master."""
    upgrading = set(requested)
    newest = get_release(target.release).point
    for master in sorted(fleet.masters - upgrading):
        pool = fleet.pools[master]
        release = fleet.classes[fleet.class_code[master]].release
        if get_release(release).point < newest and any(fleet.pools[h] == pool for h in upgrading):
            raise InventoryError(f"pool {pool}: its master {fleet.names[master]} (Xen {release}) is not among the "
                                 "hosts to upgrade; a pool's master is upgraded first, as XAPI does",
                                 field="hosts")  # fmt: skip
