"""The xl save-file / migration header (``tools/xl/xl.h``; ``spec/streams.md`` §3.1).

``magic[32]``, then four u32 in the saving host's byte order: ``byteorder`` (0x01020304), ``mandatory_flags`` (an
unknown bit makes the receiver refuse), ``optional_flags`` (none defined; also refused when unknown),
``optional_data_len``. The optional data is ``u32 config_len`` followed by the domain config: libxl JSON including
its trailing NUL when ``XL_MANDATORY_FLAG_JSON`` is set, else xl.cfg text (older xl). ``STREAMv2`` says a libxl v2
stream follows; without it a legacy libxc stream would, which xenabi does not read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
BYTEORDER = 0x01020304
XL_MANDATORY_FLAG_JSON = 1 << 0
XL_MANDATORY_FLAG_STREAMv2 = 1 << 1
KNOWN_MANDATORY = XL_MANDATORY_FLAG_JSON | XL_MANDATORY_FLAG_STREAMv2
KNOWN_OPTIONAL = 0
FIELDS = struct.Struct("<IIII")
CONFIG_LEN = struct.Struct("<I")
HEADER_SIZE = len(XL_MAGIC) + FIELDS.size
assert len(XL_MAGIC) == 32


@dataclass(frozen=True, slots=True)
class XlHeader:
    mandatory_flags: int
    optional_flags: int
    config: bytes  # as stored: JSON with its trailing NUL, or xl.cfg text

    @property
    def is_json(self) -> bool:
        return bool(self.mandatory_flags & XL_MANDATORY_FLAG_JSON)


def pack_header(config: bytes, *, json: bool = True) -> bytes:
    """The header for ``config`` (pass JSON *with* its trailing NUL)."""
    flags = XL_MANDATORY_FLAG_STREAMv2 | (XL_MANDATORY_FLAG_JSON if json else 0)
    optional = CONFIG_LEN.pack(len(config)) + config
    return XL_MAGIC + FIELDS.pack(BYTEORDER, flags, 0, len(optional)) + optional
