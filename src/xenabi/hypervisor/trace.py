"""A hypercall trace, as xentrace gives one (issue 21): every hypercall a host answers, one JSON object per line.

``hv.start_trace()`` returns a :class:`HypercallTrace` and from then on records each hypercall the host is asked,
from any domain (guests and dom0's backends): the model clock (``hv.clock_ns``), the calling domain and vCPU, the
hypercall and sub-op by name (``event_channel_op``/``init_control``), the argument's fields as the caller passed
them (a raw call's bytes decoded with the sub-op's struct when they are long enough, else shown as hex), the
``vcpuid`` of a ``vcpu_op`` and the ``count`` of a ``grant_table_op``, the return code with its errno name, and the
OUT fields written back on success. A call that raises (:class:`~xenabi.errors.GuestNotRunning`,
:class:`~xenabi.errors.NotModelled`) is recorded with the exception's name and raised on. Guest OS developers compare
kernels and releases by these sequences, and the tests assert Linux's with them.

**Free when off.** Tracing is off by default. ``start_trace`` puts a recording wrapper in front of the host's
``hypercall`` and ``hypercall_raw`` as instance attributes, and ``stop_trace`` removes them; the class's methods, which
are the dispatch floor, never test for a trace, so a host that is not traced runs exactly the code it ran before
(``bench/hypercall.py`` measures the floor both ways in one run).

A trace keeps its records in memory (at most ``limit``, counting the ones it dropped after that), or writes each one
to ``out`` as a JSON line as it happens and keeps nothing; ``label`` adds fixed fields to every record (the
scenario, the host) so that the traces of several hosts can share one file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from xenabi.abi import evtchn, gnttab, hvm, hypfs, sched, version, xen
from xenabi.abi import vcpu as abi_vcpu
from xenabi.abi.cstruct import CStruct
from xenabi.abi.errno import ERRNO_NAMES
from xenabi.hypervisor.dispatch import DISPATCH

if TYPE_CHECKING:
    from xenabi.hypervisor.hypervisor import Hypervisor

OP_NAMES: dict[int, str] = {
    value: name.removeprefix("HYPERVISOR_") for name, value in vars(xen).items() if name.startswith("HYPERVISOR_")
}
"""Hypercall number -> name (``xen/include/public/xen.h``)."""
_EVTCHN_OPS = {int(op): op.name for op in evtchn.EvtchnOp}
SUBOP_NAMES: dict[int, dict[int, str]] = {
    xen.HYPERVISOR_event_channel_op: _EVTCHN_OPS,
    xen.HYPERVISOR_event_channel_op_compat: _EVTCHN_OPS,
    xen.HYPERVISOR_xen_version: {int(op): op.name for op in version.XenVer},
    xen.HYPERVISOR_grant_table_op: {int(op): op.name for op in gnttab.GnttabOp},
    xen.HYPERVISOR_vcpu_op: {int(op): op.name for op in abi_vcpu.VcpuOp},
    xen.HYPERVISOR_hvm_op: {
        value: name.removeprefix("HVMOP_")
        for name, value in vars(hvm).items()
        if name.startswith("HVMOP_") and isinstance(value, int)
    },
    xen.HYPERVISOR_hypfs_op: {int(op): op.name for op in hypfs.HypfsOp},
    xen.HYPERVISOR_sched_op: {int(op): op.name.rstrip("_") for op in sched.SchedOp},
}
"""Sub-op names per hypercall (the public headers' enumerations); a grant-table command is named by its low 12
bits, the rest being a continuation's progress."""
RAW_HEX_LIMIT = 64  # bytes of an undecodable raw argument shown
_V, _G = xen.HYPERVISOR_vcpu_op, xen.HYPERVISOR_grant_table_op
MEMORY_ARGS: dict[tuple[int, int], type[CStruct]] = {
    (_V, abi_vcpu.VcpuOp.register_vcpu_info): abi_vcpu.RegisterVcpuInfo,
    **{(_V, op): abi_vcpu.RegisterArea for op in (abi_vcpu.VcpuOp.register_runstate_memory_area,
                                                 abi_vcpu.VcpuOp.register_vcpu_time_memory_area,
                                                 abi_vcpu.VcpuOp.register_runstate_phys_area,
                                                 abi_vcpu.VcpuOp.register_vcpu_time_phys_area)},
    (_G, gnttab.GnttabOp.setup_table): gnttab.SetupTable,
    (_G, gnttab.GnttabOp.query_size): gnttab.QuerySize,
    (_G, gnttab.GnttabOp.set_version): gnttab.SetVersion,
    (_G, gnttab.GnttabOp.get_status_frames): gnttab.GetStatusFrames,
    (_G, gnttab.GnttabOp.get_version): gnttab.GetVersion,
    (xen.HYPERVISOR_xen_version, version.XenVer.get_features): version.FeatureInfo,
    (xen.HYPERVISOR_sched_op, sched.SchedOp.shutdown): sched.SchedShutdown,
}  # fmt: skip
"""Sub-ops whose argument is a struct in guest memory at the handle's address: the trace shows that struct (before
the call, and its OUT fields after a success), since its fields are what matter, not the address."""


def subop_name(op: int, cmd: int) -> str:
    if op == xen.HYPERVISOR_grant_table_op:
        cmd &= gnttab.GNTTABOP_CMD_MASK
    return SUBOP_NAMES.get(op, {}).get(cmd, str(cmd))


def _fields(arg: CStruct) -> dict[str, Any]:
    return {name: getattr(arg, name) for name in arg.FIELDS if not name.startswith("_pad")}


def _struct_for(op: int, cmd: int) -> type[CStruct] | None:
    entry = DISPATCH.entries.get((op, cmd))
    if entry is not None:
        return entry.struct
    whole = DISPATCH.whole.get(op)
    return whole[0] if whole is not None else None


@dataclass
class HypercallTrace:
    """The records of one host's hypercalls (see the module docstring)."""

    limit: int | None = None
    out: IO[str] | None = None
    label: Mapping[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    def add(self, record: dict[str, Any]) -> None:
        if self.label:
            record = {**self.label, **record}
        if self.out is not None:
            self.out.write(json.dumps(record) + "\n")
        elif self.limit is None or len(self.records) < self.limit:
            self.records.append(record)
        else:
            self.dropped += 1

    def jsonl(self) -> str:
        """The kept records, one JSON object per line."""
        return "".join(json.dumps(record) + "\n" for record in self.records)

    def calls(self, domid: int | None = None) -> list[tuple[str, str, int | str]]:
        """(hypercall, sub-op, rc) of each kept record, of one domain or all: what tests compare (for a call that
        raised, the exception's name in place of the rc)."""
        return [(r["op"], r["cmd"], r["rc"] if "rc" in r else r["raised"]) for r in self.records
                if domid is None or r["dom"] == domid]  # fmt: skip


def _record(hv: Hypervisor, caller: int, op: int, cmd: int, vcpu: int, count: int, vcpuid: int) -> dict[str, Any]:
    record: dict[str, Any] = {"ns": hv.clock_ns, "dom": caller, "vcpu": vcpu, "op": OP_NAMES.get(op, str(op)),
                              "cmd": subop_name(op, cmd)}  # fmt: skip
    if op == xen.HYPERVISOR_vcpu_op:
        record["vcpuid"] = vcpuid
    elif op == xen.HYPERVISOR_grant_table_op:
        record["count"] = count
    return record


def _in_memory(hv: Hypervisor, caller: int, op: int, cmd: int, args: dict[str, Any]) -> type[CStruct] | None:
    """Show the guest-memory struct of a sub-op in :data:`MEMORY_ARGS` in place of its address."""
    layout = MEMORY_ARGS.get((op, cmd & gnttab.GNTTABOP_CMD_MASK if op == _G else cmd))
    addr = args.get("addr")
    if layout is None or not isinstance(addr, int):
        return None
    data = _guest_bytes(hv, caller, addr, layout.size())
    if data is None:
        return None
    args["in_memory"] = _fields(layout.unpack(data))
    return layout


def _guest_bytes(hv: Hypervisor, caller: int, addr: int, size: int) -> bytes | None:
    d = hv.domains.get(caller)
    if d is None or addr < 0 or addr + size > len(d.memory):
        return None
    return bytes(d.memory[addr : addr + size])


def _memory_out(hv: Hypervisor, caller: int, layout: type[CStruct] | None, args: dict[str, Any]) -> dict[str, Any]:
    if layout is None or not layout.OUT:
        return {}
    data = _guest_bytes(hv, caller, args["addr"], layout.size())
    written = layout.unpack(data) if data is not None else None
    return {name: getattr(written, name) for name in layout.OUT} if written is not None else {}


def _finish(record: dict[str, Any], rc: int, out: dict[str, Any] | None) -> dict[str, Any]:
    record["rc"] = rc
    if rc < 0:
        record["errno"] = ERRNO_NAMES.get(-rc, str(-rc))
    if out:
        record["out"] = out
    return record


def traced_hypercall(hv: Hypervisor, trace: HypercallTrace, dispatch: Callable[..., int]) -> Callable[..., int]:
    """A ``hypercall`` that records each call in ``trace`` around ``dispatch`` (the host's own method)."""

    def hypercall(caller: int, op: int, cmd: int, arg: object, *, count: int = 1, vcpuid: int = 0,
                  vcpu: int = 0) -> int:  # fmt: skip
        record = _record(hv, caller, op, cmd, vcpu, count, vcpuid)
        args = record["args"] = _fields(arg) if isinstance(arg, CStruct) else {"type": type(arg).__name__}
        in_memory = _in_memory(hv, caller, op, cmd, args)
        try:
            rc = dispatch(caller, op, cmd, arg, count=count, vcpuid=vcpuid, vcpu=vcpu)
        except Exception as exc:
            trace.add(record | {"raised": type(exc).__name__})
            raise
        out = None
        if rc == 0 and isinstance(arg, CStruct):
            out = {name: getattr(arg, name) for name in arg.OUT} | _memory_out(hv, caller, in_memory, args)
        trace.add(_finish(record, rc, out))
        return rc

    return hypercall


def traced_hypercall_raw(hv: Hypervisor, trace: HypercallTrace,
                         dispatch: Callable[..., tuple[int, bytes]]) -> Callable[..., tuple[int, bytes]]:  # fmt: skip
    """The same for ``hypercall_raw``: the argument bytes decoded with the sub-op's struct where they can be."""

    def hypercall_raw(caller: int, op: int, cmd: int, data: bytes, *, count: int = 1, vcpuid: int = 0,
                      vcpu: int = 0) -> tuple[int, bytes]:  # fmt: skip
        record = _record(hv, caller, op, cmd, vcpu, count, vcpuid)
        layout = _struct_for(op, cmd)
        raw = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else b""
        decoded = layout is not None and len(raw) >= layout.size()
        args = record["args"] = (_fields(layout.unpack(raw)) if decoded and layout
                                 else {"hex": raw[:RAW_HEX_LIMIT].hex()})  # fmt: skip
        in_memory = _in_memory(hv, caller, op, cmd, args)
        try:
            rc, back = dispatch(caller, op, cmd, data, count=count, vcpuid=vcpuid, vcpu=vcpu)
        except Exception as exc:
            trace.add(record | {"raised": type(exc).__name__})
            raise
        out = None
        if rc == 0 and decoded and layout is not None:
            written = layout.unpack(back)
            out = {name: getattr(written, name) for name in layout.OUT} | _memory_out(hv, caller, in_memory, args)
        trace.add(_finish(record, rc, out))
        return rc, back

    return hypercall_raw
