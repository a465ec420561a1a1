"""Issue 18: a host's boot option ``gnttab=max-ver:N`` in the fleet inventory.

The inventory's ``gnttab_max_version`` column is part of the host, as the ``Hypervisor`` constructor's argument is:
validated per release, a part of the host class, and kept by an upgrade. Admission (decision 8) refuses a VM pinned
with grant v2 on a host booted with ``max-ver:1`` (``host-disabled``), whoever asks: placement, summary, levelling,
the upgrade planner and the replay of a plan file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, RowBatch
from xenabi.fleet.planfile import verify_plan, write_plan
from xenabi.fleet.planner import HostClass, VmClass, class_admission, direct_admissible_hosts, level, summary, where
from xenabi.fleet.upgrade import plan_upgrade
from xenabi.hypervisor import Hypervisor
from xenabi.policy import RefusalKind

from .test_upgrade import issue7_inventory

V2 = "pinned:evtchn_fifo,evtchn_upcall,gnttab_v2"
NO_V2 = "pinned:evtchn_fifo,evtchn_upcall"


def fleet(hosts: list[dict[str, Any]], vms: list[dict[str, Any]], inv: Inventory | None = None) -> Inventory:
    inv = inv or Inventory(":memory:")
    inv.write_batches([RowBatch("<test>", list(enumerate(hosts, 1)), list(enumerate(vms, 1)))])
    return inv


def host(name: str, release: str, control: bool, max_version: int | None = None, **more: Any) -> dict[str, Any]:
    row = {"name": name, "pool": "p", "release": release, "abi_control": control, **more}
    if max_version is not None:
        row["gnttab_max_version"] = max_version
    return row


def vm(name: str, on: str, policy: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "guest_type": "hvm", "host": on, "policy": policy, **more}


# --- the column ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("release", "value", "fragment"),
    [("4.10.0", 1, "has no such boot option"), ("4.16", 3, "the version is 1 or 2"),
     ("4.16", 0, "the version is 1 or 2"), ("4.16", "one", "the version is 1 or 2"),
     ("4.16", True, "the version is 1 or 2"), ("4.16", 1.5, "the version is 1 or 2")],
)  # fmt: skip
def test_a_boot_option_the_release_lacks_is_refused_with_file_line_field(release: str, value: Any,
                                                                         fragment: str) -> None:  # fmt: skip
    """dc96c65ed6 (4.11; 4.8.5, 4.9.3, 4.10.2 by backport): the option the Hypervisor constructor refuses, the
    inventory refuses too, naming the row; nothing is written."""
    inv = fleet([host("ok", "4.16", True)], [])
    with pytest.raises(InventoryError) as info:
        fleet([host("new", "4.16", True), host("bad", release, True, value)], [], inv)
    assert (info.value.line, info.value.field) == (2, "gnttab_max_version") and fragment in str(info.value)
    assert inv.counts() == (1, 0)


@pytest.mark.parametrize("release", ["4.8.5", "4.9.3", "4.10.2", "4.11", "4.22"])
def test_the_option_is_accepted_where_xen_has_it(release: str) -> None:
    inv = fleet([host("h", release, True, 1)], [])
    assert inv.export_json()["hosts"][0]["gnttab_max_version"] == 1
    assert Hypervisor(release, True, memory_mb=1024, gnttab_max_version=1).boot_hidden == {"gnttab_v2"}


def test_csv_column_round_trips_and_defaults_to_2(tmp_path: Path) -> None:
    src = tmp_path / "hosts.csv"
    src.write_text("name,pool,release,abi_control,gnttab_max_version\na,p,4.16,1,1\nb,p,4.16,1,\n")
    inv = Inventory(":memory:")
    inv.import_file(src)
    hosts, vms = tmp_path / "out-hosts.csv", tmp_path / "out-vms.csv"
    with hosts.open("w") as h, vms.open("w") as v:
        inv.export_csv(h, v)
    lines = hosts.read_text().splitlines()
    assert lines[0].endswith(",gnttab_max_version") and lines[1].endswith(",1") and lines[2].endswith(",2")
    again = Inventory(":memory:")
    again.import_file(hosts)
    assert again.export_json() == inv.export_json()


def test_an_inventory_from_before_issue_18_gets_the_column_and_its_index(tmp_path: Path) -> None:
    path = issue7_inventory(tmp_path / "old.sqlite", "CREATE INDEX hosts_by_class ON hosts(release, abi_control);"
                            "INSERT INTO hosts VALUES (1, 'h', 'p', '4.14', 1);")  # fmt: skip
    with Inventory(path) as inv:
        assert inv.export_json()["hosts"][0]["gnttab_max_version"] == 2
        columns = [row[2] for row in inv.db.execute("PRAGMA index_info(hosts_by_class)")]
        assert columns == ["release", "abi_control", "gnttab_max_version"]


# --- admission, wherever the planner asks ----------------------------------------------------------------------------
def test_a_v2_vm_is_refused_host_disabled_by_a_max_ver_1_host() -> None:
    inv = fleet([host("a", "4.16", True), host("b", "4.16", True, 1), host("c", "4.16", True, 1)],
                [vm("v2", "a", V2), vm("v1", "b", NO_V2)])  # fmt: skip
    booted = HostClass("4.16", True, 1)
    refusals = class_admission(VmClass("hvm", V2), booted)
    assert [(r.feature, r.kind) for r in refusals] == [("gnttab_v2", RefusalKind.HOST_DISABLED)]
    placement = where(inv, "v2")
    assert placement.admissible_hosts == 1 and placement.refused_hosts == {booted: 2}
    assert placement.to_json()["refused"][0]["gnttab_max_version"] == 1
    assert where(inv, "v1").admissible_hosts == 3
    assert where(inv, "v1").examples[booted] == ["b", "c"]
    assert direct_admissible_hosts(inv, ["v2", "v1"]) == {"v2": 1, "v1": 3}
    rows = {s.vm_class.policy: s for s in summary(inv)}
    assert rows[V2].admissible_hosts == 1 and rows[V2].stranded_vms == 0
    assert "booted with gnttab=max-ver:1" in str(booted)


def test_level_leaves_v2_out_of_a_pool_with_a_max_ver_1_host() -> None:
    inv = fleet([host("a", "4.16", True), host("b", "4.16", True, 1)], [])
    hvm = next(lv for lv in level(inv, "p") if lv.guest_type == "hvm")
    assert hvm.policy == {"evtchn_fifo", "evtchn_upcall"}
    assert hvm.limiting == {"gnttab_v2": [HostClass("4.16", True, 1)]}


def test_level_of_legacy_hosts_that_differ_only_by_what_grant_opts_can_hide() -> None:
    """7379f9e10a (4.16): a host without ABI control can still hide grant v2 per domain, so a legacy 4.16 host
    booted with max-ver:1 and one without level to the policy without v2; before 4.16 they cannot."""
    inv = fleet([host("a", "4.16", False), host("b", "4.16", False, 1)], [])
    hvm = next(lv for lv in level(inv, "p") if lv.guest_type == "hvm")
    assert hvm.policy == {"evtchn_fifo", "evtchn_upcall"} and hvm.conflict == ""
    old = fleet([host("a", "4.14", False), host("b", "4.14", False, 1)], [])
    hvm = next(lv for lv in level(old, "p") if lv.guest_type == "hvm")
    assert hvm.policy is None
    assert hvm.conflict == ("hosts without ABI control expose features other hosts lack: "
                            "Xen 4.14 without ABI control: gnttab_v2")  # fmt: skip


# --- upgrades keep each host's boot options --------------------------------------------------------------------------
def booted_pool() -> Inventory:
    """``a`` (empty) is booted with max-ver:1; ``b`` carries a VM pinned with grant v2. Upgrading both one at a time
    empties ``a`` first; ``b``'s VM then has nowhere to go, since ``a`` stays max-ver:1 after its upgrade."""
    return fleet([host("a", "4.14", True, 1, memory_mib=8192), host("b", "4.14", True, memory_mib=8192)],
                 [vm("v", "b", V2, memory_mib=1024)])  # fmt: skip


