"""Stream formats (``spec/streams.md`` §3): golden bytes, struct sizes, and every rejection of the strict reader."""

from __future__ import annotations

import io
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.errors import StreamError
from xenabi.toolstack.streams import hvmctx, libxc, libxl, xl
from xenabi.toolstack.streams.framing import RECORD_HEADER, record_parts
from xenabi.toolstack.streams.libxc import LibxcRecord
from xenabi.toolstack.streams.libxl import LibxlRecord
from xenabi.toolstack.streams.reader import StreamInfo, StreamReader

from .streamkit import CONFIG, hvm_params, libxc_body, libxl_body, page_data, rec, xl_stream


def read(data: bytes, fmt: str = "xl") -> StreamInfo:
    return StreamReader(io.BytesIO(data), fmt=fmt).read()


def rejected(data: bytes, fmt: str = "xl") -> StreamError:
    with pytest.raises(StreamError) as info:
        read(data, fmt)
    return info.value


# --- sizes and golden bytes ---------------------------------------------------------------------------------------
def test_struct_sizes_match_the_spec() -> None:
    assert len(xl.XL_MAGIC) == 32 and xl.HEADER_SIZE == 48
    assert libxl.HEADER.size == 16 and libxc.HEADER.size == 24 and libxc.DOMAIN_HEADER.size == 16
    assert RECORD_HEADER.size == 8 and libxc.TSC_INFO.size == 24 and libxc.CPUID_LEAF.size == 24
    assert libxc.MSR_ENTRY.size == 16 and libxc.HVM_PARAM_ENTRY.size == 16
    assert hvmctx.DESCRIPTOR.size == 8 and hvmctx.HVM_SAVE_HEADER.size == 24


def test_xl_header_golden() -> None:
    data = xl.pack_header(b"{}\0")
    assert data[:32] == b"Xen saved domain, xl format\n \0 \r"
    assert data[32:48] == bytes.fromhex("04030201030000000000000007000000")
    assert data[48:] == bytes.fromhex("03000000") + b"{}\0"


def test_libxl_header_golden() -> None:
    assert libxl.pack_header() == bytes.fromhex("4c6962786c466d740000000200000000")


def test_libxc_headers_golden() -> None:
    assert libxc.pack_image_header() == bytes.fromhex("ffffffffffffffff58454e46000000030000000000000000")
    assert libxc.pack_domain_header(2, (4, 14)) == bytes.fromhex("020000000c000000040000000e000000")


def test_record_padding_golden() -> None:
    parts = record_parts(LibxcRecord.X86_TSC_INFO, (b"\x01\x02\x03",))
    assert b"".join(bytes(p) for p in parts) == bytes.fromhex("08000000030000000102030000000000")
    assert rec(LibxcRecord.END) == bytes(8)


def test_hvm_context_golden() -> None:
    blob = hvmctx.build_context(cpuid=0x306F2, gtsc_khz=2_400_000)
    assert blob == bytes.fromhex("010000001800000086123854010000000000000000000000f2060300009f24000000000000000000")
    assert hvmctx.check_context(blob) is None


def test_spec_3_4_meaningful_hvm_minimum_is_accepted() -> None:
    """The 144-byte v2 libxc stream of spec §3.4 (PARAMS before CONTEXT, Xen 4.20)."""
    stream = libxc_body(
        version=2,
        xen=(4, 20),
        records=[
            hvm_params((1, 0xFEFFC), (17, 0xFEFFF)),
            rec(LibxcRecord.HVM_CONTEXT, hvmctx.build_context(cpuid=0, gtsc_khz=0)),
            rec(LibxcRecord.END),
        ],
    )
    assert len(stream) == 144
    assert stream[40:48] == bytes.fromhex("0a00000028000000")
    info = read(stream, "libxc")
    assert info.xen_version == (4, 20) and info.hvm_params == {1: 0xFEFFC, 17: 0xFEFFF}


def test_page_data_layout() -> None:
    data = page_data([5, 6], ptype=0)
    rtype, length = RECORD_HEADER.unpack_from(data)
    assert (rtype, length) == (1, 8 + 16 + 2 * 4096)
    assert data[8:16] == struct.pack("<II", 2, 0) and data[16:32] == struct.pack("<QQ", 5, 6)


def test_valid_stream_reads_at_every_layer() -> None:
    info = read(xl_stream())
    assert info.config is not None and info.config.name == "t" and info.pages == 3 and info.libxc_version == 3
    assert read(libxl_body(), "libxl").pages == 3
    assert read(libxc_body(), "libxc").pages == 3


