"""The HVM_CONTEXT blob: Xen's HVM save format (``xen/include/public/hvm/save.h``; ``spec/streams.md`` §3.3).

A sequence of ``{u16 typecode, u16 instance, u32 length}`` descriptors, each followed by its body: first HEADER
(typecode 1: ``u32 magic 0x54381286, u32 version 1, u64 changeset, u32 cpuid, u32 gtsc_khz``), then per-type
records, then END (typecode 0, length 0). The model's domains have no CPU or device state that Xen would save
(registers, LAPIC, timers): their blob is HEADER and END. The check mirrors ``hvm_load``: the descriptors must
fit, the first must be a valid HEADER, typecodes must be known, and END must close the blob.
"""

from __future__ import annotations

import struct

DESCRIPTOR = struct.Struct("<HHI")
HVM_SAVE_HEADER = struct.Struct("<IIQII")
HVM_SAVE_CODE_END = 0
HVM_SAVE_CODE_HEADER = 1
HVM_SAVE_CODE_MAX = 20  # TSC_ADJUST 19 and the codes before it; 20 is the highest 4.14 knows
HVM_FILE_MAGIC = 0x54381286
HVM_FILE_VERSION = 1
MODEL_CPUID = 0x000306F2  # family 6 model 0x3f: the CPU signature the model hosts report
MODEL_GTSC_KHZ = 2_400_000


def build_context(*, cpuid: int = MODEL_CPUID, gtsc_khz: int = MODEL_GTSC_KHZ) -> bytes:
    header = HVM_SAVE_HEADER.pack(HVM_FILE_MAGIC, HVM_FILE_VERSION, 0, cpuid, gtsc_khz)
    return DESCRIPTOR.pack(HVM_SAVE_CODE_HEADER, 0, len(header)) + header + DESCRIPTOR.pack(HVM_SAVE_CODE_END, 0, 0)


def check_context(blob: bytes) -> str | None:
    """None if ``blob`` is a valid HVM context, else what is wrong with it."""
    offset = 0
    first = True
    while True:
        if offset + DESCRIPTOR.size > len(blob):
            return f"descriptor at {offset} runs past the end of the blob"
        code, _instance, length = DESCRIPTOR.unpack_from(blob, offset)
        body = offset + DESCRIPTOR.size
        if body + length > len(blob):
            return f"typecode {code} at {offset}: body of {length} bytes runs past the end"
        if first:
            if code != HVM_SAVE_CODE_HEADER or length != HVM_SAVE_HEADER.size:
                return "the first descriptor is not a 24-byte HEADER"
            magic, version, *_ = HVM_SAVE_HEADER.unpack_from(blob, body)
            if magic != HVM_FILE_MAGIC:
                return f"HEADER magic {magic:#x}, not {HVM_FILE_MAGIC:#x}"
            if version != HVM_FILE_VERSION:
                return f"HEADER version {version}, not {HVM_FILE_VERSION}"
            first = False
        elif code == HVM_SAVE_CODE_END:
            if length != 0:
                return "END descriptor with a body"
            if body != len(blob):
                return f"{len(blob) - body} bytes after END"
            return None
        elif code > HVM_SAVE_CODE_MAX or code == HVM_SAVE_CODE_HEADER:
            return f"unexpected typecode {code} at {offset}"
        offset = body + length
