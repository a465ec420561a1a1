"""Upgrade plans as files, and their replay against the inventory (``fleet plan verify``; issue 15).

A plan file is JSON, written one step per line so that a step's line is where an operator looks::

    {"plan": "xenabi-upgrade-plan", "version": 1,
     "summary": {"to": {"release": "4.22", "abi_control": true}, "mode": "migrate", "max_parallel": "10%", ...},
     "waves": [
      {"wave": 1, "upgrade": ["host1", "host2"], "headroom_mib": 123456, ...,
       "migrate": [
        ["vm1", "host1", "host9"],
        ...],
       "suspend": [
        ["vm7", "host2"],
        ...]},
      ...],
     "blocked_hosts": [...], "stranded": [{"vm": ..., "host": ..., "reason": ...}, ...]}

**Replay** (:func:`verify_plan`) takes the inventory as it is now and runs the plan step by step, in the order an
operator would: in each wave, every migration, then every suspension, then the upgrade of each of the wave's hosts.
It checks at every step what the planner guaranteed when it made the plan: the VM and both hosts exist; the VM is
on the host the step moves it from; that host is upgraded in this wave and the target is not, is a different host
and (unless the plan is across pools) in the same pool; the target admits the VM now and, when it is upgraded later
in the plan, after that too; the target has the memory and the vCPUs (never overcommitting memory, at most
``floor(pcpus * vcpu_overcommit)`` vCPUs); a suspended VM's host is upgraded in this wave and the target release
admits it (each host keeps its boot options, so its class after the upgrade is the target release and control
with its own ``gnttab_max_version``); a host is upgraded once, holding nothing but the VMs suspended on it, after
its pool's master (when the inventory marks one that is older than the target), and no wave upgrades more hosts of
a pool than the plan's ``max_parallel``. The first step that fails is reported with the wave, the step number, the
file's line and the JSON field, and why (typically: the inventory changed after the plan was made).

A file that is not JSON, or not a plan (a missing or mistyped field, an unknown release), is an
:class:`~xenabi.errors.InventoryError` with file, line and field; a plan that does not replay is a failed
:class:`Verdict`, with the same details. A plan is *complete* when it strands no VM and leaves no host behind.
The whole plan is read into memory (with the replay state, about 600 bytes per migration: 380 MB for a plan of
600,000); VMs are looked up wave by wave.
"""

from __future__ import annotations

import itertools
import json
import json.decoder
import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, parse_release, vcpu_limit
from xenabi.fleet.planner import HostClass, VmClass, class_admission
from xenabi.fleet.upgrade import MaxParallel, UpgradePlan, Wave
from xenabi.policy import get_release

Admitted = Callable[[VmClass, HostClass], bool]  # decision 8 for a pair of classes, cached per replay
PLAN_KIND = "xenabi-upgrade-plan"
PLAN_VERSION = 1
NAME_CHUNK = 5000  # names resolved per SQL query


# --- writing ---------------------------------------------------------------------------------------------------------
def write_plan(plan: UpgradePlan, inv: Inventory, out: IO[str]) -> None:
    """Write ``plan`` as a plan file (see the module docstring); VM names are read from ``inv`` wave by wave."""
    hosts = plan.host_names
    out.write(f'{{"plan": "{PLAN_KIND}", "version": {PLAN_VERSION},\n "summary": {json.dumps(plan.summary())},\n')
    out.write(' "waves": [')
    for number, wave in enumerate(plan.waves):
        out.write(",\n  " if number else "\n  ")
        head = wave_head(plan, wave)
        out.write(json.dumps({"wave": head.pop("wave"), "upgrade": [hosts[h] for h in wave.hosts], **head})[:-1])
        moves = wave.moves()
        names = vm_names(inv, [vm for vm, _source, _target in moves])
        out.write(',\n   "migrate": [')
        out.write(",".join(f"\n    {json.dumps([names[vm], hosts[s], hosts[t]])}" for vm, s, t in moves))
        stays = wave.stays()
        names = vm_names(inv, [vm for vm, _host in stays])
        out.write('],\n   "suspend": [')
        out.write(",".join(f"\n    {json.dumps([names[vm], hosts[h]])}" for vm, h in stays))
        out.write("]}")
    out.write("],\n")
    out.write(f' "blocked_hosts": {json.dumps([hosts[h] for h in plan.blocked_hosts])},\n')
    out.write(f' "notes": {json.dumps(plan.notes)},\n')
    out.write(' "stranded": [' + ",".join(f"\n  {json.dumps(s)}" for s in stranded_rows(plan, inv)) + "]}\n")


