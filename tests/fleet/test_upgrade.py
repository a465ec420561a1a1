"""Issue 15: capacity-aware rolling upgrade plans, their files and their replay.

Hand-built fleets with known optimal plans; hypothesis over random fleets (capacity never exceeded at any step,
every VM that moves or stays ends on a host that admits it, ``plan verify`` accepts every plan the planner makes);
and plans that stop replaying, at the right step, when the inventory changes after they were made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, RowBatch
from xenabi.fleet.planfile import plan_document, read_plan, verify_plan, write_plan
from xenabi.fleet.planner import HostClass, VmClass, class_admission
from xenabi.fleet.upgrade import MaxParallel, UpgradePlan, plan_upgrade
from xenabi.policy import get_release

HOST_KEYS = ("name", "pool", "release", "abi_control", "memory_mib", "pcpus", "vcpu_overcommit", "pool_master",
             "gnttab_max_version")  # fmt: skip
VM_KEYS = ("name", "guest_type", "host", "policy", "memory_mib", "vcpus")


def fleet(hosts: list[tuple[Any, ...]], vms: list[tuple[Any, ...]], inv: Inventory | None = None) -> Inventory:
    inv = inv or Inventory(":memory:")
    rows_h = [dict(zip(HOST_KEYS, h, strict=False)) for h in hosts]
    rows_v = [dict(zip(VM_KEYS, v, strict=False)) for v in vms]
    inv.write_batches([RowBatch("<test>", list(enumerate(rows_h, 1)), list(enumerate(rows_v, 1)))])
    return inv


def saved(plan: UpgradePlan, inv: Inventory, tmp_path: Path, name: str = "plan.json") -> Path:
    path = tmp_path / name
    with path.open("w") as out:
        write_plan(plan, inv, out)
    return path


def moves(plan: UpgradePlan, inv: Inventory) -> list[list[tuple[str, str, str]]]:
    doc = plan_document(plan, inv)
    return [[tuple(m) for m in wave["migrate"]] for wave in doc["waves"]]


# --- hand-built fleets with known plans -----------------------------------------------------------------------------
def test_capacity_exactly_full(tmp_path: Path) -> None:
    """Three VMs fill the one other host to the MiB and the vCPU: the plan moves all of them and has no headroom."""
    inv = fleet([("a", "p", "4.14", 0, 4096, 4), ("b", "p", "4.14", 0, 4096, 2, 2.0)],
                [("v1", "hvm", "a", "legacy:4.14", 2048, 2), ("v2", "hvm", "a", "legacy:4.14", 1024, 1),
                 ("v3", "hvm", "a", "legacy:4.14", 1024, 1)])  # fmt: skip
    plan = plan_upgrade(inv, ["a"], "4.14", False)
    assert plan.complete and len(plan.waves) == 1 and plan.migrations == 3
    assert sorted(moves(plan, inv)[0]) == [("v1", "a", "b"), ("v2", "a", "b"), ("v3", "a", "b")]
    assert plan.waves[0].headroom_mib == 0 and plan.pools["p"].min_headroom_mib == 0
    assert verify_plan(inv, saved(plan, inv, tmp_path)).complete


def test_one_vm_too_many_is_stranded_by_name() -> None:
    """One MiB more than fits: first-fit decreasing places the large VMs and strands the smallest; the host stays."""
    inv = fleet([("a", "p", "4.14", 0, 8192, 4), ("b", "p", "4.14", 0, 4096, 4)],
                [("v1", "hvm", "a", "legacy:4.14", 2048, 1), ("v2", "hvm", "a", "legacy:4.14", 2048, 1),
                 ("tiny", "hvm", "a", "legacy:4.14", 1, 1)])  # fmt: skip
    plan = plan_upgrade(inv, ["a"], "4.14", False)
    assert not plan.complete and plan.waves == [] and [plan.host_names[h] for h in plan.blocked_hosts] == ["a"]
    (stuck,) = plan.stranded
    assert stuck.memory_mib == 1 and "no admitting host has room" in stuck.reason
    assert plan_document(plan, inv)["stranded"][0]["vm"] == "tiny"


def test_chain_of_waves_that_only_works_in_one_order(tmp_path: Path) -> None:
    """x (legacy 4.3) has nowhere to go until y's host is upgraded to a controlled 4.22, and y can only leave for z.
    One host at a time: y's host must go first, then x moves onto it."""
    inv = fleet([("x-host", "p", "4.3", 0, 4096, 4), ("y-host", "p", "4.14", 0, 4096, 4),
                 ("z", "p", "4.14", 0, 2048, 4)],
                [("x", "hvm", "x-host", "legacy:4.3", 2048, 1),
                 ("y", "hvm", "y-host", "legacy:4.14", 2048, 1)])  # fmt: skip
    plan = plan_upgrade(inv, ["x-host", "y-host"], "4.22", True, max_parallel=1)
    assert plan.complete and [[plan.host_names[h] for h in w.hosts] for w in plan.waves] == [["y-host"], ["x-host"]]
    assert moves(plan, inv) == [[("y", "y-host", "z")], [("x", "x-host", "y-host")]]
    path = saved(plan, inv, tmp_path)
    assert verify_plan(inv, path).complete
    # the other order does not replay: wave 1 would move x onto a 4.14 host without ABI control
    doc = json.loads(path.read_text())
    doc["waves"][0]["upgrade"], doc["waves"][1]["upgrade"] = ["x-host"], ["y-host"]
    doc["waves"][0]["migrate"], doc["waves"][1]["migrate"] = [["x", "x-host", "y-host"]], [["y", "y-host", "z"]]
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(doc, indent=1))
    verdict = verify_plan(inv, swapped)
    assert verdict.failure is not None and (verdict.failure.wave, verdict.failure.step) == (1, 1)
    assert "does not admit" in verdict.failure.reason and verdict.failure.field == "waves[0].migrate[0][2]"


