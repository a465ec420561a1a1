"""Issue 15: the HTML reports are self-contained, escape every name, and render in headless Chromium with no console
error (Debian's ``chromium``, installed by ``.ci/run``; the browser tests skip with the reason when it is missing).
The screenshots are kept as test artifacts in ``$XENABI_TEST_ARTIFACTS`` (default ``.artifacts/``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.oracle import chromium
from xenabi.cli import main
from xenabi.fleet.inventory import Inventory, RowBatch
from xenabi.fleet.planner import host_classes, vm_classes
from xenabi.fleet.report import matrix_report, upgrade_report
from xenabi.fleet.upgrade import plan_upgrade

ARTIFACTS = Path(os.environ.get("XENABI_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
HOSTILE = '<img src=x onerror="alert(1)">&amp;"\''


def hostile_fleet() -> Inventory:
    """A small fleet whose names try to break out of the HTML; one VM cannot be placed."""
    inv = Inventory(":memory:")
    hosts = [{"name": f"{HOSTILE}{i}", "pool": f"pool{HOSTILE}", "release": r, "abi_control": c,
              "memory_mib": 16384 if i == 0 else 8192}
             for i, (r, c) in enumerate([("4.3", 0), ("4.14", 0), ("4.14", 1), ("4.22", 1)])]  # fmt: skip
    vms = [{"name": f"vm{HOSTILE}{i}", "guest_type": "hvm", "host": hosts[i % 2]["name"], "policy": p,
            "memory_mib": 1024} for i, p in enumerate(["legacy:4.3", "legacy:4.14", "pinned:evtchn_fifo"])]  # fmt: skip
    vms.append({"name": "huge", "guest_type": "hvm", "host": hosts[0]["name"], "policy": "legacy:4.3",
                "memory_mib": 12000})  # fmt: skip
    inv.write_batches([RowBatch("<t>", list(enumerate(hosts, 1)), list(enumerate(vms, 1)))])
    return inv


def test_reports_are_self_contained_and_escaped() -> None:
    inv = hostile_fleet()
    plan = plan_upgrade(inv, [f"{HOSTILE}0", f"{HOSTILE}1"], "4.22", True)
    for page in (upgrade_report(plan, inv), matrix_report(inv)):
        assert page.startswith("<!doctype html>") and "<script" not in page and "<img" not in page
        assert not re.search(r"""<[^>]*\s(src|href)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)""", page)
    page = upgrade_report(plan, inv)  # names pools, hosts and stranded VMs
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;&quot;&#x27;" in page
    assert "Stranded VMs (1)" in page and "huge" in page and "impossible as asked" in page


def test_matrix_has_a_cell_per_pair_with_the_reasons() -> None:
    inv = hostile_fleet()
    page = matrix_report(inv)
    cells = re.findall(r'<rect class="cell"[^>]*fill="([^"]+)"><title>([^<]*)</title>', page)
    assert len(cells) == len(vm_classes(inv)) * len(host_classes(inv))
    refusals = [tip for colour, tip in cells if "refuses" in tip]
    assert refusals and all(colour == "#c0392b" for colour, tip in cells if "refuses" in tip)
    assert any("has no ABI control and would expose it" in tip for tip in refusals)


def test_cli_writes_reports_and_plans(tmp_path: Path) -> None:
    db = str(tmp_path / "f.sqlite")
    runner = CliRunner()
    assert runner.invoke(main, ["fleet", "synth", "--vms", "4000", "--hosts", "40", "--db", db]).exit_code == 0
    report, plan, matrix = tmp_path / "r.html", tmp_path / "plan.json", tmp_path / "m.html"
    result = runner.invoke(main, ["fleet", "plan-upgrade", "--pool", "pool0000", "--to", "4.22", "--abi-control",
                                  "--max-parallel", "25%", "--db", db, "--out", str(plan),
                                  "--html", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "plan written to" in result.output and "waves" in result.output
    verified = runner.invoke(main, ["fleet", "plan", "verify", str(plan), "--db", db, "--json"])
    assert verified.exit_code == 0 and json.loads(verified.output)["replays"] is True
    assert runner.invoke(main, ["fleet", "summary", "--db", db, "--html", str(matrix)]).exit_code == 0
    assert "<svg" in report.read_text() and "<svg" in matrix.read_text()
    # the inventory changes: a VM of the first wave grows past every host's free memory
    first = json.loads(plan.read_text())["waves"][0]["migrate"][0][0]
    runner.invoke(main, ["fleet", "import", "--db", db, str(_grow(tmp_path, db, first))])
    failed = runner.invoke(main, ["fleet", "plan", "verify", str(plan), "--db", db])
    assert failed.exit_code == 1 and "wave 1, step 1" in failed.output and "MiB free" in failed.output
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  nope")
    broken = runner.invoke(main, ["fleet", "plan", "verify", str(bad), "--db", db])
    assert broken.exit_code == 1 and f"{bad}:2" in broken.output and "not JSON" in broken.output


def _grow(tmp_path: Path, db: str, vm: str) -> Path:
    with Inventory(db) as inv:
        kind, host, policy = inv.vm(vm)
        largest = inv.largest_host()[0]
    path = tmp_path / "grow.csv"
    path.write_text(f"name,guest_type,host,policy,memory_mib\n{vm},{kind},{host},{policy},{largest}\n")
    return path


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium.find()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian package chromium; .ci/run installs it when it can)")
    return binary


@pytest.mark.parametrize("kind", ["upgrade", "matrix"])
def test_report_renders_in_chromium_without_console_errors(browser: str, tmp_path: Path, kind: str) -> None:
    inv = Inventory(":memory:")
    inv.synth(20_000, 200, seed=5)
    if kind == "upgrade":
        hosts = [row[0] for row in inv.db.execute("SELECT name FROM hosts WHERE id % 5 < 3 ORDER BY id")]
        page = upgrade_report(plan_upgrade(inv, hosts, "4.22", True, max_parallel="10%"), inv)
    else:
        page = matrix_report(inv)
    path = tmp_path / f"{kind}.html"
    path.write_text(page)
    cells = "document.querySelectorAll('rect.cell').length"
    titled = "Array.from(document.querySelectorAll('rect.cell')).every(r => r.querySelector('title').textContent)"
    drawn = "Array.from(document.querySelectorAll('svg')).every(s => s.getBBox().width > 0)"
    waves = "document.querySelectorAll('g.wave').length"
    loaded = chromium.load(browser, path, [cells, titled, drawn, waves])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"fleet-{kind}-report.png"
    shot.write_bytes(loaded.screenshot)
    assert loaded.errors == [], loaded.errors
    assert loaded.values[cells] == len(vm_classes(inv)) * (len(host_classes(inv)) + (kind == "upgrade"))
    assert loaded.values[titled] is True and loaded.values[drawn] is True
    assert loaded.values[waves] == (0 if kind == "matrix" else page.count('<g class="wave">'))
    assert loaded.screenshot.startswith(b"\x89PNG") and shot.stat().st_size > 10_000
