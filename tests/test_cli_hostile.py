"""Issue 11: no traceback reaches a user, and every user-supplied string is printed literally.

Each command is fed names and values full of Rich markup, emoji codes and control characters, and inputs built to
exhaust it (deep nesting, huge numbers, devices, pipes). The output must show the strings as they are (control
characters escaped), the exit status must say what happened, and no Python traceback may appear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenabi.cli import main, visible
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import Toolstack
from xenabi.toolstack.transport import MigrationReceiver

HOSTILE = ["evil[/bold]", "[red]x[/red]", ":smile:", "back\\slash", "esc\x1b[31mred", "bell\x07", "rtl\u202eevil"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def config(tmp_path: Path, text: str, name: str = "vm.cfg") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", HOSTILE)
def test_config_show_prints_names_literally(tmp_path: Path, name: str) -> None:
    escaped = name.replace("\\", "\\\\")  # control characters go into the file raw (xl has no \\x escape)
    path = config(tmp_path, f'name = "{escaped}"\ntype = "hvm"\nmemory = 4\n')
    code, output = run("config", "show", path)
    assert code in (0, 1)  # shown, or refused by the lexer: either way literally
    if code == 0:
        assert visible(name) in output
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output


def test_visible_escapes_control_characters_only() -> None:
    assert visible("a\x1bb\x00c\u202ed") == "a\\x1bb\\x00c\\u202ed"
    assert visible("plain [red]x[/red] :smile: é") == "plain [red]x[/red] :smile: é"
    assert visible("two\nlines\ttab") == "two\nlines\ttab"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x = " + "[" * 1000 + "]" * 1000 + "\n", "nested more than 64 deep"),
        ('type = "hvm"\nvcpus = 129\n', "max_vcpus 129"),
        ("memory = " + "9" * 1_000_000 + "\n", "out of range"),
        ('type = "hvm"\nmemory = 4294967295\n', "ENOMEM"),  # 4 PiB: no machine maps that
    ],
    ids=["deep-nesting", "too-many-vcpus", "million-digits", "memory-beyond-any-host"],
)
def test_config_show_hostile_values_are_clear_errors(tmp_path: Path, text: str, words: str) -> None:
    code, output = run("config", "show", config(tmp_path, 'name = "vm"\n' + text))
    assert code == 1 and output.startswith("error: ") and words in output


def test_config_show_a_64000_mib_vm_costs_nothing(tmp_path: Path) -> None:
    code, output = run("config", "show", config(tmp_path, 'name = "big"\ntype = "hvm"\nmemory = 64000\n'), "--json")
    assert code == 0 and json.loads(output)["config"]["b_info"]["max_memkb"] == 64000 * 1024


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "fifo", "huge"])
def test_config_show_reads_only_regular_files_of_bounded_size(tmp_path: Path, device: str) -> None:
    if device == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    elif device == "huge":
        path = config(tmp_path, "# " + "x" * (2 << 20) + "\n")
    else:
        path = device
    code, output = run("config", "show", path)
    assert code == 1 and "error: file:" in output
    assert ("larger than 1048576 bytes" if device == "huge" else "not a regular file") in output


@pytest.mark.parametrize("command", [["save"], ["restore"], ["stream", "verify"], ["migrate"]])
def test_stream_commands_refuse_pipes_and_devices_without_blocking(tmp_path: Path, command: list[str]) -> None:
    path = str(tmp_path / "pipe")
    os.mkfifo(path)
    extra = {"save": [str(tmp_path / "out.save")], "migrate": ["--to", "127.0.0.1:9"]}.get(command[0], [])
    for source in (path, "/dev/zero"):
        code, output = run(*command, source, *extra)
        assert code == 1 and "not a regular file" in output


def fleet_with_names(tmp_path: Path, name: str) -> str:
    db = str(tmp_path / "fleet.sqlite")
    hosts = tmp_path / "hosts.json"
    safe = name.replace("\t", " ").replace("\x1b", "").replace("\x07", "").replace("\u202e", "")  # no controls
    hosts.write_text(json.dumps({
        "hosts": [
            {"name": f"h{safe}", "pool": f"p{safe}", "release": "4.14", "abi_control": True},
            {"name": f"old{safe}", "pool": f"p{safe}", "release": "4.6", "abi_control": False},
        ],
        "vms": [{"name": f"v{safe}", "guest_type": "hvm", "host": f"h{safe}", "policy": "pinned:evtchn_fifo"}],
    }))  # fmt: skip
    assert run("fleet", "import", "--db", db, str(hosts))[0] == 0
    return safe


@pytest.mark.parametrize("name", ["evil[/bold]", "[red]x[/red]", ":smile:"])
def test_fleet_commands_print_bracketed_names_literally(tmp_path: Path, name: str) -> None:
    safe = fleet_with_names(tmp_path, name)
    db = str(tmp_path / "fleet.sqlite")
    code, output = run("fleet", "where", "--db", db, f"v{safe}")
    assert code == 0 and f"v{safe}" in output and f"h{safe}" in output
    code, output = run("fleet", "level", "--db", db, f"p{safe}")
    assert code == 0 and f"p{safe}" in output
    code, output = run("fleet", "plan-upgrade", "--db", db, "--hosts", f"h{safe}", "--to", "4.3")
    assert code == 1 and f"h{safe}" in output
    code, output = run("fleet", "summary", "--db", db)
    assert code == 0


def test_fleet_level_of_a_missing_pool_names_it(tmp_path: Path) -> None:
    db = str(tmp_path / "fleet.sqlite")
    code, output = run("fleet", "level", "--db", db, "pool0003")
    assert code == 1 and "no pool named 'pool0003'" in output


@pytest.mark.parametrize("db", ["junk", "dir", "missing"])
def test_fleet_db_that_is_not_an_inventory(tmp_path: Path, db: str) -> None:
    path = {"junk": tmp_path / "junk.sqlite", "dir": tmp_path, "missing": tmp_path / "no" / "fleet.sqlite"}[db]
    if db == "junk":
        path.write_bytes(os.urandom(2048))
    code, output = run("fleet", "summary", "--db", str(path))
    assert code == 1 and "cannot open the inventory" in output


def test_migrate_of_a_markup_named_vm_completes_and_says_so(tmp_path: Path) -> None:
    receiver = MigrationReceiver(Toolstack(Hypervisor("4.14")), timeout=5.0)
    thread = threading.Thread(target=receiver.serve, kwargs={"once": True})
    thread.start()
    try:
        path = config(tmp_path, 'name = "evil[/bold]"\ntype = "hvm"\nmemory = 4\n')
        code, output = run("migrate", path, "--to", receiver.address)
        assert code == 0 and "migrated evil[/bold]" in output
    finally:
        thread.join(10)
        receiver.close()


def test_an_unexpected_exception_is_an_internal_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import xenabi.scenarios

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(xenabi.scenarios, "run_all", broken)
    code, output = run("demo")
    assert code == 2 and "internal error: ZeroDivisionError: injected" in output


def test_the_real_process_prints_no_traceback(tmp_path: Path) -> None:
    """The console script itself (not the test runner) on a few of the inputs above."""
    deep = config(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (["config", "show", deep], ["config", "show", "/dev/zero"], ["fleet", "summary", "--db", "/"]):
        done = subprocess.run([sys.executable, "-m", "xenabi", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
