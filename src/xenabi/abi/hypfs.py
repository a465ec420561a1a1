"""The hypfs hypercall's numbers and byte formats (``xen/include/public/hypfs.h``; ``spec/abi-control.md`` §7).

``__HYPERVISOR_hypfs_op(cmd, arg1 path, arg2 path length, arg3 buffer, arg4 buffer length)``. A read answers a
12-byte :class:`HypfsDirentry` followed by the contents; a directory's contents are dirlist entries: the direntry, a
u16 ``off_next`` (0 for the last) and the NUL-terminated name, padded so that the next entry is 4-byte aligned.

In Xen the four arguments are registers. The model's hypercall entry takes one argument struct, so
:class:`HypfsOpArgs` carries them: two guest-physical addresses in the caller's memory and two lengths.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct

XEN_HYPFS_VERSION = 1
XEN_HYPFS_MAX_PATHLEN = 1024


class HypfsOp(IntEnum):
    get_version = 0
    read = 1
    write_contents = 2


class HypfsType(IntEnum):
    DIR = 0
    BLOB = 1
    STRING = 2
    UINT = 3
    INT = 4
    BOOL = 5


class HypfsEncoding(IntEnum):
    PLAIN = 0
    GZIP = 1


@cstruct("BBHII")
class HypfsDirentry(CStruct):
    """``struct xen_hypfs_direntry`` (12 bytes)."""

    type: int = 0
    encoding: int = 0
    pad: int = 0
    content_len: int = 0
    max_write_len: int = 0


@cstruct("QQQQ")
class HypfsOpArgs(CStruct):
    """The model's bundle of hypfs_op's four register arguments (guest addresses in the caller's RAM)."""

    path_addr: int = 0
    path_len: int = 0
    buf_addr: int = 0
    buf_len: int = 0


DIRLISTENTRY_OFF_NEXT = struct.Struct("<H")
DIRENTRY_NAME_OFF = HypfsDirentry.size() + DIRLISTENTRY_OFF_NEXT.size  # offsetof(dirlistentry, name) == 14
DIRENTRY_ALIGN = 4  # alignof(struct xen_hypfs_direntry)


def dirlistentry_size(name: str) -> int:
    """``DIRENTRY_SIZE``: the name offset plus the NUL-terminated name rounded up to the direntry alignment."""
    name_len = len(name.encode()) + 1
    return DIRENTRY_NAME_OFF + -(-name_len // DIRENTRY_ALIGN) * DIRENTRY_ALIGN


def parse_dirlist(data: bytes) -> list[tuple[str, HypfsDirentry]]:
    """Decode a directory's contents (what a dom0 tool does with a read of a directory)."""
    entries: list[tuple[str, HypfsDirentry]] = []
    offset = 0
    while True:
        head = HypfsDirentry.unpack(data[offset:])
        (off_next,) = DIRLISTENTRY_OFF_NEXT.unpack_from(data, offset + HypfsDirentry.size())
        name_start = offset + DIRENTRY_NAME_OFF
        name = data[name_start : data.index(0, name_start)].decode()
        entries.append((name, head))
        if off_next == 0:
            return entries
        offset += off_next
