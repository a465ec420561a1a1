"""The fleet inventory: validation with file, line and field; atomic imports; export round trips; synth."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory, VmPolicy, parse_policy

from ..conftest import write

HOSTS = "name,pool,release,abi_control\nh1,p1,4.14,1\nh2,p1,4.3,0\nh3,p2,4.6,no\n"
VMS = 'name,guest_type,host,policy\nv1,hvm,h1,"pinned:evtchn_fifo,evtchn_upcall"\n'


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    inventory = Inventory(tmp_path / "fleet.sqlite")
    inventory.import_file(write(tmp_path, "hosts.csv", HOSTS))
    return inventory


def test_csv_import(inv: Inventory, tmp_path: Path) -> None:
    vms = 'name,guest_type,host,policy\nv1,hvm,h1,"pinned:evtchn_fifo,evtchn_upcall"\nv2,pv,h2,legacy:4.3\n'
    assert inv.import_file(write(tmp_path, "vms.csv", vms)) == (0, 2)
    assert inv.counts() == (3, 2)
    assert inv.vm("v1") == ("hvm", "h1", "pinned:evtchn_fifo,evtchn_upcall")
    assert inv.host("h3")[1:] == ("p2", "4.6", False)


def test_policy_text_is_canonical() -> None:
    assert str(parse_policy("pinned:evtchn_upcall, evtchn_fifo")) == "pinned:evtchn_fifo,evtchn_upcall"
    assert str(parse_policy("pinned:")) == "pinned:" and parse_policy("pinned:").features("hvm") == frozenset()
    assert VmPolicy(legacy="4.6").features("hvm") == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}
    assert VmPolicy(legacy="4.6").features("pv") == {"evtchn_fifo", "gnttab_v2"}


BAD_ROWS = [
    # name, file name, text, line, field, fragment
    ("unknown-release", "h.csv", "name,pool,release,abi_control\nh9,p,4.14,1\nh8,p,5.0,1\n", 3, "release", "5.0"),
    ("bad-bool", "h.csv", "name,pool,release,abi_control\nh9,p,4.14,maybe\n", 2, "abi_control", "boolean"),
    ("missing-pool", "h.csv", "name,pool,release,abi_control\nh9,,4.14,1\n", 2, "pool", "missing"),
    ("short-row", "h.csv", "name,pool,release,abi_control\nh9,p,4.14\n", 2, None, "3 fields"),
    ("bad-header", "h.csv", "host,pool\nh9,p\n", 1, None, "header"),
    ("unknown-host", "v.csv", "name,guest_type,host,policy\nv9,hvm,nowhere,legacy:4.3\n", 2, "host", "nowhere"),
    ("unknown-feature", "v.csv", "name,guest_type,host,policy\nv9,hvm,h1,pinned:evtchn_lifo\n", 2, "policy", "lifo"),
    ("bad-policy", "v.csv", "name,guest_type,host,policy\nv9,hvm,h1,everything\n", 2, "policy", "neither"),
    ("legacy-unknown", "v.csv", "name,guest_type,host,policy\nv9,hvm,h1,legacy:4.2\n", 2, "policy", "4.2"),
    ("upcall-for-pv", "v.csv", "name,guest_type,host,policy\nv9,pv,h1,pinned:evtchn_upcall\n", 2, "policy", "pv"),
    ("bad-type", "v.csv", "name,guest_type,host,policy\nv9,kvm,h1,legacy:4.3\n", 2, "guest_type", "kvm"),
    ("json-syntax", "x.json", '{"hosts": [\n{"name": "h9",}\n]}', 2, None, "not JSON"),
    ("json-field", "x.json", '{"hosts": [{"name": "h9", "pool": "p", "release": "4.3", "abi_control": 0, "rack": 1}]}',
     1, "rack", "unknown field"),
    ("json-shape", "x.json", '{"hosts": {"name": "h9"}}', None, "hosts", "list"),
]  # fmt: skip


@pytest.mark.parametrize(("fname", "text", "line", "field", "fragment"), [c[1:] for c in BAD_ROWS],
                         ids=[c[0] for c in BAD_ROWS])  # fmt: skip
def test_bad_rows_name_file_line_field_and_import_nothing(
    inv: Inventory, tmp_path: Path, fname: str, text: str, line: int | None, field: str | None, fragment: str
) -> None:
    path = write(tmp_path, fname, text)
    before = inv.export_json()
    with pytest.raises(InventoryError) as info:
        inv.import_file(path)
    error = info.value
    assert (error.file, error.line, error.field) == (str(path), line, field), str(error)
    assert fragment in str(error)
    assert inv.export_json() == before


def test_interrupted_import_leaves_the_inventory_intact(inv: Inventory, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    inv.import_file(write(tmp_path, "vms.csv", VMS))
    before = inv.export_json()
    doc = {
        "hosts": [{"name": "h1", "pool": "new", "release": "4.14", "abi_control": True}],
        "vms": [{"name": f"v{i}", "guest_type": "hvm", "host": "h1", "policy": f"legacy:4.{3 + i % 12}"}
                for i in range(100, 200)],
    }  # fmt: skip
    calls = iter(range(10**6))
    real = inv.policy_id

    def failing(text: str) -> int:
        if next(calls) == 5:
            raise KeyboardInterrupt  # the operator pressed ^C half-way
        return real(text)

    monkeypatch.setattr(inv, "policy_id", failing)
    with pytest.raises(KeyboardInterrupt):
        inv.import_file(write(tmp_path, "more.json", json.dumps(doc)), replace=True)
    assert inv.export_json() == before


def test_export_import_round_trip(inv: Inventory, tmp_path: Path) -> None:
    inv.import_file(write(tmp_path, "vms.csv", VMS))
    doc = inv.export_json()
    path = write(tmp_path, "fleet.json", json.dumps(doc))
    other = Inventory(":memory:")
    assert other.import_file(path) == (3, 1) and other.export_json() == doc
    hosts, vms = io.StringIO(), io.StringIO()
    inv.export_csv(hosts, vms)
    third = Inventory(":memory:")
    third.import_file(write(tmp_path, "h2.csv", hosts.getvalue()))
    third.import_file(write(tmp_path, "v2.csv", vms.getvalue()))
    assert third.export_json() == doc


def test_reimport_updates_rows(inv: Inventory, tmp_path: Path) -> None:
    inv.import_file(write(tmp_path, "h.csv", "name,pool,release,abi_control\nh1,p9,4.13,0\n"))
    assert inv.counts() == (3, 0) and inv.host("h1")[1:] == ("p9", "4.13", False)


def test_synth_is_deterministic_and_valid() -> None:
    a, b = Inventory(":memory:"), Inventory(":memory:")
    a.synth(2000, 50, seed=3)
    b.synth(2000, 50, seed=3)
    assert a.counts() == (50, 2000) and a.export_json() == b.export_json()
    for row in a.export_json()["vms"]:
        parse_policy(row["policy"])


def test_every_release_of_the_table_imports_and_synth_is_a_modern_fleet(tmp_path: Path) -> None:
    """Issue 12: inventories take every release, a line or a point release; a bad one names the known range."""
    inv = Inventory(":memory:")
    text = "name,pool,release,abi_control\nh1,p,4.22,1\nh2,p,4.14.1,0\nh3,p,4.16,1\n"
    assert inv.import_file(write(tmp_path, "h.csv", text)) == (3, 0)
    vms = 'name,guest_type,host,policy\nv1,pvh,h2,legacy:4.14.1\nv2,pvh,h1,"pinned:evtchn_fifo,evtchn_upcall"\n'
    assert inv.import_file(write(tmp_path, "v.csv", vms)) == (0, 2)
    assert inv.host("h2")[2] == "4.14.1"
    with pytest.raises(InventoryError) as refused:
        inv.import_file(write(tmp_path, "bad.csv", "name,pool,release,abi_control\nh9,p,4.14.99,1\n"))
    assert refused.value.field == "release" and "never released" in str(refused.value)
    synth = Inventory(":memory:")
    synth.synth(1000, 25_000, seed=3)  # 50 pools of 500 hosts
    releases = dict(synth.db.execute("SELECT release, COUNT(*) FROM hosts GROUP BY release"))
    modern = sum(n for release, n in releases.items() if int(release.split(".")[1]) >= 16)
    assert modern > 0.7 * 25_000 and any(int(release.split(".")[1]) < 16 for release in releases)
