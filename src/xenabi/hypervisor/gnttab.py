"""``grant_table_op`` (hypercall 20): the grant-table version negotiation as each release answers it
(``spec/gnttab-vcpu-version.md`` §3; ``do_grant_table_op``, ``gnttab_setup_table``, ``gnttab_query_size``,
``gnttab_set_version``, ``gnttab_get_status_frames`` and ``gnttab_get_version`` in ``xen/common/grant_table.c``,
and the HVM allow-list, read at every 4.x.0 tag from 4.3 to 4.22).

**Entry, in order.** An HVM or PVH guest passes the allow-list first, on the raw command: only query_size,
setup_table, set_version, get_version, copy, map, unmap and swap get through; everything else, get_status_frames
and junk in the high bits included, is -ENOSYS. Then a negative ``count`` (as a C int) is -EINVAL. Then junk above
the 12-bit command (not for cache_flush): no mask in 4.3-4.4, so junk misses every case (-ENOSYS); -ENOSYS from 4.5
and -EINVAL from 4.8 (``gnttab_cmd_junk_rc``). dump_table and unknown commands are -ENOSYS.

**The table.** Each domain has one: its version (0 until first use on 4.3-4.11, 1 from creation from 4.12:
``gnttab_initial_version``), its shared frames (4 at creation up to 4.9, 1 from 4.10: ``gnttab_initial_frames``),
its maximum (the host's 32 up to 4.9; the domain's own, by default the host's 64, from 4.10:
``gnttab_per_domain_limits``), its maximum version and its status frames (v2: one per 8 shared frames). The
shared frames are Xen's pages, not guest RAM: the model keeps them in ``GrantTable.shared`` (what a guest sees once
it has mapped them) and reports them as frame numbers from :data:`GRANT_FRAME_BASE` up, status frames from
:data:`STATUS_FRAME_BASE`.

**set_version**, in Xen's order: -EFAULT; -EINVAL unless 1 or 2; -ENOSYS for 2 where the maximum version is 1
(the host's ``gnttab=max-ver:1`` from 4.11 and 4.8.5/4.9.3/4.10.2, the domain's ``grant_opts`` from 4.16), or where
the registry hides version 2 (a value gate, ``AbiFeature.value_gates``: the same answer in the same place); 0 if
the table has that version already; v2 to v1: -ERANGE if one of the first 8 entries is a full-page grant of a
frame above 32 bits (4.6+, ``gnttab_v1_range_check``) or transitive (4.10+, ``gnttab_v1_range_transitive``);
then the switch: the first 8 entries are carried over, every other shared byte is cleared, status frames are
allocated (to v2) or freed (to v1). Every answer after the argument was read writes the table's version back.
The model maps no grants, so -EBUSY (entries in use, status frames mapped) and -EAGAIN (v2 operations in flight)
do not arise; XENMEM_add_to_physmap, which also fixes version 1 on 4.3-4.11, is not modelled.

**get_version**: -EFAULT, -ESRCH for an unknown domain, the default XSM policy (XSM_TARGET: the domain itself, its
device model, or the control domain; else -EPERM), then the version.

**query_size** and **setup_table** (count 1, else -EINVAL; then -EFAULT) answer 0 with the result in ``status``:
``GNTST_bad_domain``, ``GNTST_permission_denied``, ``GNTST_general_error`` for too many frames. setup_table checks
the frame count against the host maximum first in 4.3-4.9, against the domain's maximum last from 4.10 (after the
frame_list handle, the domain and XSM); it grows the table, fixes version 1 on 4.3-4.11, and copies the frame
numbers out (a fault is ``GNTST_bad_virt_addr``).

**get_status_frames** (PV only): count 1, -EFAULT, from 4.16 a frame_list outside the guest is -EFAULT
(``gnttab_status_frames_handle_check``); then bad domain, XSM, more frames than the table has (general error),
and the frame numbers (a fault is ``GNTST_bad_virt_addr``).

Map, unmap, transfer, copy, unmap_and_replace, swap and cache_flush raise :class:`~xenabi.errors.NotModelled`.
A guest handle is a guest address in the model (identity, see :mod:`xenabi.hypervisor.vcpu`); a PV handle is
not range-checked beyond the guest's RAM.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from xenabi.abi import errno
from xenabi.abi.gnttab import (
    GNTTAB_NR_RESERVED_ENTRIES,
    GNTTABOP_CMD_MASK,
    GRANT_ENTRY_V1,
    GRANT_ENTRY_V2,
    HVM_ALLOWED,
    GetStatusFrames,
    GetVersion,
    Gntst,
    GnttabOp,
    GnttabOpArg,
    GTF_permit_access,
    GTF_transitive,
    GTF_type_mask,
    QuerySize,
    SetupTable,
    SetVersion,
)
from xenabi.abi.xen import PAGE_SIZE, HYPERVISOR_grant_table_op
from xenabi.errors import NotModelled
from xenabi.hypervisor.guestmem import copy_from_guest, copy_to_guest, guest_handle_okay
from xenabi.hypervisor.xsm import xsm_target

if TYPE_CHECKING:
    from xenabi.hypervisor.dispatch import Call
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor

GRANT_FRAME_BASE = 0xF0000000  # the model's frame numbers for shared grant frames (Xen's heap, not guest RAM)
STATUS_FRAME_BASE = 0xF8000000
ENTRIES_V2_PER_FRAME = PAGE_SIZE // GRANT_ENTRY_V2.size
STATUS_PER_FRAME = PAGE_SIZE // 2
_FRAME = struct.Struct("<Q")  # xen_pfn_t / uint64_t in a frame_list
_ENOSYS, _EFAULT, _EINVAL, _ESRCH, _EPERM, _ERANGE = (
    -errno.ENOSYS, -errno.EFAULT, -errno.EINVAL, -errno.ESRCH, -errno.EPERM, -errno.ERANGE)  # fmt: skip
ArgT = TypeVar("ArgT", SetupTable, QuerySize, GetStatusFrames)
_VALUE_GATE_V2 = (HYPERVISOR_grant_table_op, GnttabOp.set_version, 2)


@dataclass(slots=True)
class GrantTable:
    """A domain's grant table as Xen keeps it (the parts the version negotiation touches)."""

    version: int
    max_frames: int
    max_version: int
    max_maptrack: int = 0  # maptrack frames: the limit only (map is not modelled)
    shared: bytearray = field(default_factory=bytearray)  # the shared frames' bytes
    nr_status_frames: int = 0

    @property
    def nr_frames(self) -> int:
        return len(self.shared) // PAGE_SIZE

    def grow(self, nr_frames: int) -> None:
        if nr_frames > self.nr_frames:
            self.shared.extend(bytes((nr_frames - self.nr_frames) * PAGE_SIZE))
        if self.version == 2:
            self.nr_status_frames = max(self.nr_status_frames, status_frames_for(self.nr_frames))


