"""libxl migration stream v2 (``docs/specs/libxl-migration-stream.pandoc`` revision 2; ``spec/streams.md`` §3.2).

Header (16 bytes, big-endian): ``u64 ident`` "LibxlFmt", ``u32 version`` 2, ``u32 options`` (bit 0 big-endian, bit 1
legacy-converted, the rest reserved). Records are framed as in :mod:`.framing`. The writer's order is libxl's:
LIBXC_CONTEXT (a whole libxc stream follows inline), then for HVM the emulator records, then END. libxl's C reader
refuses any record type it does not know, and emulator records unless the config says HVM.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from xenabi.toolstack.streams.framing import Buffer, record_parts

HEADER = struct.Struct(">QII")
IDENT = 0x4C6962786C466D74  # "LibxlFmt"
VERSION = 2
OPT_BIG_ENDIAN = 1 << 0
OPT_LEGACY = 1 << 1
EMULATOR_HEADER = struct.Struct("<II")


class LibxlRecord(IntEnum):
    END = 0
    LIBXC_CONTEXT = 1
    EMULATOR_XENSTORE_DATA = 2
    EMULATOR_CONTEXT = 3
    CHECKPOINT_END = 4
    CHECKPOINT_STATE = 5


class Emulator(IntEnum):
    UNKNOWN = 0
    QEMU_TRADITIONAL = 1
    QEMU_UPSTREAM = 2


def pack_header(options: int = 0) -> bytes:
    return HEADER.pack(IDENT, VERSION, options)


def record(rtype: LibxlRecord, *body: Buffer) -> list[Buffer]:
    return record_parts(rtype, body)


def emulator_xenstore_body(entries: dict[str, str], emulator: Emulator = Emulator.QEMU_UPSTREAM) -> bytes:
    """``u32 emulator_id, u32 index`` then NUL-terminated key, value, key, value..."""
    data = b"".join(key.encode() + b"\0" + value.encode() + b"\0" for key, value in entries.items())
    return EMULATOR_HEADER.pack(emulator, 0) + data


def emulator_context_body(blob: bytes, emulator: Emulator = Emulator.QEMU_UPSTREAM) -> bytes:
    return EMULATOR_HEADER.pack(emulator, 0) + blob
