"""The ``xenabi`` command: features, demo and --version, with their JSON forms."""

from __future__ import annotations

import json

from click.testing import CliRunner

from xenabi import __version__
from xenabi.cli import main
from xenabi.policy import legacy_policy
from xenabi.scenarios import abi_probe


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_features_json_lists_the_registry() -> None:
    result = CliRunner().invoke(main, ["features", "--json"])
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == ["evtchn_fifo", "evtchn_upcall"]
    assert rows[1]["gates"] == ["HVMOP_set_evtchn_upcall_vector"] and rows[1]["guest_types"] == ["hvm"]


def test_features_table() -> None:
    result = CliRunner().invoke(main, ["features"])
    assert result.exit_code == 0 and "XEN_DOMCTL_CDF_evtchn_fifo" in result.output


def test_demo_json_shows_control_reproducing_xen_4_3() -> None:
    result = CliRunner().invoke(main, ["demo", "--json", "--events", "20"])
    assert result.exit_code == 0
    rows = {(r["release"], r["abi_control"], r["policy"]): r for r in json.loads(result.output)}
    assert rows[("4.3", False, "everything implemented")]["abi"] == "2l"
    assert rows[("4.14", False, "everything implemented")]["same_as_xen_4_3"] is False
    pinned = rows[("4.14", True, "pinned: none")]
    assert pinned["same_as_xen_4_3"] is True and pinned["init_control"] == "-ENOSYS"
    assert all(r["handled"] == r["sent"] == 20 for r in rows.values())


def test_probe_is_computed_by_the_model() -> None:
    fifo = abi_probe("4.14", True, events=5)
    assert (fifo.abi, fifo.init_control, fifo.upcall_vector, fifo.upcall_via) == ("fifo", "0", "0", "vector")
    legacy = abi_probe("4.14", True, legacy_policy("4.3"), events=5)
    assert (legacy.abi, legacy.upcall_via, legacy.handled) == ("2l", "callback", 5)