def test_no_vm_moves_twice_when_a_final_host_has_room() -> None:
    """Hosts already final (not upgraded) are tried before hosts still waiting for their upgrade."""
    inv = fleet([("a", "p", "4.14", 0, 4096), ("b", "p", "4.14", 0, 4096), ("s", "p", "4.14", 0, 8192)],
                [("v1", "hvm", "a", "legacy:4.14", 1024), ("v2", "hvm", "b", "legacy:4.14", 1024)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "b"], "4.14", False, max_parallel=1)
    assert plan.complete and plan.moved_twice == 0
    assert moves(plan, inv) == [[("v1", "a", "s")], [("v2", "b", "a")]]  # not onto b, which is upgraded next


def test_moving_twice_when_it_must() -> None:
    """Every host of the pool is upgraded, so the first wave's VMs can only wait on a host upgraded later."""
    inv = fleet([("a", "p", "4.14", 0, 4096), ("b", "p", "4.14", 0, 4096)],
                [("v1", "hvm", "a", "legacy:4.14", 1024), ("v2", "hvm", "b", "legacy:4.14", 2048)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "b"], "4.22", True, max_parallel=1)
    assert plan.complete and plan.moved_twice == 1
    assert moves(plan, inv) == [[("v1", "a", "b")], [("v2", "b", "a"), ("v1", "b", "a")]]


def test_suspend_in_place_only_where_the_new_release_admits() -> None:
    """4.14 to 4.17 without ABI control: the legacy 4.14 VM sees the same features and is suspended in place; the VM
    pinned to nothing would see FIFO appear, so it migrates to the controlled host. (To 4.22 nothing could stay:
    vcpu_phys_area and xenver_varbuf would appear.)"""
    inv = fleet([("a", "p", "4.14", 0, 4096), ("c", "p", "4.14", 1, 4096)],
                [("same", "hvm", "a", "legacy:4.14", 1024), ("bare", "hvm", "a", "pinned:", 1024)])  # fmt: skip
    plan = plan_upgrade(inv, ["a"], "4.17", False, suspend_in_place=True)
    doc = plan_document(plan, inv)
    assert plan.complete and doc["waves"][0]["suspend"] == [["same", "a"]]
    assert doc["waves"][0]["migrate"] == [["bare", "a", "c"]]
    assert plan_upgrade(inv, ["a"], "4.17", False).migrations == 2  # without the flag, everything leaves
    assert plan_upgrade(inv, ["a"], "4.22", False, suspend_in_place=True).suspends == 0


def test_vcpu_overcommit_limit_is_capacity() -> None:
    """b has the memory but may run only floor(2 * 1.5) = 3 vCPUs, two already in use."""
    inv = fleet([("a", "p", "4.14", 0, 4096, 4), ("b", "p", "4.14", 0, 8192, 2, 1.5)],
                [("busy", "hvm", "b", "legacy:4.14", 128, 2), ("wide", "hvm", "a", "legacy:4.14", 128, 2)])  # fmt: skip
    plan = plan_upgrade(inv, ["a"], "4.14", False)
    assert not plan.complete and "2 vCPUs" in plan.stranded[0].reason


