"""The README cannot drift: every command block and every Python block runs, from a fresh folder holding only the
repository's ``examples/``, with no ``../shared`` beside it. A command may exit 1 where the README says it refuses
or is unsafe; none may print a traceback or an internal error."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SKIP = ("xenabi demo", "python3 -m venv", ". .venv/bin/activate")  # the demo has its own tests; the install lines


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XENABI_FLEET_DB", str(tmp_path / "fleet.sqlite"))
    return tmp_path


def command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```(?:sh)?\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("xenabi ") and not command.startswith(SKIP):
                lines.append(command)
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_readme_command_runs(fresh: Path) -> None:
    commands = command_lines()
    assert len(commands) >= 20
    port = str(free_port())
    server = None
    try:
        for command in commands:
            argv = [a.replace("8002", port) for a in shlex.split(command.rstrip("&").strip())]
            run = [sys.executable, "-m", "xenabi", *argv[1:]]
            if command.endswith("&"):  # host serve: started in the background, as the README does
                server = subprocess.Popen([*run, "--once"], stdout=subprocess.PIPE, text=True)
                assert server.stdout is not None and "listening" in server.stdout.readline()
                continue
            done = subprocess.run(run, capture_output=True, text=True, timeout=120, env=os.environ)
            output = done.stdout + done.stderr
            assert done.returncode in (0, 1), (command, output)
            assert "Traceback" not in output and "internal error" not in output, (command, output)
    finally:
        if server is not None:
            server.wait(30)


def test_every_readme_python_block_runs(fresh: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    namespace: dict[str, object] = {}
    started = time.perf_counter()
    exec(compile("\n".join(blocks), "README.md", "exec"), namespace)
    assert time.perf_counter() - started < 60
    assert "evtchn_fifo" in str(namespace["fingerprint"])
