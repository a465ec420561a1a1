"""The planner: class-grouped answers equal per-pair evaluation; levelling; the fleet commands on small fleets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, RowBatch
from xenabi.fleet.planner import (
    HostClass,
    VmClass,
    class_admission,
    direct_admissible_hosts,
    level,
    summary,
    where,
)
from xenabi.policy import RELEASES, RefusalKind


def fleet(hosts: list[tuple[str, str, str, bool]], vms: list[tuple[str, str, str, str]], tmp_path=None) -> Inventory:
    inv = Inventory(":memory:")
    doc = {
        "hosts": [{"name": n, "pool": p, "release": r, "abi_control": c} for n, p, r, c in hosts],
        "vms": [{"name": n, "guest_type": t, "host": h, "policy": pol} for n, t, h, pol in vms],
    }
    inv.write_batches([RowBatch("<test>", list(enumerate(doc["hosts"], 1)), list(enumerate(doc["vms"], 1)))])
    return inv


# --- table-driven admission of VM classes (the same function as the toolstack's) ------------------------------------
CLASS_CASES = [
    ("legacy-4.3-on-legacy-4.3", "hvm", "legacy:4.3", "4.3", False, []),
    ("legacy-4.3-on-legacy-4.14", "hvm", "legacy:4.3", "4.14", False, [("evtchn_fifo", "would-appear"),
                                                                       ("evtchn_upcall", "would-appear")]),
    ("legacy-4.3-on-controlled-4.14", "hvm", "legacy:4.3", "4.14", True, []),
    ("legacy-4.6-pv-on-legacy-4.14", "pv", "legacy:4.6", "4.14", False, []),
    ("legacy-4.14-on-legacy-4.5", "hvm", "legacy:4.14", "4.5", False, [("evtchn_upcall", "not-implemented")]),
    ("pinned-fifo-on-controlled-4.5", "pvh", "pinned:evtchn_fifo", "4.5", True, []),
    ("pinned-none-on-legacy-4.4", "pv", "pinned:", "4.4", False, [("evtchn_fifo", "would-appear"),
                                                                  ("gnttab_v2", "would-appear")]),
    ("legacy-4.17-on-legacy-4.18", "hvm", "legacy:4.17", "4.18", False, [("vcpu_phys_area", "would-appear")]),
    ("legacy-4.18-on-controlled-4.17", "hvm", "legacy:4.18", "4.17", True, [("vcpu_phys_area", "not-implemented")]),
    ("no-grant-v2-on-legacy-4.16", "hvm", "pinned:evtchn_fifo,evtchn_upcall", "4.16", False, []),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "policy", "release", "control", "expected"), [c[1:] for c in CLASS_CASES],
                         ids=[c[0] for c in CLASS_CASES])  # fmt: skip
def test_class_admission(kind: str, policy: str, release: str, control: bool, expected: list[tuple[str, str]]) -> None:
    refusals = class_admission(VmClass(kind, policy), HostClass(release, control))
    assert [(r.feature, r.kind.value) for r in refusals] == expected
    assert all(isinstance(r.kind, RefusalKind) for r in refusals)


# --- small hand-built fleets ------------------------------------------------------------------------------------------
HOSTS = [
    ("old1", "edge", "4.3", False),
    ("old2", "edge", "4.3", False),
    ("mid", "edge", "4.6", False),
    ("new1", "core", "4.14", True),
    ("new2", "core", "4.14", True),
    ("leg14", "core", "4.14", False),
]
VMS = [
    ("a", "hvm", "old1", "legacy:4.3"),
    ("b", "hvm", "old2", "legacy:4.3"),
    ("c", "pv", "mid", "legacy:4.6"),
    ("d", "hvm", "new1", "pinned:evtchn_fifo,evtchn_upcall,gnttab_v2"),
    ("e", "hvm", "new2", "pinned:"),
]


def test_where_lists_admitting_hosts_and_reasons() -> None:
    inv = fleet(HOSTS, VMS)
    placement = where(inv, "a")
    assert placement.admissible == {HostClass("4.3", False): 2, HostClass("4.14", True): 2}
    assert placement.examples[HostClass("4.14", True)] == ["new1", "new2"]
    reasons = {hc: [r.feature for r in rs] for hc, rs in placement.refused.items()}
    assert reasons == {HostClass("4.6", False): ["evtchn_fifo", "evtchn_upcall"],
                       HostClass("4.14", False): ["evtchn_fifo", "evtchn_upcall"]}  # fmt: skip
    json.dumps(placement.to_json())
    with pytest.raises(InventoryError):
        where(inv, "zz")


def test_summary_counts() -> None:
    rows = {(s.vm_class.guest_type, s.vm_class.policy): s for s in summary(fleet(HOSTS, VMS))}
    assert rows[("hvm", "legacy:4.3")].vms == 2 and rows[("hvm", "legacy:4.3")].admissible_hosts == 4
    assert rows[("hvm", "pinned:evtchn_fifo,evtchn_upcall,gnttab_v2")].admissible_hosts == 4  # new1, new2, mid, leg14
    # pinned to nothing: only the controlled hosts, since even 4.3 shows grant v2 and cannot hide it
    assert rows[("hvm", "pinned:")].admissible_hosts == 2 and rows[("hvm", "pinned:")].stranded_vms == 0


def test_level_of_a_mixed_controlled_pool() -> None:
    inv = fleet([("x", "p", "4.5", True), ("y", "p", "4.14", True), ("z", "p", "4.14", True)], [])
    by_type = {lv.guest_type: lv for lv in level(inv, "p")}
    assert by_type["hvm"].policy == {"evtchn_fifo", "gnttab_v2"}
    assert by_type["hvm"].limiting == {"evtchn_upcall": [HostClass("4.5", True)]}
    assert by_type["pv"].policy == {"evtchn_fifo", "gnttab_v2"} and by_type["pv"].limiting == {}


def test_level_with_one_legacy_release_is_that_release() -> None:
    inv = fleet([("x", "p", "4.5", False), ("y", "p", "4.14", True)], [])
    hvm = next(lv for lv in level(inv, "p") if lv.guest_type == "hvm")
    assert hvm.policy == {"evtchn_fifo", "gnttab_v2"} and hvm.conflict == ""


def test_level_impossible_with_two_legacy_releases() -> None:
    inv = fleet(HOSTS, [])
    edge = {lv.guest_type: lv for lv in level(inv, "edge")}
    assert edge["hvm"].policy is None and "expose features other hosts lack" in edge["hvm"].conflict
    with pytest.raises(InventoryError):
        level(inv, "nope")


# --- class-grouped equals per-pair ----------------------------------------------------------------------------------
host_rows = st.lists(st.tuples(st.sampled_from(list(RELEASES)), st.booleans()), min_size=1, max_size=8)
vm_rows = st.lists(
    st.tuples(st.sampled_from(["hvm", "pvh", "pv"]),
              st.sampled_from(["pinned:", "pinned:evtchn_fifo", "pinned:evtchn_fifo,evtchn_upcall", "legacy:4.3",
                               "legacy:4.5", "legacy:4.14"]),
              st.integers(0, 7)),
    min_size=1, max_size=12,
)  # fmt: skip


@given(host_rows, vm_rows)
def test_grouped_answer_equals_per_pair_evaluation(
    hosts: list[tuple[str, bool]], vms: list[tuple[str, str, int]]
) -> None:
    hs = [(f"h{i}", "p", r, c) for i, (r, c) in enumerate(hosts)]
    vs = [(f"v{i}", t, f"h{h % len(hs)}", pol if not (t != "hvm" and "upcall" in pol) else "pinned:evtchn_fifo")
          for i, (t, pol, h) in enumerate(vms)]  # fmt: skip
    inv = fleet(hs, vs)
    direct = direct_admissible_hosts(inv, [v[0] for v in vs])
    for name, *_ in vs:
        assert where(inv, name).admissible_hosts == direct[name]
    grouped = {(s.vm_class.guest_type, s.vm_class.policy): s.admissible_hosts for s in summary(inv)}
    for name, kind, _h, policy in vs:
        assert grouped[(kind, policy)] == direct[name]


# --- the command ------------------------------------------------------------------------------------------------------
def test_fleet_commands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xenabi.cli import main

    db = str(tmp_path / "f.sqlite")
    runner = CliRunner()
    assert runner.invoke(main, ["fleet", "synth", "--vms", "3000", "--hosts", "40", "--db", db]).exit_code == 0
    result = runner.invoke(main, ["fleet", "where", "vm00000001", "--db", db, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["vm"] == "vm00000001"
    assert runner.invoke(main, ["fleet", "summary", "--db", db]).exit_code == 0
    assert runner.invoke(main, ["fleet", "level", "pool0000", "--db", db]).exit_code == 0
    plan = runner.invoke(main, ["fleet", "plan-upgrade", "--pool", "pool0000", "--to", "4.14", "--abi-control",
                                "--db", db, "--json"])  # fmt: skip
    assert plan.exit_code == 0 and json.loads(plan.output)["summary"]["complete"] is True
    out = tmp_path / "export.json"
    assert runner.invoke(main, ["fleet", "export", "--db", db, "--out", str(out)]).exit_code == 0
    db2 = str(tmp_path / "g.sqlite")
    imported = runner.invoke(main, ["fleet", "import", str(out), "--db", db2, "--json"])
    assert json.loads(imported.output)["inventory"] == {"hosts": 40, "vms": 3000}
    bad = runner.invoke(main, ["fleet", "where", "nope", "--db", db])
    assert bad.exit_code == 1 and "no VM named" in bad.output


def test_unsafe_plan_exits_1(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xenabi.cli import main

    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({
        "hosts": [{"name": "o", "pool": "p", "release": "4.3", "abi_control": False},
                  {"name": "n", "pool": "p", "release": "4.14", "abi_control": False}],
        "vms": [{"name": "a", "guest_type": "hvm", "host": "o", "policy": "legacy:4.3"}],
    }))  # fmt: skip
    db = str(tmp_path / "f.sqlite")
    runner = CliRunner()
    assert runner.invoke(main, ["fleet", "import", str(path), "--db", db]).exit_code == 0
    result = runner.invoke(main, ["fleet", "plan-upgrade", "--hosts", "o", "--to", "4.14", "--db", db])
    assert result.exit_code == 1 and "IMPOSSIBLE" in result.output
    assert "no other host of the pool admits it" in result.output