def status_frames_for(nr_frames: int) -> int:
    """``grant_to_status_frames``: one 2-byte status per v2 entry."""
    return -(-nr_frames * ENTRIES_V2_PER_FRAME // STATUS_PER_FRAME)


def new_grant_table(hv: Hypervisor, max_frames: int, max_version: int, max_maptrack: int) -> GrantTable:
    release = hv.release
    table = GrantTable(release.gnttab_initial_version, max_frames, max_version, max_maptrack)
    table.grow(release.gnttab_initial_frames)
    return table


# --- the sub-ops ------------------------------------------------------------------------------------------
def _copy_frames(cur: Domain, handle: int, frames: range) -> bool:
    """``__copy_to_guest_offset`` one frame number at a time: the frames before a fault are written."""
    return all(copy_to_guest(cur, handle + i * _FRAME.size, _FRAME.pack(frame)) for i, frame in enumerate(frames))


def _read_one(cur: Domain, addr: int, count: int, struct_type: type[ArgT]) -> ArgT | int:
    """The start of every handler that takes one struct: count must be 1 (-EINVAL), then copy it in (-EFAULT)."""
    if count != 1:
        return _EINVAL
    raw = copy_from_guest(cur, addr, struct_type.size())
    return _EFAULT if raw is None else struct_type.unpack(raw)


def _setup_table(hv: Hypervisor, cur: Domain, addr: int, count: int) -> int:
    op = _read_one(cur, addr, count, SetupTable)
    if isinstance(op, int):
        return op
    per_domain = hv.release.gnttab_per_domain_limits
    if not per_domain and op.nr_frames > hv.gnttab_host_max_frames:
        op.status = Gntst.general_error  # 4.3-4.9: the host's limit, before anything else
    elif not guest_handle_okay(cur, op.frame_list, op.nr_frames * _FRAME.size):
        return _EFAULT
    else:
        op.status = _setup_table_status(hv, cur, op)
    return 0 if copy_to_guest(cur, addr, op.pack()) else _EFAULT  # Xen copies only the status field back


def _target(hv: Hypervisor, cur: Domain, dom: int) -> Domain | int:
    """The domain a sub-op names, or the status that refuses it: GNTST_bad_domain, then the default XSM policy's
    GNTST_permission_denied (XSM_TARGET)."""
    d = hv.lookup(cur, dom)
    if d is None:
        return Gntst.bad_domain
    return d if xsm_target(cur, d) else Gntst.permission_denied


def _setup_table_status(hv: Hypervisor, cur: Domain, op: SetupTable) -> int:
    d = _target(hv, cur, op.dom)
    if isinstance(d, int):
        return d
    table = d.grant_table
    if op.nr_frames > table.max_frames:
        return Gntst.general_error  # 4.10+: the domain's own limit, checked last
    if table.version == 0:
        table.version = 1  # 4.3-4.11: the first setup fixes version 1
    table.grow(op.nr_frames)
    if not _copy_frames(cur, op.frame_list, range(GRANT_FRAME_BASE, GRANT_FRAME_BASE + op.nr_frames)):
        return Gntst.bad_virt_addr
    return Gntst.okay


def _query_size(hv: Hypervisor, cur: Domain, addr: int, count: int) -> int:
    op = _read_one(cur, addr, count, QuerySize)
    if isinstance(op, int):
        return op
    d = _target(hv, cur, op.dom)
    if isinstance(d, int):
        op.status = d
    else:
        op.nr_frames, op.max_nr_frames, op.status = d.grant_table.nr_frames, d.grant_table.max_frames, Gntst.okay
    return 0 if copy_to_guest(cur, addr, op.pack()) else _EFAULT


def _v1_unrepresentable(hv: Hypervisor, table: GrantTable) -> bool:
    """A reserved v2 entry that v1 cannot express: a full-page grant above 32 bits (4.6+), a transitive one
    (4.10+)."""
    release = hv.release
    for i in range(GNTTAB_NR_RESERVED_ENTRIES):
        flags, _domid, frame = GRANT_ENTRY_V2.unpack_from(table.shared, i * GRANT_ENTRY_V2.size)
        kind = flags & GTF_type_mask
        if kind == GTF_permit_access and frame >> 32 and release.gnttab_v1_range_check:
            return True
        if kind == GTF_transitive and release.gnttab_v1_range_transitive:
            return True
    return False


def _switch_version(table: GrantTable, version: int) -> None:
    """Carry the 8 reserved entries over, clear everything else, allocate or free status frames."""
    reserved = []
    for i in range(GNTTAB_NR_RESERVED_ENTRIES):
        if table.version == 2:
            flags, domid, frame = GRANT_ENTRY_V2.unpack_from(table.shared, i * GRANT_ENTRY_V2.size)
            if flags & GTF_type_mask != GTF_permit_access:
                flags = domid = frame = 0
            reserved.append((flags, domid, frame))
        else:
            reserved.append(GRANT_ENTRY_V1.unpack_from(table.shared, i * GRANT_ENTRY_V1.size))
    table.shared[:] = bytes(len(table.shared))
    if table.version:
        for i, (flags, domid, frame) in enumerate(reserved):
            if version == 1:
                GRANT_ENTRY_V1.pack_into(table.shared, i * GRANT_ENTRY_V1.size, flags, domid, frame & 0xFFFFFFFF)
            else:
                GRANT_ENTRY_V2.pack_into(table.shared, i * GRANT_ENTRY_V2.size, flags, domid, frame)
    table.nr_status_frames = status_frames_for(table.nr_frames) if version == 2 else 0
    table.version = version


def _set_version(hv: Hypervisor, cur: Domain, addr: int, count: int) -> int:
    raw = copy_from_guest(cur, addr, SetVersion.size())
    if raw is None:
        return _EFAULT
    op = SetVersion.unpack(raw)
    table = cur.grant_table
    rc = 0
    if op.version not in (1, 2):
        rc = _EINVAL
    elif op.version == 2 and (table.max_version == 1 or _VALUE_GATE_V2 in cur.hidden_late):
        rc = _ENOSYS  # Xen's own knob, or the registry's gnttab_v2 hidden: behave as before v2 existed
    elif table.version != op.version:
        if table.version == 2 and _v1_unrepresentable(hv, table):
            rc = _ERANGE
        else:
            _switch_version(table, op.version)
    op.version = table.version
    return rc if copy_to_guest(cur, addr, op.pack()) else _EFAULT


def _get_version(hv: Hypervisor, cur: Domain, addr: int, count: int) -> int:
    raw = copy_from_guest(cur, addr, GetVersion.size())
    if raw is None:
        return _EFAULT
    op = GetVersion.unpack(raw)
    d = hv.lookup(cur, op.dom)
    if d is None:
        return _ESRCH
    if not xsm_target(cur, d):
        return _EPERM
    op.version = d.grant_table.version
    return 0 if copy_to_guest(cur, addr, op.pack()) else _EFAULT


def _get_status_frames(hv: Hypervisor, cur: Domain, addr: int, count: int) -> int:
    op = _read_one(cur, addr, count, GetStatusFrames)
    if isinstance(op, int):
        return op
    if hv.release.gnttab_status_frames_handle_check and not guest_handle_okay(
        cur, op.frame_list, op.nr_frames * _FRAME.size
    ):
        return _EFAULT
    d = _target(hv, cur, op.dom)
    if isinstance(d, int):
        op.status = d
    elif op.nr_frames > d.grant_table.nr_status_frames:
        op.status = Gntst.general_error
    elif not _copy_frames(cur, op.frame_list, range(STATUS_FRAME_BASE, STATUS_FRAME_BASE + op.nr_frames)):
        op.status = Gntst.bad_virt_addr
    else:
        op.status = Gntst.okay
    return 0 if copy_to_guest(cur, addr, op.pack()) else _EFAULT


GnttabHandler = Callable[["Hypervisor", "Domain", int, int], int]  # guest address of the argument, count
SUBOPS: dict[int, GnttabHandler] = {
    GnttabOp.setup_table: _setup_table,
    GnttabOp.query_size: _query_size,
    GnttabOp.set_version: _set_version,
    GnttabOp.get_status_frames: _get_status_frames,
    GnttabOp.get_version: _get_version,
}
NOT_MODELLED = frozenset(
    {
        GnttabOp.map_grant_ref,
        GnttabOp.unmap_grant_ref,
        GnttabOp.transfer,
        GnttabOp.copy,
        GnttabOp.unmap_and_replace,
        GnttabOp.swap_grant_ref,
    }
)


def grant_table_op(hv: Hypervisor, cur: Domain, arg: GnttabOpArg, cmd: int, call: Call) -> int:
    """The whole hypercall: ``cmd`` as the guest passed it (high bits included), ``call.count`` its count."""
    release = hv.release
    cmd &= 0xFFFFFFFF
    if cur.is_hvm and cmd not in HVM_ALLOWED:
        return _ENOSYS
    if call.count & 0xFFFFFFFF >= 1 << 31:
        return _EINVAL  # (int)count < 0
    junk = cmd & ~GNTTABOP_CMD_MASK
    if junk:
        if release.gnttab_cmd_junk_rc is None:
            return _ENOSYS  # no mask yet: the whole value misses every case
        cmd &= GNTTABOP_CMD_MASK
        if cmd != GnttabOp.cache_flush or not release.gnttab_cache_flush:
            return release.gnttab_cmd_junk_rc
    handler = SUBOPS.get(cmd)
    if handler is not None:
        return handler(hv, cur, arg.addr, call.count & 0xFFFFFFFF)
    if cmd in NOT_MODELLED or (cmd == GnttabOp.cache_flush and release.gnttab_cache_flush):
        raise NotModelled(f"grant_table_op {GnttabOp(cmd).name} ({cmd})")
    return _ENOSYS
