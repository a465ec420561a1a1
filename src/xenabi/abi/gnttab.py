"""``grant_table_op`` (hypercall 20): sub-op numbers, status codes and the argument layouts of the version
negotiation (``xen/include/public/grant_table.h``, x86-64; ``spec/gnttab-vcpu-version.md`` §3).

The hypercall carries ``(cmd, uop, count)``; ``uop`` is a guest handle, which the model takes as a guest address
(:class:`GnttabOpArg`), so that every fault happens where Xen's ``copy_from_guest`` / ``copy_to_guest`` fail.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct


class GnttabOp(IntEnum):
    map_grant_ref = 0
    unmap_grant_ref = 1
    setup_table = 2
    dump_table = 3  # never handled: -ENOSYS
    transfer = 4
    copy = 5
    query_size = 6
    unmap_and_replace = 7
    set_version = 8
    get_status_frames = 9
    get_version = 10
    swap_grant_ref = 11
    cache_flush = 12  # 4.5 (18e8d22fe7); x86 dropped it in 4.21 (5642a6055c)


GNTTABOP_set_version = GnttabOp.set_version
GNTTAB_MAX_VERSION_DEFAULT = 2  # Xen's opt_gnttab_max_version: the boot option gnttab=max-ver:N when not given
GNTTABOP_CMD_MASK = (1 << 12) - 1  # the bits above carry a continuation's progress (from 4.5)

# The sub-ops an x86 HVM or PVH guest may issue, in every release 4.3-4.22 (grant_table_op_is_allowed)
HVM_ALLOWED = frozenset(
    {
        GnttabOp.query_size,
        GnttabOp.setup_table,
        GnttabOp.set_version,
        GnttabOp.get_version,
        GnttabOp.copy,
        GnttabOp.map_grant_ref,
        GnttabOp.unmap_grant_ref,
        GnttabOp.swap_grant_ref,
    }
)


class Gntst(IntEnum):
    okay = 0
    general_error = -1
    bad_domain = -2
    bad_gntref = -3
    bad_handle = -4
    bad_virt_addr = -5
    bad_dev_addr = -6
    no_device_space = -7
    permission_denied = -8
    bad_page = -9
    bad_copy_arg = -10
    address_too_big = -11
    eagain = -12
    no_space = -13


GNTTAB_NR_RESERVED_ENTRIES = 8
GTF_type_mask = 3
GTF_permit_access = 1
GTF_transitive = 3
GRANT_ENTRY_V1 = struct.Struct("<HHI")  # flags, domid, frame: 8 bytes
GRANT_ENTRY_V2 = struct.Struct("<HH4xQ")  # hdr.flags, hdr.domid, full_page.frame: 16 bytes
STATUS_ENTRY_SIZE = 2  # grant_status_t
XEN_DOMCTL_GRANT_version_mask = 0xF  # grant_opts (4.16): the maximum grant version


@cstruct("Q")
class GnttabOpArg(CStruct):
    """The model's form of the hypercall's ``uop``: the guest address of the (first) argument struct."""

    addr: int = 0


@cstruct("H2xIh6xQ", out=("status",))
class SetupTable(CStruct):
    """``struct gnttab_setup_table`` (24 bytes): dom, nr_frames; out status; frame_list a handle (guest address)."""

    dom: int = 0
    nr_frames: int = 0
    status: int = 0
    frame_list: int = 0


@cstruct("H2xIIh2x", out=("nr_frames", "max_nr_frames", "status"))
class QuerySize(CStruct):
    """``struct gnttab_query_size`` (16 bytes)."""

    dom: int = 0
    nr_frames: int = 0
    max_nr_frames: int = 0
    status: int = 0


@cstruct("I", out=("version",))
class SetVersion(CStruct):
    """``struct gnttab_set_version`` (4 bytes): in the version asked, out the table's version."""

    version: int = 0


@cstruct("IHhQ", out=("status",))
class GetStatusFrames(CStruct):
    """``struct gnttab_get_status_frames`` (16 bytes)."""

    nr_frames: int = 0
    dom: int = 0
    status: int = 0
    frame_list: int = 0


@cstruct("HHI", out=("version",))
class GetVersion(CStruct):
    """``struct gnttab_get_version`` (8 bytes)."""

    dom: int = 0
    pad: int = 0
    version: int = 0