def test_stranded_reasons() -> None:
    """No other host admits it; larger than every admitting host."""
    inv = fleet([("a", "p", "4.3", 0, 65536), ("b", "p", "4.5", 0, 4096), ("c", "p", "4.3", 0, 2048)],
                [("old", "hvm", "a", "legacy:4.14", 1024), ("big", "hvm", "a", "legacy:4.3", 4096)])  # fmt: skip
    plan = plan_upgrade(inv, ["a"], "4.3", False)
    reasons = {s.memory_mib: s.reason for s in plan.stranded}
    assert "no other host of the pool admits it" in reasons[1024]
    assert "larger than every admitting host" in reasons[4096]


def test_a_host_that_can_never_be_emptied_stays_and_takes_what_its_release_admits() -> None:
    """No host of the pool admits 'old' now or as 4.22 without ABI control: its host is left on 4.3 from the start
    (not retried wave after wave), and it is a final target for the legacy 4.3 VM of the host that is upgraded."""
    inv = fleet([("a", "p", "4.3", 0, 8192), ("b", "p", "4.14", 0, 8192), ("c", "p", "4.14", 0, 8192)],
                [("old", "hvm", "a", "legacy:4.3", 1024), ("mid", "hvm", "b", "legacy:4.14", 1024),
                 ("also-old", "hvm", "b", "legacy:4.3", 1024)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "b"], "4.22", False)
    assert [plan.host_names[h] for h in plan.blocked_hosts] == ["a"] and len(plan.stranded) == 1
    assert "no other host of the pool admits it" in plan.stranded[0].reason
    assert sorted(moves(plan, inv)[0]) == [("also-old", "b", "a"), ("mid", "b", "c")]


MASTER_FLEET = [("m", "p", "4.14", 0, 4096, 4, 4.0, 1), ("a", "p", "4.14", 0, 4096), ("b", "p", "4.14", 0, 8192)]


def test_the_pool_master_goes_first_and_alone() -> None:
    """XAPI's rule: a's VMs need less room, yet the master m is upgraded first, alone in its pool's wave."""
    inv = fleet(MASTER_FLEET, [("vm", "hvm", "m", "legacy:4.14", 2048), ("va", "hvm", "a", "legacy:4.14", 1024)])
    plan = plan_upgrade(inv, ["a", "m"], "4.22", True, max_parallel=2)
    assert plan.complete and [[plan.host_names[h] for h in w.hosts] for w in plan.waves] == [["m"], ["a"]]


def test_a_master_that_cannot_be_emptied_holds_its_pool_back(tmp_path: Path) -> None:
    inv = fleet(MASTER_FLEET, [("big", "hvm", "m", "legacy:4.14", 4096), ("fill", "hvm", "b", "legacy:4.14", 6144),
                               ("va", "hvm", "a", "legacy:4.14", 1024)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "m"], "4.22", True)
    assert not plan.complete and sorted(plan.host_names[h] for h in plan.blocked_hosts) == ["a", "m"]
    assert [plan_document(plan, inv)["stranded"][0]["vm"]] == ["big"] and "master m cannot be emptied" in plan.notes[0]
    assert verify_plan(inv, saved(plan, inv, tmp_path)).replays


def test_upgrading_past_a_master_that_stays_is_refused(tmp_path: Path) -> None:
    vms = [("va", "hvm", "a", "legacy:4.14", 1024), ("vm", "hvm", "m", "legacy:4.14", 2048)]
    inv = fleet(MASTER_FLEET, vms)
    with pytest.raises(InventoryError, match=r"its master m .* is not among the hosts to upgrade"):
        plan_upgrade(inv, ["a"], "4.22", True)
    assert plan_upgrade(inv, ["a"], "4.14", False).complete  # not past it: the master is on that release already
    # a plan made before m became the master no longer replays: a goes first
    other = fleet([("m", "p", "4.14", 0, 4096), *MASTER_FLEET[1:]], vms)
    path = saved(plan_upgrade(other, ["a", "m"], "4.22", True), other, tmp_path)
    assert json.loads(path.read_text())["waves"][0]["upgrade"] == ["a"]
    failure = verify_plan(inv, path).failure
    assert failure is not None and "its pool's master m is not upgraded before it" in failure.reason
    assert failure.field == "waves[0].upgrade[0]"


