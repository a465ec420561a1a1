"""The hypercall dispatch table: (hypercall, sub-op) -> argument struct, handler and optional pre-copy check.

Like Xen's hypercall table and the ``switch (cmd)`` of each ``do_*_op``: a hypercall that is not in the table, or a
sub-op its hypercall does not know, answers that hypercall's "unknown" code (``-ENOSYS`` for event_channel_op and
hvm_op, ``spec/evtchn.md`` §1); hypfs_op decodes its own command after its other checks, and xen_version,
grant_table_op and vcpu_op (:mod:`~xenabi.hypervisor.version`, :mod:`~xenabi.hypervisor.gnttab`,
:mod:`~xenabi.hypervisor.vcpu`) make checks of their own before their sub-op (an allow-list, the count, the vcpuid),
and sched_op (:mod:`~xenabi.hypervisor.shutdown`) reads its struct from guest memory, so these five are registered
whole and get the call's other registers (:class:`Call`).
ABI feature gating is not here: the hypervisor checks a domain's hidden operations,
derived from the feature registry, before it looks anything up. New sub-ops are added with :meth:`register`.

The old ``event_channel_op_compat`` (16) exists for PV guests only (no HVM or PVH hypercall table has it:
-ENOSYS). It takes one ``struct evtchn_op`` and forwards sub-ops to the event_channel_op handlers, gating included
(it calls ``do_event_channel_op``): every sub-op before Xen 4.10, sub-ops 0-9 from 4.10 (the release table's
``compat_forwards_fifo_ops``); other commands are -ENOSYS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xenabi.abi import errno
from xenabi.abi import evtchn as abi_evtchn
from xenabi.abi.cstruct import CStruct
from xenabi.abi.gnttab import GnttabOpArg
from xenabi.abi.hypfs import HypfsOpArgs
from xenabi.abi.sched import SchedOpArg
from xenabi.abi.vcpu import VcpuOpArg
from xenabi.abi.version import XenVersionArg
from xenabi.abi.xen import (
    HYPERVISOR_event_channel_op,
    HYPERVISOR_event_channel_op_compat,
    HYPERVISOR_grant_table_op,
    HYPERVISOR_hvm_op,
    HYPERVISOR_hypfs_op,
    HYPERVISOR_sched_op,
    HYPERVISOR_vcpu_op,
    HYPERVISOR_xen_version,
)
from xenabi.hypervisor import evtchn, evtchn_fifo, gnttab, hvm, hypfs, shutdown, vcpu, version

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor


@dataclass(frozen=True, slots=True)
class Call:
    """The hypercall's other registers and who makes it, for the hypercalls that read them: grant_table_op's
    ``count``, vcpu_op's ``vcpuid``, and the calling vCPU."""

    count: int = 1
    vcpuid: int = 0
    vcpu: int = 0


Handler = Callable[["Hypervisor", "Domain", Any], int]
WholeHandler = Callable[["Hypervisor", "Domain", Any, int, Call], int]  # takes the sub-op itself and the call
Precheck = Callable[["Hypervisor", "Domain"], int]


@dataclass(frozen=True, slots=True)
class SubOp:
    struct: type[CStruct]
    handler: Handler
    precheck: Precheck | None = None