def test_pages_without_data_and_pinned_tables() -> None:
    records = [rec(LibxcRecord.STATIC_DATA_END), page_data([7], ptype=0xF), page_data([8], ptype=0x9)]
    records += [rec(LibxcRecord.HVM_CONTEXT, hvmctx.build_context()), rec(LibxcRecord.END)]
    assert read(libxc_body(records=records), "libxc").pages == 1


def test_unknown_optional_libxc_record_is_skipped() -> None:
    records = [rec(LibxcRecord.STATIC_DATA_END), rec(0x80000123, b"opt"), rec(LibxcRecord.HVM_CONTEXT,
               hvmctx.build_context()), rec(LibxcRecord.END)]  # fmt: skip
    assert read(libxc_body(records=records), "libxc").skipped_optional == [0x80000123]


# --- rejections: one row per rule -----------------------------------------------------------------------------
SDE = rec(LibxcRecord.STATIC_DATA_END)
CTX = rec(LibxcRecord.HVM_CONTEXT, hvmctx.build_context())
END = rec(LibxcRecord.END)


def libxc_with(*records: bytes, version: int = 3) -> bytes:
    return libxc_body(version=version, records=list(records))


def bad_json_config(text: bytes) -> bytes:
    return xl.pack_header(text) + libxl_body()


