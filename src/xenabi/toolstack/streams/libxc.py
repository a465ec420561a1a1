"""libxc migration stream v2/v3 (``docs/specs/libxc-migration-stream.pandoc`` revision 3; ``spec/streams.md`` §3.3).

Image header (24 bytes, big-endian): marker all ones, id "XENF", version, u16 options (bit 0 big-endian), two
reserved fields. Domain header (16 bytes, little-endian): type (1 x86 PV, 2 x86 HVM), page shift 12, reserved,
the saving Xen's major and minor version. Then records, framed as in :mod:`.framing`, with the layouts below.

PAGE_DATA: ``u32 count, u32 reserved`` and ``count`` u64 pfn entries (type in bits 63-60, reserved bits 59-52, pfn in
51-0), then 4096 bytes for each entry whose type carries data (not-a-table and page-table types, pinned or not).
Xen sends at most 1024 pfns per record.
"""

from __future__ import annotations

import struct
from enum import IntEnum

HEADER = struct.Struct(">QIIHHI")
MARKER = 0xFFFFFFFFFFFFFFFF
IDENT = 0x58454E46  # "XENF"
VERSION = 3
IHDR_OPT_BIG_ENDIAN = 1 << 0
DOMAIN_HEADER = struct.Struct("<IHHII")
DHDR_TYPE_X86_PV = 1
DHDR_TYPE_X86_HVM = 2
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_BATCH_SIZE = 1024

REC_TYPE_OPTIONAL = 1 << 31


class LibxcRecord(IntEnum):
    END = 0x00
    PAGE_DATA = 0x01
    X86_PV_INFO = 0x02
    X86_PV_P2M_FRAMES = 0x03
    X86_PV_VCPU_BASIC = 0x04
    X86_PV_VCPU_EXTENDED = 0x05
    X86_PV_VCPU_XSAVE = 0x06
    SHARED_INFO = 0x07
    X86_TSC_INFO = 0x08
    HVM_CONTEXT = 0x09
    HVM_PARAMS = 0x0A
    TOOLSTACK = 0x0B
    X86_PV_VCPU_MSRS = 0x0C
    VERIFY = 0x0D
    CHECKPOINT = 0x0E
    CHECKPOINT_DIRTY_PFN_LIST = 0x0F
    STATIC_DATA_END = 0x10
    X86_CPUID_POLICY = 0x11
    X86_MSR_POLICY = 0x12


def record_name(rtype: int) -> str:
    if rtype in LibxcRecord._value2member_map_:
        return LibxcRecord(rtype).name
    kind = "optional" if rtype & REC_TYPE_OPTIONAL else "mandatory"
    return f"unknown {kind} record {rtype:#x}"


# PAGE_DATA
PAGE_DATA_HEADER = struct.Struct("<II")
PFN_MASK = (1 << 52) - 1
PFN_RESERVED_SHIFT = 52
PFN_RESERVED_MASK = 0xFF
PFN_TYPE_SHIFT = 60
PFINFO_NOTAB = 0x0
PFINFO_LPINTAB = 0x8
PFINFO_BROKEN = 0xD
PFINFO_XALLOC = 0xE
PFINFO_XTAB = 0xF
PFINFO_INVALID = frozenset({0x5, 0x6, 0x7, 0x8})


def page_type_has_data(ptype: int) -> bool:
    """Not-a-table and L1-L4 tables, pinned or not, carry a page; BROKEN, XALLOC and XTAB do not."""
    return (ptype & ~PFINFO_LPINTAB) <= 0x4 and ptype not in PFINFO_INVALID


# Other record bodies
TSC_INFO = struct.Struct("<IIQII")  # mode, khz, nsec, incarnation, reserved
HVM_PARAMS_HEADER = struct.Struct("<II")  # count, reserved
HVM_PARAM_ENTRY = struct.Struct("<QQ")  # index, value
CPUID_LEAF = struct.Struct("<IIIIII")  # leaf, subleaf, a, b, c, d
MSR_ENTRY = struct.Struct("<IIQ")  # index, flags (MBZ), value


def pack_image_header(version: int = VERSION) -> bytes:
    return HEADER.pack(MARKER, IDENT, version, 0, 0, 0)


def pack_domain_header(dtype: int, xen_version: tuple[int, int]) -> bytes:
    return DOMAIN_HEADER.pack(dtype, PAGE_SHIFT, 0, xen_version[0], xen_version[1])
