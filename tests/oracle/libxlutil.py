"""xl's own xl.cfg parser, ``libxlutil`` from Debian's Xen 4.17 packages, loaded with ctypes (GPL code, run as an
oracle and never copied).

``.ci/fetch-libxlutil`` unpacks the library and those it needs into ``.ci/cache/libxlutil`` (``XENABI_LIBXLUTIL``
may name another directory holding them). The libraries are preloaded in dependency order with ``RTLD_GLOBAL``, so
no ``LD_LIBRARY_PATH`` is needed and no hypervisor: parsing touches none. :func:`parse` reads a text as xl does,
with ``xlu_cfg_readdata`` (what ``xl create`` uses on a file's contents), and returns whether it was accepted, the
error report, and for each key asked about its value tree (strings and nested lists, through
``xlu_cfg_get_list``/``xlu_cfg_get_listitem2``/``xlu_cfg_value_*``) and its number as ``xlu_cfg_get_long`` converts
it. libxlutil cannot list the keys it read, so the caller names the candidates.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIBDIR = Path(os.environ.get("XENABI_LIBXLUTIL", ROOT / ".ci/cache/libxlutil/usr/lib/x86_64-linux-gnu"))
LOAD_ORDER = (
    "libxentoollog.so.1", "libxentoolcore.so.1", "libxencall.so.1", "libxenevtchn.so.1", "libxenforeignmemory.so.1",
    "libxengnttab.so.1", "libxendevicemodel.so.1", "libxenstore.so.4", "libxenhypfs.so.1", "libyajl.so.2",
    "libxenctrl.so.4.17", "libxenguest.so.4.17", "libxenlight.so.4.17", "libxlutil.so.4.17",
)  # fmt: skip
XLU_STRING, XLU_LIST = 0, 1


def _load() -> ctypes.CDLL | None:
    if not (LIBDIR / "libxlutil.so.4.17").exists():
        return None
    lib = None
    try:
        for name in LOAD_ORDER:
            lib = ctypes.CDLL(str(LIBDIR / name), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    assert lib is not None
    lib.xlu_cfg_init.restype = ctypes.c_void_p
    lib.xlu_cfg_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.xlu_cfg_readdata.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.xlu_cfg_destroy.argtypes = [ctypes.c_void_p]
    lib.xlu_cfg_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    lib.xlu_cfg_get_long.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_long), ctypes.c_int]
    lib.xlu_cfg_get_list.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int), ctypes.c_int,
    ]  # fmt: skip
    lib.xlu_cfg_get_listitem2.restype = ctypes.c_void_p
    lib.xlu_cfg_get_listitem2.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.xlu_cfg_value_type.argtypes = [ctypes.c_void_p]
    lib.xlu_cfg_value_get_string.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
    ]  # fmt: skip
    lib.xlu_cfg_value_get_list.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
    ]  # fmt: skip
    return lib


LIB = _load()
_libc = ctypes.CDLL(None)
_libc.fopen.restype = ctypes.c_void_p
_libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
_libc.fclose.argtypes = [ctypes.c_void_p]


@dataclass
class XlResult:
    """What libxlutil made of a text: accepted or not, its error report, values and numbers by key."""

    ok: bool
    report: str
    values: dict[str, Any] = field(default_factory=dict)  # key -> str or nested lists of str
    numbers: dict[str, int | None] = field(default_factory=dict)  # key -> xlu_cfg_get_long's value, None if refused


def _list(cfg: int, handle: int, count: int) -> list[Any]:
    assert LIB is not None
    items: list[Any] = []
    for index in range(count):
        value = LIB.xlu_cfg_get_listitem2(handle, index)
        if LIB.xlu_cfg_value_type(value) == XLU_STRING:
            out = ctypes.c_char_p()
            assert LIB.xlu_cfg_value_get_string(cfg, value, ctypes.byref(out), 1) == 0
            items.append(out.value.decode("utf-8", "surrogateescape") if out.value is not None else "")
        else:
            inner = ctypes.c_void_p()
            assert LIB.xlu_cfg_value_get_list(cfg, value, ctypes.byref(inner), 1) == 0
            items.append(_count_and_list(cfg, inner.value or 0))
    return items


def _count_and_list(cfg: int, handle: int) -> list[Any]:
    assert LIB is not None
    items = []
    index = 0
    while LIB.xlu_cfg_get_listitem2(handle, index):
        index += 1
    items = _list(cfg, handle, index)
    return items


def parse(text: bytes, keys: set[str]) -> XlResult:
    """Read ``text`` with ``xlu_cfg_readdata`` and look up each of ``keys``."""
    assert LIB is not None, "libxlutil is not available"
    with tempfile.NamedTemporaryFile(prefix="xlu-report-") as report_file:
        report = _libc.fopen(report_file.name.encode(), b"w")
        cfg = LIB.xlu_cfg_init(report, b"config")
        try:
            rc = LIB.xlu_cfg_readdata(cfg, text, len(text))
            result = XlResult(rc == 0, "")
            if rc == 0:
                for key in sorted(keys):
                    name = key.encode()
                    handle, count = ctypes.c_void_p(), ctypes.c_int()
                    if LIB.xlu_cfg_get_list(cfg, name, ctypes.byref(handle), ctypes.byref(count), 1) == 0:
                        result.values[key] = _list(cfg, handle.value or 0, count.value)
                        continue
                    value = ctypes.c_char_p()
                    if LIB.xlu_cfg_get_string(cfg, name, ctypes.byref(value), 1) == 0:
                        result.values[key] = (value.value or b"").decode("utf-8", "surrogateescape")
                        number = ctypes.c_long()
                        ok = LIB.xlu_cfg_get_long(cfg, name, ctypes.byref(number), 1) == 0
                        result.numbers[key] = number.value if ok else None
        finally:
            LIB.xlu_cfg_destroy(cfg)
            _libc.fclose(report)
        result.report = Path(report_file.name).read_text(errors="replace")
    return result
