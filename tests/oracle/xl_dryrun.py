"""Debian's real ``xl`` 4.17 and ``libxenlight`` as oracles for the domain configuration JSON (issue 19).

``xl create -n`` is xl's dry run: it parses an xl.cfg exactly as ``xl create`` does and prints the
``libxl_domain_config`` it would build, as libxl JSON, without creating anything. It still opens a hypervisor and a
xenstore handle and asks the host a few questions first, so the test runs it with ``xl_dryrun_shim.c`` preloaded: a
small library, compiled here with the system C compiler, that answers those calls for a made-up 4-CPU x86 host.

The binary comes from Debian's xen-utils-4.17 (``.ci/fetch-xen-verifier`` unpacks it into ``.ci/cache/xen``) and the
libraries from ``.ci/fetch-libxlutil``; nothing is installed system-wide and no Xen code is copied. :func:`unavailable`
says why the oracle cannot run (the tests skip with that reason).

:func:`libxl_round_trip` sends JSON documents through real libxl: ``libxl_domain_config_from_json`` then
``libxl_domain_config_to_json``, in a child Python that loads libxenlight with ctypes under the same shim (so its
``libxl_ctx_alloc`` succeeds); what comes back is what a real ``xl restore`` would build the domain from.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import libxlutil

ROOT = Path(__file__).resolve().parents[2]
SHIM_SOURCE = Path(__file__).with_name("xl_dryrun_shim.c")
XL = Path(os.environ.get("XENABI_XL", ROOT / ".ci/cache/xen/usr/lib/xen-4.17/bin/xl"))
LIBDIR = libxlutil.LIBDIR


@functools.cache
def _shim() -> Path | str:
    """The compiled shim, or why it could not be built."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return "no C compiler to build the xl dry-run shim (install gcc)"
    out = Path(tempfile.mkdtemp(prefix="xenabi-xl-shim-")) / "xl_dryrun_shim.so"
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if built.returncode != 0:
        return f"the xl dry-run shim does not compile: {built.stderr.strip()[:300]}"
    return out


def _environment() -> dict[str, str]:
    shim = _shim()
    assert isinstance(shim, Path)
    return {**os.environ, "LD_PRELOAD": str(shim), "LD_LIBRARY_PATH": str(LIBDIR), "LC_ALL": "C"}


@functools.cache
def unavailable() -> str | None:
    """Why real xl cannot be run here, or None when it can."""
    if not XL.exists():
        return "Debian's xl 4.17 is not available (run .ci/fetch-xen-verifier to unpack xen-utils-4.17)"
    if not (LIBDIR / "libxenlight.so.4.17").exists():
        return "libxenlight 4.17 is not available (run .ci/fetch-libxlutil to unpack Debian's libraries)"
    shim = _shim()
    if isinstance(shim, str):
        return shim
    probe = dry_run('name = "probe"\ntype = "hvm"\n')
    if probe.doc is None:
        return f"xl create -n does not run under the shim: {probe.stderr.strip()[:300]}"
    return None


@dataclass
class DryRun:
    """What ``xl create -n`` did with a config: its exit status, the JSON it printed (None on failure), stderr."""

    returncode: int
    doc: dict[str, Any] | None
    stderr: str


def dry_run(text: str) -> DryRun:
    """Run ``xl create -n`` on xl.cfg ``text``."""
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="xenabi-dry-") as cfg:
        cfg.write(text)
        cfg.flush()
        done = subprocess.run([str(XL), "create", "-n", cfg.name], capture_output=True, text=True,
                              env=_environment(), timeout=60, check=False)  # fmt: skip
    doc = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    # xl's own chatter (no /etc/xen/xl.conf here; "Parsing config from ...") is not an error
    noise = ("Failed to read config file: /etc/xen/xl.conf", "Parsing config from ")
    stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith(noise))
    return DryRun(done.returncode, doc, stderr)


_ROUND_TRIP = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
toollog = ctypes.CDLL("libxentoollog.so.1", mode=ctypes.RTLD_GLOBAL)
toollog.xtl_createlogger_stdiostream.restype = ctypes.c_void_p
toollog.xtl_createlogger_stdiostream.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
light = ctypes.CDLL("libxenlight.so.4.17", mode=ctypes.RTLD_GLOBAL)
light.libxl_ctx_alloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
light.libxl_domain_config_from_json.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
light.libxl_domain_config_to_json.restype = ctypes.c_void_p
light.libxl_domain_config_to_json.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
light.libxl_domain_config_init.argtypes = [ctypes.c_void_p]
light.libxl_domain_config_dispose.argtypes = [ctypes.c_void_p]
logger = toollog.xtl_createlogger_stdiostream(libc.fdopen(2, b"w"), 8, 0)  # XTL_ERROR and up
ctx = ctypes.c_void_p()
assert light.libxl_ctx_alloc(ctypes.byref(ctx), 0, 0, logger) == 0, "libxl_ctx_alloc failed"
for line in sys.stdin:
    config = ctypes.create_string_buffer(1 << 16)  # larger than libxl_domain_config
    light.libxl_domain_config_init(config)
    rc = light.libxl_domain_config_from_json(ctx, config, line.encode())
    if rc:
        print(json.dumps({"error": rc}))
    else:
        text = ctypes.string_at(light.libxl_domain_config_to_json(ctx, config)).decode()
        print(json.dumps({"json": json.loads(text)}))
    light.libxl_domain_config_dispose(config)
    sys.stdout.flush()
"""


def libxl_round_trip(docs: list[dict[str, Any]]) -> list[dict[str, Any] | int]:
    """Each document through real libxl's from_json and to_json: the JSON libxl gives back, or its error code."""
    lines = "".join(json.dumps(doc) + "\n" for doc in docs)
    done = subprocess.run([sys.executable, "-c", _ROUND_TRIP], input=lines, capture_output=True, text=True,
                          env=_environment(), timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the libxl round trip failed: {done.stderr.strip()[:500]}")
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    return [answer.get("json", answer.get("error")) for answer in answers]


def leaves(doc: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a JSON document by its path (``b_info.type.hvm.vnc.enable``, ``disks[0].vdev``); an empty
    object or list is a leaf of its own (``{}``/``[]``), so that its presence is compared too."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict) and doc:
        for key, value in doc.items():
            out |= leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(doc, list) and doc:
        for index, value in enumerate(doc):
            out |= leaves(value, f"{path}[{index}]")
    else:
        out[path] = doc
    return out