def wave_head(plan: UpgradePlan, wave: Wave) -> dict[str, Any]:
    """A wave's figures, as the plan file and ``--json`` give them."""
    return {"wave": wave.number, "migrations": wave.migrations, "suspends": wave.suspends,
            "headroom_mib": wave.headroom_mib, "tightest_pool": wave.tightest_pool,
            "tightest_headroom_mib": wave.tightest_headroom_mib}  # fmt: skip


def stranded_rows(plan: UpgradePlan, inv: Inventory) -> list[dict[str, Any]]:
    """Every stranded VM, named, with its host, class, size and reason."""
    names = vm_names(inv, [s.vm_id for s in plan.stranded])
    return [{"vm": names[s.vm_id], "host": plan.host_names[s.host], "guest_type": s.vm_class.guest_type,
             "policy": s.vm_class.policy, "memory_mib": s.memory_mib, "vcpus": s.vcpus, "reason": s.reason}
            for s in plan.stranded]  # fmt: skip


def plan_document(plan: UpgradePlan, inv: Inventory) -> dict[str, Any]:
    """The plan file's content as a dict (for small plans: tests, ``--json``)."""
    import io

    text = io.StringIO()
    write_plan(plan, inv, text)
    doc: dict[str, Any] = json.loads(text.getvalue())
    return doc