LIBXC_REJECTIONS = [
    # name, stream, record, message fragment
    ("bad-marker", b"\0" * 8 + libxc_body()[8:], "image header", "marker"),
    ("bad-id", libxc_body()[:8] + b"XENG" + libxc_body()[12:], "image header", "id"),
    ("version-4", libxc.HEADER.pack(libxc.MARKER, libxc.IDENT, 4, 0, 0, 0) + libxc_body()[24:], "image header",
     "version"),
    ("big-endian", libxc.HEADER.pack(libxc.MARKER, libxc.IDENT, 3, 1, 0, 0) + libxc_body()[24:], "image header",
     "big-endian"),
    ("reserved-options", libxc.HEADER.pack(libxc.MARKER, libxc.IDENT, 3, 2, 0, 0) + libxc_body()[24:], "image header",
     "reserved"),
    ("pv-domain", libxc_body()[:24] + libxc.pack_domain_header(1, (4, 14)) + libxc_body()[40:], "domain header", "PV"),
    ("arm-domain", libxc_body()[:24] + libxc.pack_domain_header(3, (4, 14)) + libxc_body()[40:], "domain header",
     "domain type"),
    ("page-shift", libxc_body()[:24] + libxc.DOMAIN_HEADER.pack(2, 13, 0, 4, 14) + libxc_body()[40:], "domain header",
     "page shift"),
    ("pages-before-sde", libxc_with(page_data([0]), SDE, CTX, END), "PAGE_DATA", "before STATIC_DATA_END"),
    ("no-sde-in-v3", libxc_with(CTX, END), "END", "without STATIC_DATA_END"),
    ("sde-in-v2", libxc_with(SDE, CTX, END, version=2), "STATIC_DATA_END", "v2"),
    ("sde-twice", libxc_with(SDE, SDE, CTX, END), "STATIC_DATA_END", "second"),
    ("cpuid-after-sde", libxc_with(SDE, rec(LibxcRecord.X86_CPUID_POLICY, bytes(24)), CTX, END), "X86_CPUID_POLICY",
     "after"),
    ("cpuid-in-v2", libxc_with(rec(LibxcRecord.X86_CPUID_POLICY, bytes(24)), CTX, END, version=2), "X86_CPUID_POLICY",
     "v2"),
    ("cpuid-bad-length", libxc_with(rec(LibxcRecord.X86_CPUID_POLICY, bytes(20)), SDE, CTX, END), "X86_CPUID_POLICY",
     "length"),
    ("msr-flags", libxc_with(rec(LibxcRecord.X86_MSR_POLICY, libxc.MSR_ENTRY.pack(0x10, 1, 0)), SDE, CTX, END),
     "X86_MSR_POLICY", "flags"),
    ("no-hvm-context", libxc_with(SDE, END), "END", "HVM_CONTEXT"),
    ("empty-hvm-context", libxc_with(SDE, rec(LibxcRecord.HVM_CONTEXT), END), "HVM_CONTEXT", "empty"),
    ("hvm-context-bad-magic", libxc_with(SDE, rec(LibxcRecord.HVM_CONTEXT, hvmctx.DESCRIPTOR.pack(1, 0, 24) +
     bytes(24) + bytes(8)), END), "HVM_CONTEXT", "magic"),
    ("hvm-context-no-end", libxc_with(SDE, rec(LibxcRecord.HVM_CONTEXT, hvmctx.build_context()[:-8]), END),
     "HVM_CONTEXT", "past the end"),
    ("end-with-body", libxc_with(SDE, CTX, rec(LibxcRecord.END, b"x")), "END", "length"),
    ("unknown-mandatory", libxc_with(SDE, rec(0x13, b""), CTX, END), "unknown mandatory record 0x13", "unrecognised"),
    ("pv-record-in-hvm", libxc_with(SDE, rec(LibxcRecord.X86_PV_INFO, bytes(8)), CTX, END), "X86_PV_INFO",
     "unrecognised"),
    ("toolstack-record", libxc_with(SDE, rec(LibxcRecord.TOOLSTACK, b"x"), CTX, END), "TOOLSTACK", "unrecognised"),
    ("checkpoint", libxc_with(SDE, rec(LibxcRecord.CHECKPOINT), CTX, END), "CHECKPOINT", "checkpointed"),
    ("oversized", libxc_with(SDE, RECORD_HEADER.pack(LibxcRecord.HVM_CONTEXT, (128 << 20) + 1)), "HVM_CONTEXT",
     "128 MiB"),
    ("bad-padding", libxc_with(SDE, RECORD_HEADER.pack(LibxcRecord.X86_TSC_INFO, 20) + bytes(20) + b"\0\0\0\1", CTX,
     END), "X86_TSC_INFO", "padding"),
    ("tsc-length", libxc_with(SDE, rec(LibxcRecord.X86_TSC_INFO, bytes(16)), CTX, END), "X86_TSC_INFO", "length"),
    ("tsc-reserved", libxc_with(SDE, rec(LibxcRecord.X86_TSC_INFO, libxc.TSC_INFO.pack(0, 1, 0, 0, 1)), CTX, END),
     "X86_TSC_INFO", "reserved"),
    ("params-length", libxc_with(SDE, rec(LibxcRecord.HVM_PARAMS, libxc.HVM_PARAMS_HEADER.pack(2, 0) + bytes(16)),
     CTX, END), "HVM_PARAMS", "length"),
    ("params-reserved", libxc_with(SDE, rec(LibxcRecord.HVM_PARAMS, libxc.HVM_PARAMS_HEADER.pack(0, 1)), CTX, END),
     "HVM_PARAMS", "reserved"),
    ("params-index", libxc_with(SDE, hvm_params((39, 1)), CTX, END), "HVM_PARAMS", "index"),
    ("page-type-invalid", libxc_with(SDE, page_data([0], ptype=5), CTX, END), "PAGE_DATA", "invalid page type"),
    ("pfn-reserved-bits", libxc_with(SDE, page_data([1 << 52]), CTX, END), "PAGE_DATA", "reserved"),
    ("page-data-empty", libxc_with(SDE, rec(LibxcRecord.PAGE_DATA, libxc.PAGE_DATA_HEADER.pack(0, 0)), CTX, END),
     "PAGE_DATA", "length"),
    ("page-data-count-0", libxc_with(SDE, rec(LibxcRecord.PAGE_DATA, libxc.PAGE_DATA_HEADER.pack(0, 0) + bytes(8)),
     CTX, END), "PAGE_DATA", "count"),
    ("page-data-short", libxc_with(SDE, page_data([0, 1])[:-4096 - 0].replace(
        RECORD_HEADER.pack(1, 8 + 16 + 8192), RECORD_HEADER.pack(1, 8 + 16 + 4096), 1), CTX, END), "PAGE_DATA",
     "expected 8216"),
    ("page-data-reserved", libxc_with(SDE, rec(LibxcRecord.PAGE_DATA, libxc.PAGE_DATA_HEADER.pack(1, 1) + bytes(8)),
     CTX, END), "PAGE_DATA", "reserved"),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "record", "fragment"), [c[1:] for c in LIBXC_REJECTIONS],
                         ids=[c[0] for c in LIBXC_REJECTIONS])  # fmt: skip
def test_libxc_rejections(stream: bytes, record: str, fragment: str) -> None:
    error = rejected(stream, "libxc")
    assert error.layer == "libxc" and error.record == record, str(error)
    assert fragment in str(error) and 0 <= error.offset < len(stream)