def test_one_master_per_pool(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("name,pool,release,abi_control,pool_master\nm1,p,4.14,1,yes\nx,q,4.14,1,\nm2,p,4.14,1,1\n")
    inv = Inventory(":memory:")
    with pytest.raises(InventoryError) as info:
        inv.import_file(path)
    assert (info.value.line, info.value.field) == (4, "pool_master") and inv.counts() == (0, 0)
    path.write_text("name,pool,release,abi_control,pool_master\nm1,p,4.14,1,perhaps\n")
    with pytest.raises(InventoryError) as info:
        inv.import_file(path)
    assert (info.value.line, info.value.field) == (2, "pool_master")


def test_pools_are_placement_domains_unless_across_pools() -> None:
    inv = fleet([("a", "p", "4.14", 0, 4096), ("b", "q", "4.14", 0, 4096)], [("v", "hvm", "a", "legacy:4.14", 1024)])
    assert not plan_upgrade(inv, ["a"], "4.14", False).complete
    plan = plan_upgrade(inv, ["a"], "4.14", False, across_pools=True)
    assert plan.complete and moves(plan, inv) == [[("v", "a", "b")]]


def test_a_host_already_over_capacity_takes_nothing() -> None:
    inv = fleet([("a", "p", "4.14", 0, 4096), ("b", "p", "4.14", 0, 2048)],
                [("v", "hvm", "a", "legacy:4.14", 128), ("w1", "hvm", "b", "legacy:4.14", 2048)])  # fmt: skip
    inv.db.execute("UPDATE hosts SET memory_mib = 1024 WHERE name = 'b'")  # the inventory says b is over capacity
    plan = plan_upgrade(inv, ["a"], "4.14", False)
    assert not plan.complete and [plan.host_names[h] for h in plan.over_capacity_hosts] == ["b"]


def test_waves_respect_max_parallel_per_pool() -> None:
    hosts = [(f"h{i}", "p", "4.14", 0, 4096) for i in range(10)] + [("s", "p", "4.14", 0, 1 << 20)]
    inv = fleet(hosts, [(f"v{i}", "hvm", f"h{i}", "legacy:4.14", 512) for i in range(10)])
    plan = plan_upgrade(inv, [f"h{i}" for i in range(10)], "4.22", True, max_parallel="30%")
    assert [len(w.hosts) for w in plan.waves] == [4, 4, 2]  # 30% of 11 hosts, rounded up
    assert [len(w.hosts) for w in plan_upgrade(inv, [f"h{i}" for i in range(10)], "4.22", True,
                                                max_parallel=3).waves] == [3, 3, 3, 1]  # fmt: skip


@pytest.mark.parametrize("text", ["0", "-1", "abc", "0%", "150%", "", "%"])
def test_max_parallel_bad(text: str) -> None:
    with pytest.raises(InventoryError) as info:
        MaxParallel.parse(text)
    assert info.value.field == "max_parallel"


def test_plan_request_errors() -> None:
    inv = fleet([("a", "p", "4.14", 0)], [])
    with pytest.raises(InventoryError, match="no host named"):
        plan_upgrade(inv, ["ghost"], "4.14", False)
    with pytest.raises(InventoryError) as info:
        plan_upgrade(inv, ["a"], "9.9", False)
    assert info.value.field == "release"


# --- capacity in the inventory --------------------------------------------------------------------------------------
def test_capacity_columns_are_optional_with_documented_defaults(tmp_path: Path) -> None:
    hosts = tmp_path / "h.csv"
    hosts.write_text("name,pool,release,abi_control\nh1,p,4.14,1\n")
    vms = tmp_path / "v.csv"
    vms.write_text("name,guest_type,host,policy,vcpus\nv1,hvm,h1,pinned:,\nv2,hvm,h1,pinned:,4\n")
    inv = Inventory(":memory:")
    inv.import_files([hosts, vms])
    doc = inv.export_json()
    assert doc["hosts"][0] | {} == {"name": "h1", "pool": "p", "release": "4.14", "abi_control": True,
                                    "memory_mib": 262144, "pcpus": 64, "vcpu_overcommit": 4.0,
                                    "pool_master": False, "gnttab_max_version": 2}  # fmt: skip
    assert [(v["memory_mib"], v["vcpus"]) for v in doc["vms"]] == [(32, 1), (32, 4)]


def issue7_inventory(path: Path, rows: str) -> Path:
    """An inventory file as issue 7 made them (no capacity or boot-option columns), with ``rows`` (SQL) in it."""
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool TEXT NOT NULL, release TEXT NOT "
        "NULL, abi_control INTEGER NOT NULL);"
        "CREATE TABLE policies (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);"
        "CREATE TABLE vms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, guest_type TEXT NOT NULL, host_id "
        "INTEGER NOT NULL, policy_id INTEGER NOT NULL);" + rows
    )
    db.commit()
    db.close()
    return path