class DispatchTable:
    def __init__(self) -> None:
        self.entries: dict[tuple[int, int], SubOp] = {}
        self.unknown_rc: dict[int, int] = {}
        self.whole: dict[int, tuple[type[CStruct], WholeHandler, Precheck | None]] = {}

    def declare(self, op: int, *, unknown_rc: int) -> None:
        """A hypercall exists; its unknown sub-ops answer ``unknown_rc``."""
        self.unknown_rc[op] = unknown_rc

    def register(
        self, op: int, cmd: int, struct: type[CStruct], handler: Handler, precheck: Precheck | None = None
    ) -> None:
        if op not in self.unknown_rc:
            raise ValueError(f"hypercall {op} is not declared")
        key = (int(op), int(cmd))
        if key in self.entries:
            raise ValueError(f"hypercall {op} sub-op {cmd} is already registered")
        self.entries[key] = SubOp(struct, handler, precheck)

    def unregister(self, op: int, cmd: int) -> None:
        """Remove a sub-op added with :meth:`register` (experiments and tests that add their own)."""
        del self.entries[(int(op), int(cmd))]

    def register_hypercall(
        self, op: int, struct: type[CStruct], handler: WholeHandler, precheck: Precheck | None = None
    ) -> None:
        """A hypercall that decodes its own sub-op, checks included (hypfs checks XSM and the path before it
        looks at the command, so its unknown commands cannot be answered from the table)."""
        if op in self.unknown_rc or op in self.whole:
            raise ValueError(f"hypercall {op} is already declared")
        self.whole[op] = (struct, handler, precheck)

    def lookup_miss(self, op: int, cmd: int, count: int = 1, vcpuid: int = 0, vcpu: int = 0) -> SubOp | int:
        """What a (hypercall, sub-op) missing from the table gets: the compat hypercall's one entry (its struct
        carries the command, whatever ``cmd`` says), a whole-hypercall handler bound to ``cmd``, else the
        hypercall's unknown code. Off the hot path."""
        rc = self.unknown_rc.get(op)
        if rc is not None and op != HYPERVISOR_event_channel_op_compat:
            return rc  # the common miss (an unknown sub-op of a table hypercall) first: it is the dispatch floor
        if op == HYPERVISOR_event_channel_op_compat:
            return self.entries[(op, COMPAT_CMD)]
        whole = self.whole.get(op)
        if whole is not None:
            struct, handler, precheck = whole
            call = Call(count, vcpuid, vcpu)  # built only here: the common miss above is the dispatch floor
            return SubOp(struct, lambda hv, cur, arg: handler(hv, cur, arg, cmd, call), precheck)
        return -errno.ENOSYS


def compat_precheck(hv: Hypervisor, cur: Domain) -> int:
    return -errno.ENOSYS if cur.is_hvm else 0  # only PV hypercall tables have hypercall 16


def event_channel_op_compat(hv: Hypervisor, cur: Domain, arg: abi_evtchn.CompatEvtchnOp) -> int:
    cmd = arg.cmd
    if cmd not in abi_evtchn.COMPAT_SUBOPS and not hv.release.compat_forwards_fifo_ops:
        return -errno.ENOSYS
    key = (HYPERVISOR_event_channel_op, cmd)
    if key in cur.hidden_ops:
        return -errno.ENOSYS
    entry = DISPATCH.entries.get(key)
    if entry is None:
        return -errno.ENOSYS
    inner = entry.struct.unpack(arg.u)
    rc = entry.handler(hv, cur, inner)
    if rc == 0 and entry.struct.OUT:
        size = entry.struct.size()
        arg.u = inner.pack() + arg.u[size:]
    return rc


# The old hypercall has no sub-op argument: its struct carries the command.
COMPAT_CMD = 0

DISPATCH = DispatchTable()
DISPATCH.declare(HYPERVISOR_event_channel_op, unknown_rc=-errno.ENOSYS)
DISPATCH.declare(HYPERVISOR_hvm_op, unknown_rc=-errno.ENOSYS)
DISPATCH.declare(HYPERVISOR_event_channel_op_compat, unknown_rc=-errno.ENOSYS)
for _cmd, _handler in (evtchn.SUBOPS | evtchn_fifo.SUBOPS).items():
    DISPATCH.register(HYPERVISOR_event_channel_op, _cmd, abi_evtchn.ARG_STRUCTS[_cmd], _handler)
for _hvmop, _hvm_handler in hvm.SUBOPS.items():
    DISPATCH.register(HYPERVISOR_hvm_op, _hvmop, hvm.ARG_STRUCTS[_hvmop], _hvm_handler, hvm.PRECHECKS.get(_hvmop))
DISPATCH.register(
    HYPERVISOR_event_channel_op_compat, COMPAT_CMD, abi_evtchn.CompatEvtchnOp, event_channel_op_compat, compat_precheck
)
DISPATCH.register_hypercall(HYPERVISOR_hypfs_op, HypfsOpArgs, hypfs.hypfs_op, hypfs.hypfs_precheck)
DISPATCH.register_hypercall(HYPERVISOR_xen_version, XenVersionArg, version.xen_version)
DISPATCH.register_hypercall(HYPERVISOR_grant_table_op, GnttabOpArg, gnttab.grant_table_op)
DISPATCH.register_hypercall(HYPERVISOR_vcpu_op, VcpuOpArg, vcpu.vcpu_op)
DISPATCH.register_hypercall(HYPERVISOR_sched_op, SchedOpArg, shutdown.sched_op)
