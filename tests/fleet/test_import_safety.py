"""Issue 11: one import command is one transaction, whatever its files; every bad input is an InventoryError with
file, line and field; a killed import leaves the old inventory or the new one, never a mix."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenabi.errors import InventoryError
from xenabi.fleet.inventory import Inventory

from ..conftest import write

OLD_HOSTS = "name,pool,release,abi_control\nold1,p1,4.14,1\nold2,p1,4.6,0\n"
OLD_VMS = "name,guest_type,host,policy\noldvm,hvm,old1,pinned:evtchn_fifo\n"


def big_fleet(tmp_path: Path, hosts: int, vms: int) -> tuple[Path, Path]:
    host_lines = "".join(f"h{i},pool{i % 7},4.14,1\n" for i in range(hosts))
    vm_lines = "".join(f"v{i},hvm,h{i % hosts},pinned:evtchn_fifo\n" for i in range(vms))
    return (
        write(tmp_path, "hosts.csv", "name,pool,release,abi_control\n" + host_lines),
        write(tmp_path, "vms.csv", "name,guest_type,host,policy\n" + vm_lines),
    )


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    inventory = Inventory(tmp_path / "fleet.sqlite")
    inventory.import_files([write(tmp_path, "h0.csv", OLD_HOSTS), write(tmp_path, "v0.csv", OLD_VMS)])
    return inventory


# --- all or nothing ------------------------------------------------------------------------------------------
def test_replace_with_a_bad_row_in_the_second_file_keeps_the_old_inventory(inv: Inventory, tmp_path: Path) -> None:
    hosts, vms = big_fleet(tmp_path, 50, 100)
    vms.write_text(vms.read_text() + "vbad,hvm,h1,pinned:no_such_feature\n")
    with pytest.raises(InventoryError) as refused:
        inv.import_files([hosts, vms], replace=True)
    assert (refused.value.file, refused.value.line, refused.value.field) == (str(vms), 102, "policy")
    assert inv.counts() == (2, 1) and inv.vm("oldvm")[1] == "old1"


def test_a_vm_may_name_a_host_from_another_file_of_the_same_command(inv: Inventory, tmp_path: Path) -> None:
    hosts, vms = big_fleet(tmp_path, 3, 5)
    assert inv.import_files([vms, hosts], replace=True) == [(0, 5), (3, 0)]
    assert inv.counts() == (3, 5)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    files=st.integers(1, 4),
    fail_file=st.integers(0, 3),
    fail_at=st.integers(0, 40),
    kind=st.sampled_from(["bad-row", "unknown-host", "interrupt"]),
    replace=st.booleans(),
)
def test_one_import_command_is_all_or_nothing(
    tmp_path_factory: pytest.TempPathFactory, files: int, fail_file: int, fail_at: int, kind: str, replace: bool
) -> None:
    tmp = tmp_path_factory.mktemp("fleet")
    inv = Inventory(tmp / "fleet.sqlite")
    inv.import_files([write(tmp, "h0.csv", OLD_HOSTS), write(tmp, "v0.csv", OLD_VMS)])
    before = inv.export_json()
    paths = []
    for index in range(files):
        rows = [f"f{index}h{i},p,4.14,1" for i in range(10)]
        vm_rows = [f"f{index}v{i},pvh,f{index}h{i % 10},pinned:" for i in range(30)]
        if index == fail_file % files and kind != "interrupt":
            at = fail_at % len(vm_rows)
            vm_rows[at] = f"bad{at},pvh,f{index}h0,pinned:bogus" if kind == "bad-row" else f"bad{at},pvh,nohost,pinned:"
        paths.append(write(tmp, f"h{index + 1}.csv", "name,pool,release,abi_control\n" + "\n".join(rows) + "\n"))
        paths.append(write(tmp, f"v{index + 1}.csv", "name,guest_type,host,policy\n" + "\n".join(vm_rows) + "\n"))

    def progress(_n: int) -> None:
        raise KeyboardInterrupt  # ^C in the middle of writing

    with pytest.raises((InventoryError, KeyboardInterrupt)):
        if kind == "interrupt":
            # progress comes every PROGRESS_EVERY VMs of a file: make the interrupt land mid-write
            from xenabi.fleet import inventory as module

            original = module.PROGRESS_EVERY
            module.PROGRESS_EVERY = 1 + fail_at % 30
            try:
                inv.import_files(paths, replace=replace, progress=progress)
            finally:
                module.PROGRESS_EVERY = original
        else:
            inv.import_files(paths, replace=replace)
    assert inv.export_json() == before
    inv.close()


def kill_script(db: Path, hosts: Path, vms: Path) -> str:
    return (
        "import sys\n"
        "from xenabi.fleet.inventory import Inventory\n"
        f"inv = Inventory({str(db)!r})\n"
        "print('start', flush=True)\n"
        f"inv.import_files([{str(hosts)!r}, {str(vms)!r}], replace=True)\n"
        "print('done', flush=True)\n"
    )


def test_kill_9_at_random_points_of_a_two_file_replace_leaves_old_or_new(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    Inventory(db).import_files([write(tmp_path, "h0.csv", OLD_HOSTS), write(tmp_path, "v0.csv", OLD_VMS)])
    hosts, vms = big_fleet(tmp_path, 2000, 40_000)
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    seen = set()
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", kill_script(db, hosts, vms)], stdout=subprocess.PIPE)
        assert process.stdout is not None and process.stdout.readline() == b"start\n"
        timer = threading.Timer(rng.uniform(0.0, 0.6), process.send_signal, args=(signal.SIGKILL,))
        timer.start()
        process.wait(60)
        timer.cancel()
        with Inventory(db) as inv:
            counts = inv.counts()
        assert counts in ((2, 1), (2000, 40_000)), counts
        seen.add(counts)
        if counts == (2000, 40_000):  # back to the old inventory for the next round
            Inventory(db).import_files([write(tmp_path, "h0.csv", OLD_HOSTS), write(tmp_path, "v0.csv", OLD_VMS)],
                                       replace=True)  # fmt: skip


def test_two_concurrent_replaces_wait_or_fail_clearly(tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    first, second = Inventory(db), Inventory(db)
    first.db.execute("BEGIN IMMEDIATE")  # another import holds the write lock
    second.db.execute("PRAGMA busy_timeout = 200")  # wait 0.2 s rather than LOCK_TIMEOUT
    with pytest.raises(InventoryError) as refused:
        second.import_files([write(tmp_path, "h.csv", OLD_HOSTS)], replace=True)
    assert "another command is writing the inventory" in str(refused.value)
    first.db.execute("ROLLBACK")
    assert second.import_files([write(tmp_path, "h.csv", OLD_HOSTS)], replace=True) == [(2, 0)]


# --- bad input, each with file, line and field -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("name,pool,release,abi_control\nh1,p1,4.14,1\nh1,p2,4.14,1\n", 3, "name", "appears twice"),
        ("name,pool,release,abi_control\nh\x001,p1,4.14,1\n", 2, "name", "control character '\\x00'"),
        ("name,pool,release,abi_control\nh1,p1,4.14,1\n" + "x" * (200 << 10) + ",p,4.14,1\n", 3, None, "field larger"),
        ("name,pool,release,abi_control\nh\x1b[31m,p1,4.14,1\n", 2, "name", "control character"),
        ("name,pool,release,abi_control\n" + "h" * 300 + ",p1,4.14,1\n", 2, "name", "at most 256"),
    ],
    ids=["duplicate", "nul", "huge-field", "escape", "long-name"],
)
def test_bad_csv(inv: Inventory, tmp_path: Path, text: str, line: int, field: str | None, words: str) -> None:
    path = write(tmp_path, "hosts.csv", text)
    with pytest.raises(InventoryError) as refused:
        inv.import_files([path])
    assert (refused.value.file, refused.value.line, refused.value.field) == (str(path), line, field)
    assert words in str(refused.value)
    assert inv.counts() == (2, 1)


@pytest.mark.parametrize(
    ("doc", "line", "field", "words"),
    [
        ({"hosts": [{"name": ["a"], "pool": "p", "release": "4.14", "abi_control": True}]}, 1, "name", "JSON list"),
        ({"hosts": [{"name": {"a": 1}, "pool": "p", "release": "4.14", "abi_control": 1}]}, 1, "name", "JSON object"),
        ({"hosts": [{"name": "a", "pool": 7, "release": "4.14", "abi_control": 1}]}, 1, "pool", "JSON number"),
        ({"hosts": [{"name": "a\u0000b", "pool": "p", "release": "4.14", "abi_control": 1}]}, 1, "name", "control"),
    ],
    ids=["list-name", "object-name", "number-pool", "nul-name"],
)
def test_bad_json_values(inv: Inventory, tmp_path: Path, doc: dict, line: int, field: str, words: str) -> None:
    path = write(tmp_path, "fleet.json", json.dumps(doc))
    with pytest.raises(InventoryError) as refused:
        inv.import_files([path])
    assert (refused.value.line, refused.value.field) == (line, field) and words in str(refused.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"hosts": [' + "9" * 5000 + "]}", "digits")],
    ids=["deep", "huge-number"],
)
def test_json_the_parser_cannot_take(inv: Inventory, tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, "fleet.json", text)
    with pytest.raises(InventoryError) as refused:
        inv.import_files([path])
    assert refused.value.file == str(path) and words in str(refused.value)


@pytest.mark.parametrize("kind", ["random-bytes", "directory", "missing-folder"])
def test_db_that_is_not_an_inventory(tmp_path: Path, kind: str) -> None:
    if kind == "random-bytes":
        path = tmp_path / "junk.sqlite"
        path.write_bytes(os.urandom(4096))
    elif kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "no" / "such" / "fleet.sqlite"
    with pytest.raises(InventoryError) as refused:
        Inventory(path)
    assert refused.value.file == str(path) and "cannot open the inventory" in str(refused.value)