def test_an_inventory_from_before_capacity_gets_the_columns(tmp_path: Path) -> None:
    rows = ("INSERT INTO hosts VALUES (1, 'h', 'p', '4.14', 0); INSERT INTO policies VALUES (1, 'legacy:4.14'); "
            "INSERT INTO vms VALUES (1, 'v', 'hvm', 1, 1);")  # fmt: skip
    path = issue7_inventory(tmp_path / "old.sqlite", rows)
    with Inventory(path) as inv:
        assert inv.export_json()["vms"][0]["memory_mib"] == 32 and inv.largest_host() == (262144, 256)


CAPACITY_ERRORS = [
    ("zero-memory", "name,pool,release,abi_control,memory_mib\nh,p,4.14,1,0\n", "memory_mib", "not above zero"),
    ("negative-cpus", "name,pool,release,abi_control,pcpus\nh,p,4.14,1,-4\n", "pcpus", "not above zero"),
    ("fraction", "name,pool,release,abi_control,memory_mib\nh,p,4.14,1,1.5\n", "memory_mib", "whole number"),
    ("huge", "name,pool,release,abi_control,memory_mib\nh,p,4.14,1,99999999999999\n", "memory_mib", "more than"),
    ("digits", "name,pool,release,abi_control,pcpus\nh,p,4.14,1," + "9" * 5000 + "\n", "pcpus", "whole number"),
    ("ratio", "name,pool,release,abi_control,vcpu_overcommit\nh,p,4.14,1,nan\n", "vcpu_overcommit", "above zero"),
    ("unknown-column", "name,pool,release,abi_control,rack\nh,p,4.14,1,3\n", "rack", "unknown column"),
]


@pytest.mark.parametrize(("text", "field", "fragment"), [c[1:] for c in CAPACITY_ERRORS],
                         ids=[c[0] for c in CAPACITY_ERRORS])  # fmt: skip
def test_bad_capacity_names_file_line_field(tmp_path: Path, text: str, field: str, fragment: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text)
    inv = Inventory(":memory:")
    with pytest.raises(InventoryError) as info:
        inv.import_file(path)
    error = info.value
    assert (error.file, error.field) == (str(path), field) and error.line in (1, 2) and fragment in error.message
    assert inv.counts() == (0, 0)


def test_a_vm_larger_than_any_host_is_refused_at_import(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps({
        "hosts": [{"name": "h", "pool": "p", "release": "4.14", "abi_control": 1, "memory_mib": 4096, "pcpus": 2,
                   "vcpu_overcommit": 1}],
        "vms": [{"name": "ok", "guest_type": "hvm", "host": "h", "policy": "pinned:", "memory_mib": 4096},
                {"name": "wide", "guest_type": "hvm", "host": "h", "policy": "pinned:", "vcpus": 3}],
    }))  # fmt: skip
    inv = Inventory(":memory:")
    with pytest.raises(InventoryError) as info:
        inv.import_file(path)
    assert (info.value.line, info.value.field) == (2, "vcpus") and "more than any host" in info.value.message
    assert inv.counts() == (0, 0)
    with pytest.raises(InventoryError) as info:
        inv.write_batches([RowBatch("x", [], [(7, {"name": "v", "guest_type": "hvm", "host": "h", "policy": "pinned:",
                                                   "memory_mib": True})])])  # fmt: skip
    assert (info.value.line, info.value.field) == (7, "memory_mib")


def test_synthetic_hosts_have_room_for_their_vms() -> None:
    inv = Inventory(":memory:")
    inv.synth(20_000, 200, seed=3)
    over = inv.db.execute(
        "SELECT COUNT(*) FROM hosts h JOIN (SELECT host_id, SUM(memory_mib) m, SUM(vcpus) c FROM vms GROUP BY host_id)"
        " u ON u.host_id = h.id WHERE u.m > h.memory_mib * 0.8 + 1 OR u.c > h.pcpus * h.vcpu_overcommit"
    ).fetchone()[0]
    assert over == 0


