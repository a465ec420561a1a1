"""Streams written by xenabi pass Xen's own checker, ``verify-stream-v2`` (``spec/streams.md`` §3), at every layer.

The checker is GPL Xen code, so it is used as an external program and never copied: ``.ci/run`` unpacks Debian's
xen-utils into ``.ci/cache``; ``XEN_VERIFY_STREAM_V2`` may point at another copy. Without it these tests skip.
Known gap of the checker (spec §3): under Python 3 it rejects any non-empty EMULATOR_XENSTORE_DATA record, so the
streams here carry none.
"""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.streams import xl

ROOT = Path(__file__).resolve().parents[2]


def find_verifier() -> Path | None:
    candidates = [os.environ.get("XEN_VERIFY_STREAM_V2", "")]
    candidates += sorted(glob.glob(str(ROOT / ".ci/cache/xen/usr/lib/xen-*/bin/verify-stream-v2")))
    candidates += sorted(glob.glob("/usr/lib/xen-*/bin/verify-stream-v2"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


VERIFIER = find_verifier()
pytestmark = pytest.mark.skipif(VERIFIER is None, reason="Xen's verify-stream-v2 is not available")


def verify(data: bytes, fmt: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert VERIFIER is not None
    path = tmp_path / f"stream.{fmt}"
    path.write_bytes(data)
    pythonpath = VERIFIER.parent.parent / "lib" / "python"
    return subprocess.run(
        [sys.executable, str(VERIFIER), "--in", str(path), "--format", fmt, "-v"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(pythonpath)),
        timeout=120,
    )


def saved(release: str, control: bool, kind: str, memory: int, emulator: bytes | None = None) -> bytes:
    ts = Toolstack(Hypervisor(release, abi_control=control))
    domid = ts.create(DomainConfig.from_xl(f'name = "v"\ntype = "{kind}"\nmemory = {memory}\n'), start=True)
    ts.hv.domain(domid).emulator_context = emulator
    buffer = io.BytesIO()
    ts.save(domid, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("release", "control", "kind", "memory", "emulator"),
    [("4.14", True, "hvm", 4, None), ("4.6", False, "hvm", 8, b"QEVM\0\0\0\3"), ("4.3", False, "pvh", 1, None)],
)
def test_save_files_pass_verify_stream_v2(
    release: str, control: bool, kind: str, memory: int, emulator: bytes | None, tmp_path: Path
) -> None:
    data = saved(release, control, kind, memory, emulator)
    result = verify(data, "xl", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from Xen {release}" in result.stdout
    # the layers alone, as the checker's --format libxl and libxc read them
    libxl_stream = data[xl.HEADER_SIZE + 4 + int.from_bytes(data[48:52], "little") :]
    assert verify(libxl_stream, "libxl", tmp_path).returncode == 0
    libxc_stream = libxl_stream[16 + 8 :]  # after the libxl header and the LIBXC_CONTEXT record
    result = verify(libxc_stream, "libxc", tmp_path)  # (the checker stops at the libxc END)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Libxc Record: End" in result.stdout