def vm_names(inv: Inventory, ids: list[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for start in range(0, len(ids), NAME_CHUNK):
        chunk = ids[start : start + NAME_CHUNK]
        marks = ",".join("?" * len(chunk))
        names.update(inv.db.execute(f"SELECT id, name FROM vms WHERE id IN ({marks})", chunk))
    return names


# --- reading -------------------------------------------------------------------------------------------------------
JsonPath = tuple[str | int, ...]


def field_name(path: JsonPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def locate(text: str, path: JsonPath) -> int:
    """The line of the JSON value at ``path`` in ``text`` (1 when it cannot be found). Values on the way are skipped
    with the C decoder, so finding a step near the end of a large plan is quick."""
    decoder = json.JSONDecoder()
    index = _skip(text, 0)
    try:
        for part in path:
            if text[index] == "{":
                index = _skip(text, index + 1)
                while text[index] != "}":
                    key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
                    index = _skip(text, _skip(text, index) + 1)  # past the colon
                    if key == part:
                        break
                    index = _skip(text, decoder.raw_decode(text, index)[1])
                    if text[index] == ",":
                        index = _skip(text, index + 1)
                else:
                    break
            elif text[index] == "[" and isinstance(part, int):
                index = _skip(text, index + 1)
                for _ in range(part):
                    index = _skip(text, decoder.raw_decode(text, index)[1])
                    if text[index] == ",":
                        index = _skip(text, index + 1)
            else:
                break
    except (IndexError, ValueError):
        return 1
    return text.count("\n", 0, index) + 1


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


@dataclass
class PlanFile:
    source: str
    text: str
    doc: dict[str, Any]
    target: HostClass
    mode: str
    max_parallel: MaxParallel
    across_pools: bool

    def error(self, message: str, path: JsonPath) -> InventoryError:
        return InventoryError(message, file=self.source, line=locate(self.text, path), field=field_name(path))


def read_plan(path: str | Path) -> PlanFile:
    """Read and check the shape of a plan file (:class:`~xenabi.errors.InventoryError` with file, line, field)."""
    source = str(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InventoryError("not a regular file", file=source)
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read: {exc}", file=source) from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"not JSON: {exc.msg} (column {exc.colno})", file=source, line=exc.lineno) from None
    except (RecursionError, ValueError) as exc:
        raise InventoryError(f"not JSON this tool reads: {exc}", file=source) from None
    partial = PlanFile(source, text, {}, HostClass("4.3", False), "", MaxParallel(hosts=1), False)
    if not isinstance(doc, dict) or doc.get("plan") != PLAN_KIND:
        raise partial.error(f'not an upgrade plan (no "plan": "{PLAN_KIND}")', ("plan",))
    if doc.get("version") != PLAN_VERSION:
        raise partial.error(f"plan version {doc.get('version')!r}; this tool reads version {PLAN_VERSION}",
                            ("version",))  # fmt: skip
    summary = _typed(partial, doc, ("summary",), dict)
    to = _typed(partial, summary, ("summary", "to"), dict)
    release = _typed(partial, to, ("summary", "to", "release"), str)
    try:
        target = HostClass(parse_release(release), _typed(partial, to, ("summary", "to", "abi_control"), bool))
    except ValueError as exc:
        raise partial.error(str(exc), ("summary", "to", "release")) from None
    mode = _typed(partial, summary, ("summary", "mode"), str)
    if mode not in ("migrate", "suspend-in-place"):
        raise partial.error(f"mode {mode[:40]!r} is neither migrate nor suspend-in-place", ("summary", "mode"))
    try:
        limit = MaxParallel.parse(_typed(partial, summary, ("summary", "max_parallel"), str))
    except InventoryError as exc:
        raise partial.error(exc.message, ("summary", "max_parallel")) from None
    across = _typed(partial, summary, ("summary", "across_pools"), bool)
    plan = PlanFile(source, text, doc, target, mode, limit, across)
    waves = _typed(plan, doc, ("waves",), list)
    for number, wave in enumerate(waves):
        where: JsonPath = ("waves", number)
        if not isinstance(wave, dict):
            raise plan.error("a wave is an object", where)
        if wave.get("wave") != number + 1:
            raise plan.error(f"wave {wave.get('wave')!r} where wave {number + 1} belongs", (*where, "wave"))
        for key, width in (("upgrade", 0), ("migrate", 3), ("suspend", 2)):
            items = _typed(plan, wave, (*where, key), list)
            for index, item in enumerate(items):
                if width:
                    ok = isinstance(item, list) and len(item) == width and all(isinstance(x, str) for x in item)
                else:
                    ok = isinstance(item, str)
                if not ok:
                    shape = "a host name" if not width else f"a list of {width} names"
                    raise plan.error(f"must be {shape}", (*where, key, index))
    for key in ("blocked_hosts", "stranded"):
        _typed(plan, doc, (key,), list)
    return plan


def _typed(plan: PlanFile, container: dict[str, Any], path: JsonPath, kind: type) -> Any:
    value = container.get(str(path[-1])) if isinstance(container, dict) else None
    if value is None:
        raise plan.error("missing", path)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise plan.error(f"must be a JSON {_KIND_NAMES[kind]}", path)
    return value


_KIND_NAMES: dict[type, str] = {dict: "object", list: "list", str: "string", bool: "boolean"}


# --- replay ----------------------------------------------------------------------------------------------------------
@dataclass
class Failure:
    wave: int
    step: int
    what: str  # the step, as an operator reads it
    reason: str
    line: int
    field: str

    def __str__(self) -> str:
        return f"wave {self.wave}, step {self.step} ({self.what}): {self.reason}"


@dataclass
class Verdict:
    source: str
    steps: int  # steps replayed (up to the failure)
    waves: int
    failure: Failure | None
    stranded: int
    blocked: int

    @property
    def replays(self) -> bool:
        return self.failure is None

    @property
    def complete(self) -> bool:
        return self.replays and not self.stranded and not self.blocked

    def to_json(self) -> dict[str, Any]:
        failure = None
        if self.failure is not None:
            f = self.failure
            failure = {"wave": f.wave, "step": f.step, "what": f.what, "reason": f.reason, "file": self.source,
                       "line": f.line, "field": f.field}  # fmt: skip
        return {"plan": self.source, "replays": self.replays, "complete": self.complete, "steps": self.steps,
                "waves": self.waves, "stranded_vms": self.stranded, "blocked_hosts": self.blocked,
                "failure": failure}  # fmt: skip


@dataclass
class _Host:
    index: int
    pool: str
    cls: HostClass
    free_memory: int
    free_vcpus: int
    vms: int


class _StepFailed(Exception):
    def __init__(self, reason: str, path: JsonPath) -> None:
        self.reason = reason
        self.path = path


def verify_plan(inv: Inventory, path: str | Path) -> Verdict:
    """Replay the plan file at ``path`` against ``inv`` (see the module docstring)."""
    plan = read_plan(path)
    hosts: dict[str, _Host] = {}
    rows = inv.db.execute("SELECT id, name, pool, release, abi_control, memory_mib, pcpus, vcpu_overcommit, "
                          "pool_master, gnttab_max_version FROM hosts")  # fmt: skip
    by_id: dict[int, str] = {}
    masters: dict[str, str] = {}  # pool -> its master
    for host_id, name, pool, release, control, memory, pcpus, ratio, master, max_version in rows:
        cls = HostClass(release, bool(control), max_version)
        hosts[name] = _Host(host_id, pool, cls, memory, vcpu_limit(pcpus, ratio), 0)
        by_id[host_id] = name
        if master:
            masters[pool] = name
    for host_id, memory, vcpus, count in inv.db.execute(
        "SELECT host_id, SUM(memory_mib), SUM(vcpus), COUNT(*) FROM vms GROUP BY host_id"
    ):
        host = hosts[by_id[host_id]]
        host.free_memory -= memory
        host.free_vcpus -= vcpus
        host.vms = count
    pool_sizes = Counter(h.pool for h in hosts.values())
    waves: list[dict[str, Any]] = plan.doc["waves"]
    upgraded_in: dict[str, int] = {}  # the (first) wave that upgrades each host: later moves onto it must suit it
    for number, wave in enumerate(waves):
        for name in wave["upgrade"]:
            upgraded_in.setdefault(name, number)
    done: set[str] = set()
    location: dict[str, str] = {}  # VMs the replay has moved: where they are now
    step = 0
    admits: dict[tuple[VmClass, HostClass], bool] = {}

    def admitted(vm: VmClass, host: HostClass) -> bool:
        if (vm, host) not in admits:
            admits[(vm, host)] = not class_admission(vm, host)
        return admits[(vm, host)]

    for number, wave in enumerate(waves):
        upgrading = set(wave["upgrade"])
        try:
            vms = _resolve(inv, [m[0] for m in wave["migrate"]] + [s[0] for s in wave["suspend"]], by_id)
            for index, (vm, source, target) in enumerate(wave["migrate"]):
                step += 1
                where: JsonPath = ("waves", number, "migrate", index)
                what = f"migrate {vm} from {source} to {target}"
                try:
                    _migrate(plan, hosts, vms, location, upgrading, upgraded_in, number, vm, source, target, where,
                             admitted)  # fmt: skip
                except _StepFailed as failed:
                    return _failed(plan, number, step, what, failed.reason, failed.path, steps=step - 1)
            suspended: Counter[str] = Counter()
            for index, (vm, host_name) in enumerate(wave["suspend"]):
                step += 1
                where = ("waves", number, "suspend", index)
                what = f"suspend {vm} on {host_name}"
                reason = _suspend(plan, hosts, vms, location, upgrading, vm, host_name, admitted)
                if reason:
                    return _failed(plan, number, step, what, reason, where, steps=step - 1)
                suspended[host_name] += 1
            per_pool: Counter[str] = Counter()
            for index, name in enumerate(wave["upgrade"]):
                step += 1
                where = ("waves", number, "upgrade", index)
                host = hosts.get(name)  # type: ignore[assignment]
                reason = ""
                if host is None:
                    reason = f"no host named {name!r} in the inventory"
                elif name in done:
                    reason = f"already upgraded in wave {upgraded_in[name] + 1}"
                else:
                    reason = _master_not_first(plan, hosts, masters, upgraded_in, number, name)
                if reason:
                    return _failed(plan, number, step, f"upgrade {name}", reason, where, steps=step - 1)
                done.add(name)
                pool = "" if plan.across_pools else host.pool
                per_pool[pool] += 1
                limit = plan.max_parallel.limit(len(hosts) if plan.across_pools else pool_sizes[host.pool])
                if per_pool[pool] > limit:
                    reason = (f"more than {limit} hosts of {'the fleet' if plan.across_pools else 'pool ' + pool} "
                              f"at once (max_parallel {plan.max_parallel})")  # fmt: skip
                    return _failed(plan, number, step, f"upgrade {name}", reason, where, steps=step - 1)
                left = host.vms - suspended[name]
                if left:
                    stuck = _left_behind(inv, name, location, {s[0] for s in wave["suspend"]})
                    reason = (f"{left} VM(s) would still be on it, neither migrated nor suspended"
                              + (f" (e.g. {', '.join(stuck)})" if stuck else ""))  # fmt: skip
                    return _failed(plan, number, step, f"upgrade {name}", reason, where, steps=step - 1)
                host.cls = host.cls.upgraded(plan.target)
        except _StepFailed as failed:  # a VM name that resolves to nothing, before any step of the wave ran
            return _failed(plan, number, step, "look up the wave's VMs", failed.reason, failed.path, steps=step)
    doc = plan.doc
    return Verdict(plan.source, step, len(waves), None, len(doc["stranded"]), len(doc["blocked_hosts"]))


def _master_not_first(plan: PlanFile, hosts: dict[str, _Host], masters: dict[str, str], upgraded_in: dict[str, int],
                      number: int, name: str) -> str:  # fmt: skip
    """Why upgrading ``name`` in wave ``number`` breaks the rule that its pool's master goes first ("" if not)."""
    master = masters.get(hosts[name].pool)
    if master is None or master == name:
        return ""
    wave = upgraded_in.get(master)
    if wave is not None:
        return "" if wave < number else f"its pool's master {master} is not upgraded before it (wave {wave + 1})"
    if get_release(hosts[master].cls.release).point >= get_release(plan.target.release).point:
        return ""
    return f"its pool's master {master} stays on Xen {hosts[master].cls.release}; a pool's master is upgraded first"


@dataclass
class _Vm:
    host: str
    cls: VmClass
    memory: int
    vcpus: int


def _resolve(inv: Inventory, names: list[str], by_id: dict[int, str]) -> dict[str, _Vm]:
    found: dict[str, _Vm] = {}
    for start in range(0, len(names), NAME_CHUNK):
        chunk = names[start : start + NAME_CHUNK]
        marks = ",".join("?" * len(chunk))
        for name, host_id, guest_type, policy, memory, vcpus in inv.db.execute(
            "SELECT v.name, v.host_id, v.guest_type, p.text, v.memory_mib, v.vcpus FROM vms v "
            f"JOIN policies p ON p.id = v.policy_id WHERE v.name IN ({marks})",
            chunk,
        ):
            found[name] = _Vm(by_id[host_id], VmClass(guest_type, policy), memory, vcpus)
    return found


def _migrate(plan: PlanFile, hosts: dict[str, _Host], vms: dict[str, _Vm], location: dict[str, str],
             upgrading: set[str], upgraded_in: dict[str, int], number: int, name: str, source: str, target: str,
             where: JsonPath, admitted: Admitted) -> None:  # fmt: skip
    vm = vms.get(name)
    if vm is None:
        raise _StepFailed(f"no VM named {name!r} in the inventory", (*where, 0))
    for column, host_name in ((1, source), (2, target)):
        if host_name not in hosts:
            raise _StepFailed(f"no host named {host_name!r} in the inventory", (*where, column))
    now = location.get(name, vm.host)
    if now != source:
        raise _StepFailed(f"{name} is on {now}, not {source}", (*where, 1))
    if source not in upgrading:
        raise _StepFailed(f"{source} is not upgraded in this wave: a plan only moves VMs off the hosts it upgrades",
                          (*where, 1))  # fmt: skip
    if target == source or target in upgrading:
        raise _StepFailed(f"{target} is upgraded in this same wave; it cannot take VMs", (*where, 2))
    src, dst = hosts[source], hosts[target]
    if not plan.across_pools and src.pool != dst.pool:
        raise _StepFailed(f"{source} is in pool {src.pool} and {target} in pool {dst.pool}; the plan does not move "
                          "VMs between pools", (*where, 2))  # fmt: skip
    if not admitted(vm.cls, dst.cls):
        reasons = "; ".join(str(r) for r in class_admission(vm.cls, dst.cls))
        raise _StepFailed(f"{target} ({dst.cls}) does not admit {vm.cls}: {reasons}", (*where, 2))
    later = upgraded_in.get(target)
    after = dst.cls.upgraded(plan.target)
    if later is not None and later > number and not admitted(vm.cls, after):
        reasons = "; ".join(str(r) for r in class_admission(vm.cls, after))
        raise _StepFailed(f"{target} is upgraded in wave {later + 1} to {after}, which does not admit "
                          f"{vm.cls}: {reasons}", (*where, 2))  # fmt: skip
    if dst.free_memory < vm.memory:
        raise _StepFailed(f"{target} has {max(dst.free_memory, 0)} MiB free; {name} needs {vm.memory} MiB",
                          (*where, 2))  # fmt: skip
    if dst.free_vcpus < vm.vcpus:
        raise _StepFailed(f"{target} may take {max(dst.free_vcpus, 0)} more vCPUs; {name} has {vm.vcpus}",
                          (*where, 2))  # fmt: skip
    src.free_memory += vm.memory
    src.free_vcpus += vm.vcpus
    src.vms -= 1
    dst.free_memory -= vm.memory
    dst.free_vcpus -= vm.vcpus
    dst.vms += 1
    location[name] = target


def _suspend(plan: PlanFile, hosts: dict[str, _Host], vms: dict[str, _Vm], location: dict[str, str],
             upgrading: set[str], name: str, host_name: str, admitted: Admitted) -> str:  # fmt: skip
    if plan.mode != "suspend-in-place":
        return "the plan's mode is migrate: it suspends nothing"
    vm = vms.get(name)
    if vm is None:
        return f"no VM named {name!r} in the inventory"
    if host_name not in hosts:
        return f"no host named {host_name!r} in the inventory"
    now = location.get(name, vm.host)
    if now != host_name:
        return f"{name} is on {now}, not {host_name}"
    if host_name not in upgrading:
        return f"{host_name} is not upgraded in this wave"
    after = hosts[host_name].cls.upgraded(plan.target)
    if not admitted(vm.cls, after):
        reasons = "; ".join(str(r) for r in class_admission(vm.cls, after))
        return f"{after} does not admit {vm.cls}, so it cannot resume there: {reasons}"
    return ""


def _left_behind(inv: Inventory, host: str, location: dict[str, str], suspended: set[str]) -> list[str]:
    """A few VMs that would still be on ``host`` (for the message only)."""
    arrived = [name for name, now in location.items() if now == host]
    query = "SELECT v.name FROM vms v JOIN hosts h ON h.id = v.host_id WHERE h.name = ? ORDER BY v.id"
    original = (row[0] for row in inv.db.execute(query, (host,)))
    stuck = (n for n in itertools.chain(original, arrived) if location.get(n, host) == host and n not in suspended)
    return list(itertools.islice(stuck, 3))


def _failed(plan: PlanFile, wave: int, step: int, what: str, reason: str, path: JsonPath, *,
            steps: int | None = None) -> Verdict:  # fmt: skip
    failure = Failure(wave + 1, step, what, reason, locate(plan.text, path), field_name(path))
    doc = plan.doc
    done = step if steps is None else steps
    return Verdict(plan.source, done, len(doc["waves"]), failure, len(doc["stranded"]), len(doc["blocked_hosts"]))