# --- random fleets ----------------------------------------------------------------------------------------------------
RELEASES = ["4.3", "4.5", "4.14", "4.22"]
POLICIES = ["pinned:", "pinned:evtchn_fifo", "legacy:4.3", "legacy:4.14", "legacy:4.22"]
host_st = st.tuples(st.sampled_from(RELEASES), st.booleans(), st.sampled_from([1024, 2048, 4096]), st.integers(1, 4),
                    st.sampled_from([1.0, 2.0]), st.sampled_from(["p", "q"]), st.sampled_from([2, 2, 1]))  # fmt: skip
vm_st = st.tuples(st.sampled_from(["hvm", "pvh", "pv"]), st.sampled_from(POLICIES), st.sampled_from([256, 512, 1024]),
                  st.integers(1, 2), st.integers(0, 100))  # fmt: skip
request_st = st.tuples(st.lists(st.booleans(), min_size=8, max_size=8), st.sampled_from(["1", "2", "50%"]),
                       st.booleans(), st.booleans(), st.sampled_from(RELEASES), st.booleans(),
                       st.booleans())  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(host_st, min_size=2, max_size=7), st.lists(vm_st, max_size=24), request_st)
def test_random_fleets_plans_are_safe_and_verify(tmp_path: Path, hosts: list[Any], vms: list[Any],
                                                 request: Any) -> None:  # fmt: skip
    masters = request[6]  # the first host of each pool is its master
    first = {pool: i for i, (*_rest, pool, _boot) in reversed(list(enumerate(hosts)))}
    # gnttab=max-ver:1 only where the release has it (4.11 on)
    rows_h = [(f"h{i}", pool, r, int(c), m, cpus, ratio, int(masters and first[pool] == i),
               boot if get_release(r).gnttab_max_version_opt else 2)
              for i, (r, c, m, cpus, ratio, pool, boot) in enumerate(hosts)]  # fmt: skip
    rows_v = [(f"v{i}", t, f"h{h % len(rows_h)}", p, m, min(v, rows_h[h % len(rows_h)][5]))
              for i, (t, p, m, v, h) in enumerate(vms)]  # fmt: skip
    inv = fleet(rows_h, rows_v)
    chosen, parallel, suspend, across, release, control, _masters = request
    names = [row[0] for i, row in enumerate(rows_h) if chosen[i]] or [rows_h[0][0]]
    try:
        plan = plan_upgrade(inv, names, release, control, max_parallel=parallel, suspend_in_place=suspend,
                            across_pools=across)  # fmt: skip
    except InventoryError as exc:  # only for a master left behind on an older release
        assert masters and "is not among the hosts to upgrade" in str(exc)
        return
    master_of = {r[1]: r[0] for r in rows_h if r[7]}
    upgraded_in: dict[str, int] = {}
    # an independent replay: capacity at every step, admission of every VM that moves or stays; a host keeps its
    # boot option across the upgrade
    host = {r[0]: {"pool": r[1], "cls": HostClass(r[2], bool(r[3]), r[8]), "mem": r[4], "cpu": int(r[5] * r[6]),
                   "after": HostClass(release, control, r[8])} for r in rows_h}  # fmt: skip
    where = {v[0]: v[2] for v in rows_v}
    vm = {v[0]: (VmClass(v[1], v[3]), v[4], v[5]) for v in rows_v}
    over_before = {name for name, h in host.items()
                   if _used(where, vm, name)[0] > h["mem"] or _used(where, vm, name)[1] > h["cpu"]}  # fmt: skip
    doc = plan_document(plan, inv)
    for wave in doc["waves"]:
        for name, source, dest in wave["migrate"]:
            assert where[name] == source and source in wave["upgrade"] and dest not in wave["upgrade"]
            assert not class_admission(vm[name][0], host[dest]["cls"])
            assert across or host[source]["pool"] == host[dest]["pool"]
            where[name] = dest
            mem, cpu = _used(where, vm, dest)
            assert mem <= host[dest]["mem"] and cpu <= host[dest]["cpu"], f"{dest} over capacity"
        for name, on in wave["suspend"]:
            assert where[name] == on and not class_admission(vm[name][0], host[on]["after"])
        for name in wave["upgrade"]:
            master = master_of.get(host[name]["pool"])
            if master is not None and master != name and master in names:  # it went first, in an earlier wave
                assert upgraded_in.get(master, 99) < wave["wave"], f"{name} before its master {master}"
            elif master is not None and master != name:  # left out: only when it is not older than the target
                assert get_release(host[master]["cls"].release).point >= get_release(release).point
            upgraded_in[name] = wave["wave"]
            left = [v for v, h in where.items() if h == name]
            assert sorted(left) == sorted(s[0] for s in wave["suspend"] if s[1] == name)
            host[name]["cls"] = host[name]["after"]
    for name, h in host.items():
        mem, cpu = _used(where, vm, name)
        assert name in over_before or (mem <= h["mem"] and cpu <= h["cpu"])
    moved = {m[0] for wave in doc["waves"] for m in wave["migrate"]}
    moved |= {s[0] for wave in doc["waves"] for s in wave["suspend"]}
    for name in moved:
        assert not class_admission(vm[name][0], host[where[name]]["cls"]), f"{name} ends on a host that refuses it"
    stranded_hosts = {s["host"] for s in doc["stranded"]}
    assert stranded_hosts <= set(doc["blocked_hosts"]) and plan.complete == (not doc["stranded"])
    verdict = verify_plan(inv, saved(plan, inv, tmp_path))
    assert verdict.replays, verdict.failure
    assert verdict.complete == plan.complete