def test_error_offsets_point_at_the_record() -> None:
    stream = libxc_with(SDE, rec(0x13), CTX, END)
    error = rejected(stream, "libxc")
    assert error.offset == 40 + 8 and stream[error.offset : error.offset + 4] == b"\x13\0\0\0"


LIBXL_REJECTIONS = [
    ("ident", b"LibxlFmX" + libxl_body()[8:], "header", "ident"),
    ("version-1", libxl.HEADER.pack(libxl.IDENT, 1, 0) + libxl_body()[16:], "header", "version"),
    ("big-endian", libxl.pack_header(libxl.OPT_BIG_ENDIAN) + libxl_body()[16:], "header", "big-endian"),
    ("reserved", libxl.pack_header(4) + libxl_body()[16:], "header", "reserved"),
    ("unknown-record", libxl.pack_header() + rec(6) + libxl_body()[16:], "unknown record 0x6", "refuses"),
    ("optional-record", libxl.pack_header() + rec(0x80000000) + libxl_body()[16:], "unknown record 0x80000000",
     "refuses"),
    ("checkpoint-end", libxl_body(tail=[rec(LibxlRecord.CHECKPOINT_END)]), "CHECKPOINT_END", "checkpointed"),
    ("end-first", libxl.pack_header() + rec(LibxlRecord.END), "END", "before any LIBXC_CONTEXT"),
    ("two-contexts", libxl_body(tail=[rec(LibxlRecord.LIBXC_CONTEXT)]), "LIBXC_CONTEXT", "second"),
    ("context-with-body", libxl.pack_header() + rec(LibxlRecord.LIBXC_CONTEXT, b"x"), "LIBXC_CONTEXT", "length"),
    ("emulator-short", libxl_body(tail=[rec(LibxlRecord.EMULATOR_CONTEXT, b"abc")]), "EMULATOR_CONTEXT", "at least 8"),
    ("emulator-id", libxl_body(tail=[rec(LibxlRecord.EMULATOR_CONTEXT, struct.pack("<II", 7, 0))]),
     "EMULATOR_CONTEXT", "emulator id"),
    ("xenstore-odd", libxl_body(tail=[rec(LibxlRecord.EMULATOR_XENSTORE_DATA, struct.pack("<II", 2, 0) + b"k\0")]),
     "EMULATOR_XENSTORE_DATA", "pairs"),
    ("xenstore-unterminated", libxl_body(tail=[rec(LibxlRecord.EMULATOR_XENSTORE_DATA,
     struct.pack("<II", 2, 0) + b"k\0v")]), "EMULATOR_XENSTORE_DATA", "NUL"),
    ("truncated", libxl_body()[:-3], "record header", "truncated"),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "record", "fragment"), [c[1:] for c in LIBXL_REJECTIONS],
                         ids=[c[0] for c in LIBXL_REJECTIONS])  # fmt: skip
def test_libxl_rejections(stream: bytes, record: str, fragment: str) -> None:
    error = rejected(stream, "libxl")
    assert error.layer == "libxl" and error.record == record, str(error)
    assert fragment in str(error)


def test_emulator_records_only_for_hvm() -> None:
    pvh = dict(CONFIG, c_info={"type": "pvh", "name": "t"})
    body = libxl_body(tail=[rec(LibxlRecord.EMULATOR_CONTEXT, struct.pack("<II", 2, 0) + b"qemu"), rec(0)])
    error = rejected(xl_stream(pvh, body))
    assert error.record == "EMULATOR_CONTEXT" and "pvh" in str(error)
    info = read(xl_stream(CONFIG, body))
    assert info.emulator_context == b"qemu"


XL_REJECTIONS = [
    ("magic", b"Xen saved domain, xm format\n \0 \r" + xl_stream()[32:], "header", "magic"),
    ("big-endian", xl_stream()[:32] + bytes.fromhex("01020304") + xl_stream()[36:], "header", "big-endian"),
    ("unknown-mandatory", xl_stream()[:36] + struct.pack("<I", 7) + xl_stream()[40:], "header", "unknown mandatory"),
    ("legacy-stream", xl_stream()[:36] + struct.pack("<I", 1) + xl_stream()[40:], "header", "legacy"),
    ("optional-flags", xl_stream()[:40] + struct.pack("<I", 1) + xl_stream()[44:], "header", "optional flags"),
    ("config-too-long", xl_stream()[:48] + struct.pack("<I", 10**6) + xl_stream()[52:], "config", "exceeds"),
    ("no-nul", bad_json_config(b"{}"), "config", "NUL"),
    ("not-json", bad_json_config(b"{nope\0"), "config", "not valid"),
    ("not-utf8", bad_json_config(b"\xff\xfe\0"), "config", "not valid"),
    ("unknown-feature", bad_json_config(json.dumps(dict(CONFIG, b_info={"xen_abi_features_pinned": ["evtchn_lifo"]}))
     .encode() + b"\0"), "config", "evtchn_lifo"),
    ("short", xl_stream()[:40], "header", "truncated"),
]  # fmt: skip


