"""Building streams record by record for the reader tests (valid ones, and every way of breaking them)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable

from xenabi.toolstack.streams import libxc, libxl, xl
from xenabi.toolstack.streams.framing import record_parts
from xenabi.toolstack.streams.hvmctx import build_context
from xenabi.toolstack.streams.libxc import LibxcRecord
from xenabi.toolstack.streams.libxl import LibxlRecord

CONFIG = {"c_info": {"type": "hvm", "name": "t"}, "b_info": {"max_vcpus": 1, "target_memkb": 1024, "max_memkb": 1024}}


def rec(rtype: int, body: bytes = b"") -> bytes:
    return b"".join(bytes(part) for part in record_parts(rtype, (body,)))


def page_data(pfns: Iterable[int], fill: int = 0xAB, *, ptype: int = 0) -> bytes:
    pfns = list(pfns)
    entries = b"".join(struct.pack("<Q", ptype << 60 | pfn) for pfn in pfns)
    pages = b"".join(bytes([fill ^ (pfn & 0xFF)]) * 4096 for pfn in pfns) if libxc.page_type_has_data(ptype) else b""
    return rec(LibxcRecord.PAGE_DATA, libxc.PAGE_DATA_HEADER.pack(len(pfns), 0) + entries + pages)


def hvm_params(*pairs: tuple[int, int]) -> bytes:
    body = libxc.HVM_PARAMS_HEADER.pack(len(pairs), 0) + b"".join(libxc.HVM_PARAM_ENTRY.pack(*p) for p in pairs)
    return rec(LibxcRecord.HVM_PARAMS, body)


def libxc_body(
    *,
    version: int = 3,
    xen: tuple[int, int] = (4, 14),
    records: list[bytes] | None = None,
) -> bytes:
    if records is None:
        records = [
            rec(LibxcRecord.STATIC_DATA_END) if version == 3 else b"",
            page_data([0, 3, 4]),
            rec(LibxcRecord.X86_TSC_INFO, libxc.TSC_INFO.pack(0, 2_400_000, 0, 0, 0)),
            rec(LibxcRecord.HVM_CONTEXT, build_context()),
            hvm_params((1, 254), (17, 255)),
            rec(LibxcRecord.END),
        ]
    return libxc.pack_image_header(version) + libxc.pack_domain_header(libxc.DHDR_TYPE_X86_HVM, xen) + b"".join(records)


def libxl_body(libxc_stream: bytes | None = None, *, tail: list[bytes] | None = None) -> bytes:
    inner = libxc_body() if libxc_stream is None else libxc_stream
    end = [rec(LibxlRecord.END)] if tail is None else tail
    return libxl.pack_header() + rec(LibxlRecord.LIBXC_CONTEXT) + inner + b"".join(end)


def xl_stream(config: dict | None = None, libxl_stream: bytes | None = None) -> bytes:
    doc = json.dumps(CONFIG if config is None else config).encode() + b"\0"
    return xl.pack_header(doc) + (libxl_body() if libxl_stream is None else libxl_stream)