def _used(where: dict[str, str], vm: dict[str, Any], host: str) -> tuple[int, int]:
    mine = [vm[name] for name, on in where.items() if on == host]
    return sum(m for _c, m, _v in mine), sum(v for _c, _m, v in mine)


# --- replay after the inventory changed -------------------------------------------------------------------------------
@pytest.fixture
def planned(tmp_path: Path) -> tuple[Inventory, Path]:
    inv = fleet([("a", "p", "4.14", 0, 8192, 8), ("b", "p", "4.14", 0, 8192, 8), ("s1", "p", "4.14", 0, 4096, 8),
                 ("s2", "p", "4.14", 0, 4096, 8)],
                [("v1", "hvm", "a", "legacy:4.14", 2048, 1), ("v2", "hvm", "a", "legacy:4.14", 2048, 1),
                 ("v3", "hvm", "b", "legacy:4.14", 2048, 1), ("v4", "hvm", "b", "legacy:4.14", 1024, 1)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "b"], "4.22", True, max_parallel=1)
    assert plan.complete
    path = saved(plan, inv, tmp_path)
    assert verify_plan(inv, path).complete
    return inv, path


def _step_line(path: Path, line: int) -> str:
    return path.read_text().splitlines()[line - 1]


MUTATIONS = [
    # name, inventory change, (wave, step), field, reason fragment, text on the failing line
    ("vm-grew", [("v4", "hvm", "b", "legacy:4.14", 3072, 1)], None, (1, 2), "waves[0].migrate[1][2]", "MiB free", "v4"),
    ("target-shrank", None, [("s1", "p", "4.14", 0, 2048, 8)], (1, 2), "waves[0].migrate[1][2]", "MiB free", "v4"),
    ("vm-moved", [("v1", "hvm", "s2", "legacy:4.14", 2048, 1)], None, (2, 4), "waves[1].migrate[0][1]", "is on s2",
     "v1"),
    ("target-class", None, [("s1", "p", "4.3", 0, 4096, 8)], (1, 1), "waves[0].migrate[0][2]", "does not admit", "v3"),
    ("fewer-cpus", None, [("s1", "p", "4.14", 0, 4096, 1, 1.0)], (1, 2), "waves[0].migrate[1][2]", "vCPUs", "v4"),
    ("vm-arrived", [("v9", "hvm", "a", "legacy:4.14", 128, 1)], None, (2, 6), "waves[1].upgrade[0]", "v9", '"a"'),
]  # fmt: skip


@pytest.mark.parametrize(("vms", "hosts", "at", "field", "reason", "on_line"), [m[1:] for m in MUTATIONS],
                         ids=[m[0] for m in MUTATIONS])  # fmt: skip
def test_inventory_changed_after_planning_fails_at_the_right_step(
    planned: tuple[Inventory, Path], vms: Any, hosts: Any, at: tuple[int, int], field: str, reason: str, on_line: str
) -> None:
    inv, path = planned
    fleet(hosts or [], vms or [], inv)
    verdict = verify_plan(inv, path)
    failure = verdict.failure
    assert failure is not None and not verdict.complete
    assert (failure.wave, failure.step, failure.field) == (*at, field) and reason in failure.reason
    assert on_line in _step_line(path, failure.line) and verdict.steps == at[1] - 1


