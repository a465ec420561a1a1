"""The ``xenabi`` command: features, demo, config show and --version, with their JSON forms."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from xenabi import __version__
from xenabi.cli import main
from xenabi.scenarios import SCENARIO_NAMES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_features_json_lists_the_registry() -> None:
    result = CliRunner().invoke(main, ["features", "--json"])
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == ["evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area",
                                             "xenver_varbuf"]  # fmt: skip
    assert rows[1]["gates"] == ["HVMOP_set_evtchn_upcall_vector"] and rows[1]["guest_types"] == ["hvm", "pvh"]
    assert rows[2]["gates"] == ["GNTTABOP_set_version with 2"] and rows[2]["cdf_flag"] is None
    assert rows[3]["gates"][0] == "VCPUOP_register_runstate_phys_area (after the vcpuid check)"
    assert rows[3]["xenfeat_bits"] == [18, 19] and rows[4]["gates"][0] == "XENVER_extraversion2"


def test_features_on_a_release_say_what_it_implements_and_its_own_knobs() -> None:
    rows = json.loads(CliRunner().invoke(main, ["features", "--release", "4.17", "--json"]).output)
    assert [row["implemented"] for row in rows] == [True, True, True, False, False]
    assert rows[2]["xen_knob"] == "gnttab_grant_opts"  # 4.16's grant_opts hides grant v2 without ABI control
    rows = json.loads(CliRunner().invoke(main, ["features", "--release", "4.15", "--json"]).output)
    assert rows[2]["xen_knob"] is None
    text = CliRunner().invoke(main, ["features", "--release", "4.22"]).output
    assert "abi_features bit 3 only" in text and "not implemented" not in text


def test_features_table() -> None:
    result = CliRunner().invoke(main, ["features"])
    assert result.exit_code == 0 and "XEN_DOMCTL_CDF_evtchn_fifo" in result.output


def test_demo_json_every_scenario_on_both_host_kinds() -> None:
    result = CliRunner().invoke(main, ["demo", "--json", "--rounds", "5"])
    assert result.exit_code == 0, result.output
    rows = {(r["scenario"], r["host"]): r for r in json.loads(result.output)}
    assert len(rows) == 2 * len(SCENARIO_NAMES)
    assert rows[("hibernate-across-upgrade", "uncontrolled")]["outcome"] == "corrupted"
    assert rows[("migrate-down", "uncontrolled")]["outcome"] == "crashed"
    assert rows[("phys-area-down", "uncontrolled")]["outcome"] == "crashed"
    hazards = {name for (name, _host), r in rows.items() if r["abi_hazard"]}
    assert hazards == set(SCENARIO_NAMES) - {"kexec", "kexec-4.14", "kexec-4.6"}
    assert all(r["outcome"] in ("fine", "refused") for (name, host), r in rows.items()
               if host == "controlled" and name in hazards)  # fmt: skip
    assert all(rows[(name, "controlled")]["outcome"] == rows[(name, "uncontrolled")]["outcome"]
               for name in set(SCENARIO_NAMES) - hazards)  # fmt: skip


def test_demo_names_kernel_and_release_in_every_line() -> None:
    result = CliRunner().invoke(main, ["demo", "--scenario", "upcall-down", "--scenario", "kexec-4.6",
                                       "--kernel", "6.1", "--rounds", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "migrated to 4.5), Linux 6.1, uncontrolled: crashed: BUG: HVMOP_set_evtchn_upcall_vector" in result.output
    assert "Unknown shutdown reason code 5. Destroying domain. [not an ABI hazard" in result.output


def test_demo_table_and_one_scenario() -> None:
    result = CliRunner().invoke(main, ["demo", "--scenario", "migrate-down", "--rounds", "3", "-v"])
    assert result.exit_code == 0
    assert "crashed" in result.output and "refused" in result.output
    assert "every controlled run of an ABI hazard is safe" in result.output
    assert "migrate-up" not in result.output


def test_demo_unknown_scenario() -> None:
    result = CliRunner().invoke(main, ["demo", "--scenario", "nope"])
    assert result.exit_code == 2 and "unknown scenario" in result.output


HVM_EXAMPLE = str(EXAMPLES / "hvm.cfg")


def test_config_show_hvm_example() -> None:
    result = CliRunner().invoke(main, ["config", "show", HVM_EXAMPLE])
    assert result.exit_code == 0, result.output
    for text in ("XEN_DOMCTL_CDF_evtchn_fifo", "0x40000006", "/domain/1/abi-features/evtchn_upcall", "pinned"):
        assert text in result.output


def test_config_show_json() -> None:
    result = CliRunner().invoke(main, ["config", "show", HVM_EXAMPLE, "--json"])
    report = json.loads(result.output)
    assert report["policy"]["features"] == ["evtchn_fifo", "evtchn_upcall", "gnttab_v2"]
    assert report["create_flags"]["value"] == "0x183"
    assert report["abi_features"] == {"value": "0x7", "names": ["evtchn_fifo", "evtchn_upcall", "gnttab_v2"]}
    assert report["cpuid"][6] == {
        "leaf": "0x40000006",
        "regs": ["0x00000007", "0x00000000", "0x00000000", "0x00000000"],
    }
    assert [node["path"] for node in report["hypfs"]] == [
        "/domain/1/abi-features/evtchn_fifo",
        "/domain/1/abi-features/evtchn_upcall",
        "/domain/1/abi-features/gnttab_v2",
    ]


def test_config_show_legacy_host() -> None:
    result = CliRunner().invoke(main, ["config", "show", HVM_EXAMPLE, "--release", "4.3", "--no-abi-control", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["policy"]["features"] == ["gnttab_v2"] and report["hypfs"] == []
    # Xen 4.3's highest hypervisor leaf is 0x40000002 (03d745c8bf raised it to 4 in 4.5)
    assert report["cpuid"][0]["regs"][0] == "0x40000002" and report["pinned"] is False
    # the policy's -1 is the host's default: what the domain really got is said beside it
    assert (report["policy"]["max_grant_frames"], report["grant_limits"]["max_grant_frames"]) == (-1, 32)
    assert report["grant_limits"]["max_maptrack_frames"] == 256  # 4.3: before the 1024 default of 4.5
    table = CliRunner().invoke(main, ["config", "show", HVM_EXAMPLE, "--release", "4.3", "--no-abi-control"])
    assert "-1 (the host's default: 32)" in table.output


def test_config_show_refusal_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "vm.cfg"
    path.write_text('name = "vm"\ntype = "hvm"\nxen_abi_features = [ "!evtchn_fifo" ]\n')
    result = CliRunner().invoke(main, ["config", "show", str(path), "--no-abi-control"])
    assert result.exit_code == 1 and "would expose it" in result.output


def test_config_show_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "vm.cfg"
    path.write_text('name = "vm"\nmemory = 12 8\n')
    result = CliRunner().invoke(main, ["config", "show", str(path), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.output)["error"]
    assert (error["type"], error["line"], error["column"]) == ("XlCfgError", 2, 13)


def test_config_show_unknown_release(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "show", HVM_EXAMPLE, "--release", "5.0"])
    assert result.exit_code == 1 and "Xen 5.0 is not modelled; known: Xen 4.3 to 4.22" in result.output


def test_config_show_reports_xl_quirks_as_warnings(tmp_path: Path) -> None:
    path = tmp_path / "vm.cfg"
    path.write_text('name = "vm\\101"\ntype = "hvm"\n')
    result = CliRunner().invoke(main, ["config", "show", str(path), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["config"]["c_info"]["name"] == "vm"
    assert len(report["warnings"]) == 1 and "octal escape" in report["warnings"][0]


def _modules_after(*args: str) -> set[str]:
    import subprocess
    import sys

    script = (
        "import sys\nfrom xenabi.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


def test_help_and_stream_verify_load_only_what_they_use(tmp_path: Path) -> None:
    """Issue 13: subcommands load lazily; --help imports no fleet, rich table or toolstack, and neither does
    stream verify."""
    heavy = {"xenabi.fleet.inventory", "xenabi.fleet.planner", "rich.table", "xenabi.toolstack.toolstack",
             "xenabi.hypervisor.hypervisor", "sqlite3"}  # fmt: skip
    assert not heavy & _modules_after("--help")
    from xenabi.hypervisor import Hypervisor
    from xenabi.toolstack import DomainConfig, Toolstack

    ts = Toolstack(Hypervisor("4.14"))
    save = tmp_path / "vm.save"
    ts.save(ts.create(DomainConfig.from_xl('name = "v"\ntype = "hvm"\nmemory = 4\n'), start=True), save)
    loaded = _modules_after("stream", "verify", str(save))
    assert "xenabi.toolstack.streams.reader" in loaded and not heavy & loaded
    result = CliRunner().invoke(main, ["--help"])
    assert "fleet" in result.output and "releases" in result.output and "stream" in result.output


def test_the_cli_package_has_no_import_circle() -> None:
    """Issue 14: command modules take their helpers from xenabi.cli.common, which imports none of them."""
    package = Path(__file__).resolve().parents[1] / "src" / "xenabi" / "cli"
    common = (package / "common.py").read_text()
    assert "from xenabi.cli" not in common and "import xenabi.cli" not in common
    for module in package.glob("*.py"):
        if module.name not in ("__init__.py", "common.py"):
            text = module.read_text()
            assert "from xenabi.cli import" not in text, module.name
            assert "from xenabi.cli.common import" in text, module.name


def test_demo_takes_each_kernel_and_names_the_known_ones_for_another() -> None:
    """Issue 21: --kernel 5.10 / 6.1 (repeatable); an unknown version is a usage error naming both."""
    ran = CliRunner().invoke(main, ["demo", "--json", "--rounds", "2", "--scenario", "migrate-down",
                                    "--kernel", "5.10", "--kernel", "6.1"])  # fmt: skip
    assert ran.exit_code == 0
    assert [(r["kernel"], r["host"]) for r in json.loads(ran.output)] == [
        ("Linux 5.10", "uncontrolled"), ("Linux 5.10", "controlled"),
        ("Linux 6.1", "uncontrolled"), ("Linux 6.1", "controlled"),
    ]  # fmt: skip
    bad = CliRunner().invoke(main, ["demo", "--kernel", "7.0"])
    assert bad.exit_code == 2 and "unknown guest kernel '7.0' (known: 5.10, 6.1)" in bad.output