@pytest.mark.parametrize(("stream", "record", "fragment"), [c[1:] for c in XL_REJECTIONS],
                         ids=[c[0] for c in XL_REJECTIONS])  # fmt: skip
def test_xl_rejections(stream: bytes, record: str, fragment: str) -> None:
    error = rejected(stream)
    assert error.layer == "xl" and error.record == record, str(error)
    assert fragment in str(error)


def test_legacy_xl_cfg_text_config_is_read() -> None:
    text = b'name = "old"\ntype = "hvm"\nmemory = 1\n'  # without a type, xl's default is PV
    header = xl.FIELDS.pack(xl.BYTEORDER, xl.XL_MANDATORY_FLAG_STREAMv2, 0, 4 + len(text))
    data = xl.XL_MAGIC + header + struct.pack("<I", len(text)) + text + libxl_body()
    info = read(data)
    assert info.config is not None and info.config.name == "old"


@pytest.mark.parametrize("cut", [1, 47, 60, 200, 300, 12000])
def test_truncation_anywhere_is_a_stream_error(cut: int) -> None:
    data = xl_stream()
    error = rejected(data[: len(data) - cut])
    assert "truncated" in str(error)


# --- fuzz ------------------------------------------------------------------------------------------------------------
VALID = xl_stream()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "cut", "insert", "delete", "swap"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "swap" and len(data) > 16:
            other = draw(st.integers(0, len(data) - 8))
            data[at : at + 8], data[other : other + 8] = data[other : other + 8], data[at : at + 8]
    return bytes(data)


@given(mutated())
def test_fuzzed_streams_only_ever_raise_stream_error(data: bytes) -> None:
    try:
        read(data)
    except StreamError as error:
        assert error.layer in ("xl", "libxl", "libxc") and error.offset >= 0


# --- issue 11: claims are not facts; one rule for what follows END; the config must match the stream -------------
def test_a_claimed_huge_record_costs_nothing_and_fails_at_the_true_end() -> None:
    """A 378-byte file that claims a 100 MiB record: the reader must not allocate the claim."""
    import tracemalloc

    claim = struct.pack("<II", 0xF0000001, 100 << 20)  # an unknown record of 100 MiB, 16 bytes of it present
    data = xl_stream(libxl_stream=libxl_body(libxc_body(records=[rec(LibxcRecord.STATIC_DATA_END), claim + b"x" * 16])))
    tracemalloc.start()
    try:
        error = rejected(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 16 bytes of body, then the libxl END record's 8: the file ends there
    assert "truncated: the stream ends 24 bytes into 104857600" in str(error)
    assert peak < 8 << 20


def test_bytes_after_the_final_end_are_one_rule_for_verify_and_restore(tmp_path) -> None:
    from xenabi.hypervisor import Hypervisor
    from xenabi.toolstack import Toolstack

    data = xl_stream() + b"\0garbage"
    error = rejected(data)
    assert (error.record, error.offset) == ("END", len(data) - 8) and "8 bytes after the final END" in str(error)
    path = tmp_path / "vm.save"
    path.write_bytes(data)
    ts = Toolstack(Hypervisor("4.14"))
    with pytest.raises(StreamError) as refused:
        ts.restore(path)
    assert refused.value.offset == len(data) - 8
    assert list(ts.hv.domains) == [0]
    path.write_bytes(xl_stream())
    assert ts.restore(path) in ts.hv.domains


def test_a_pv_config_over_an_hvm_stream_is_refused_at_the_domain_header() -> None:
    pv = {"c_info": {"type": "pv", "name": "t"}, "b_info": {"max_vcpus": 1, "target_memkb": 1024, "max_memkb": 1024}}
    data = xl_stream(pv)
    error = rejected(data)
    assert (error.layer, error.record) == ("libxc", "domain header")
    assert data[error.offset : error.offset + 4] == struct.pack("<I", libxc.DHDR_TYPE_X86_HVM)
    pvh = pv | {"c_info": {"type": "pvh", "name": "t"}}
    assert read(xl_stream(pvh)).config.guest_type.value == "pvh"