def test_wave_limit_and_duplicates_are_checked(planned: tuple[Inventory, Path], tmp_path: Path) -> None:
    inv, path = planned
    doc = json.loads(path.read_text())
    both = json.loads(json.dumps(doc))
    both["waves"][0]["upgrade"].append("a")  # two hosts of the pool at once, with max_parallel 1
    both["waves"][0]["migrate"] += [["v1", "a", "s2"], ["v2", "a", "s2"]]
    del both["waves"][1]
    edited = tmp_path / "both.json"
    edited.write_text(json.dumps(both, indent=1))
    failure = verify_plan(inv, edited).failure
    assert failure is not None and "more than 1 hosts of pool p" in failure.reason and failure.step == 6
    doc["waves"][1]["upgrade"].append("b")
    doc["waves"][1]["migrate"] = [["v1", "a", "s2"], ["v2", "a", "s2"]]
    edited.write_text(json.dumps(doc, indent=1))
    failure = verify_plan(inv, edited).failure
    assert failure is not None and "already upgraded in wave 1" in failure.reason
    assert failure.field == "waves[1].upgrade[1]"


BAD_PLANS = [
    ("not-json", '{"plan": "xenabi-upgrade-plan",\n "version": 1,\n oops}', 3, None, "not JSON"),
    ("not-a-plan", '{"waves": []}', 1, "plan", "not an upgrade plan"),
    ("version", '{"plan": "xenabi-upgrade-plan", "version": 7}', 1, "version", "version 7"),
    ("release", None, 2, "summary.to.release", "5.1"),
    ("wave-type", None, 4, "waves[0].migrate[0]", "a list of 3 names"),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), [b[1:] for b in BAD_PLANS],
                         ids=[b[0] for b in BAD_PLANS])  # fmt: skip
def test_bad_plan_files(planned: tuple[Inventory, Path], tmp_path: Path, text: str | None, line: int,
                        field: str | None, fragment: str) -> None:  # fmt: skip
    inv, good = planned
    if text is None:
        text = good.read_text()
        text = text.replace('"release": "4.22"', '"release": "5.1"') if field == "summary.to.release" else \
            text.replace('"migrate": [\n    ["v', '"migrate": [\n    [1, "v', 1)  # fmt: skip
        if field == "waves[0].migrate[0]":
            line = text.splitlines().index(next(t for t in text.splitlines() if t.startswith('    [1, "v'))) + 1
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        verify_plan(inv, path)
    error = info.value
    assert (error.file, error.line, error.field) == (str(path), line, field) and fragment in str(error)
    with pytest.raises(InventoryError, match="not a regular file"):
        read_plan(tmp_path)


def test_unknown_host_in_a_plan_fails_at_its_step(planned: tuple[Inventory, Path], tmp_path: Path) -> None:
    inv, path = planned
    edited = tmp_path / "renamed.json"
    edited.write_text(path.read_text().replace('"s1"', '"s1-gone"'))
    failure = verify_plan(inv, edited).failure
    assert failure is not None and "no host named 's1-gone'" in failure.reason
    assert failure.field == "waves[0].migrate[0][2]" and "s1-gone" in _step_line(edited, failure.line)


def test_cli_refuses_bad_requests_with_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xenabi.cli import main

    db = str(tmp_path / "f.sqlite")
    runner = CliRunner()
    assert runner.invoke(main, ["fleet", "synth", "--vms", "200", "--hosts", "4", "--db", db]).exit_code == 0
    cases = [
        (["fleet", "plan-upgrade", "--hosts", "host000001", "--to", "4.22", "--max-parallel", "0%"], "max_parallel"),
        (["fleet", "plan-upgrade", "--hosts", "nope", "--to", "4.22"], "no host named 'nope'"),
        (["fleet", "plan-upgrade", "--hosts", "host000001", "--to", "5.0"], "release"),
        (["fleet", "plan", "verify", str(tmp_path / "missing.json")], "cannot read"),
    ]
    for argv, fragment in cases:
        result = runner.invoke(main, [*argv, "--db", db])
        assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output, argv
    # a plan that cannot be written whole is not written at all: no partial file is left behind
    (tmp_path / "taken").mkdir()
    result = runner.invoke(main, ["fleet", "plan-upgrade", "--hosts", "host000001", "--to", "4.22", "--db", db,
                                  "--out", str(tmp_path / "taken")])  # fmt: skip
    assert result.exit_code == 1 and "cannot write it" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.sqlite", "taken"]