def test_an_upgraded_host_keeps_its_boot_option() -> None:
    plan = plan_upgrade(booted_pool(), ["a", "b"], "4.16", True)
    assert [[plan.host_names[h] for h in w.hosts] for w in plan.waves] == [["a"]]
    (stuck,) = plan.stranded
    assert "gnttab_v2: this Xen 4.16.7 host's boot options hide it" in stuck.reason
    assert [plan.host_names[h] for h in plan.blocked_hosts] == ["b"]
    assert plan.pools["p"].after == {HostClass("4.16", True, 1): 0, HostClass("4.14", True): 1024}


def test_suspend_in_place_uses_the_hosts_own_upgraded_class() -> None:
    """The v2 VM may stay suspended on ``b``: b comes back as 4.16 without max-ver:1."""
    plan = plan_upgrade(booted_pool(), ["a", "b"], "4.16", True, suspend_in_place=True)
    assert plan.complete and plan.migrations == 0 and plan.suspends == 1


def test_a_plan_stops_replaying_once_its_target_is_booted_with_max_ver_1(tmp_path: Path) -> None:
    inv = fleet([host("a", "4.14", True, memory_mib=8192), host("b", "4.14", True, memory_mib=8192)],
                [vm("v", "b", V2, memory_mib=1024)])  # fmt: skip
    plan = plan_upgrade(inv, ["a", "b"], "4.16", True)
    assert plan.complete and plan.migrations == 1
    path = tmp_path / "plan.json"
    with path.open("w") as out:
        write_plan(plan, inv, out)
    assert verify_plan(inv, path).complete
    fleet([host("a", "4.14", True, 1, memory_mib=8192)], [], inv)  # the operator reboots a with max-ver:1
    verdict = verify_plan(inv, path)
    assert verdict.failure is not None
    assert "gnttab=max-ver:1" in verdict.failure.reason and "gnttab_v2" in verdict.failure.reason
