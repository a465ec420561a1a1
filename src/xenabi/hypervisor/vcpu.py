"""``vcpu_op`` (hypercall 24) as each release answers it, and the areas Xen keeps current in guest memory
(``spec/gnttab-vcpu-version.md`` §4; ``do_vcpu_op`` / ``common_vcpu_op`` / ``map_vcpu_info`` / ``map_guest_area``
read at every 4.x.0 tag from 4.3 to 4.22).

**Order of checks.** In 4.3-4.6 an HVM guest's call passes ``hvm_vcpu_op`` first: only ops 4-10 and 13 reach the
handler, every other op is -ENOSYS (``vcpu_op_hvm_filter``; 192df6f912 removed it in 4.7). In 4.3-4.5 ``vcpuid``
is a signed int and a value below 0 or at least ``MAX_VIRT_CPUS`` is -EINVAL (``vcpu_op_vcpuid_range_einval``;
d9e66702fd, 1d4290342f). Then, in every release, -ENOENT for a vcpuid that names no vCPU of the caller. Then the
registry's late gates (``AbiFeature.late_gates``: a hidden ``vcpu_phys_area`` answers ops 14 and 15 -ENOSYS here,
exactly what 4.17 answers after the same check; the handler names no feature). Then the sub-op.

**Addresses.** The hypercall's argument is a guest handle, taken as a guest address (:class:`VcpuOpArg`), so a
fault reading it happens where ``copy_from_guest`` fails in Xen. The model has no guest page tables: a *linear*
address (ops 5 and 13, and every argument handle) is resolved by the identity map, linear = guest-physical, so a
guest that passes the address of a buffer in its RAM is understood by both kinds of op. A PV guest's linear area
must not overlap the range Xen reserves for itself (``guest_handle_okay``: -EFAULT); an HVM guest's handle is
never checked at registration. Xen ignores a failing copy into a linear area, and so does the model: an area
whose bytes are outside RAM registers, and its updates are dropped. A *physical* area (ops 14, 15, 4.18) is
checked by ``map_guest_area``: ``~0`` unregisters; -ENXIO if it crosses a page or is misaligned (8 bytes, 4 for a
32-bit guest); -EINVAL if no RAM backs its frame (the model's RAM is all ordinary, writable, never paged out or
shared, so -EPERM, -EAGAIN and -EACCES do not arise).

**Keeping areas current.** A vCPU's runstate changes when its domain runs or is paused and when it is brought up
or down (:meth:`Hypervisor.vcpu_up`); the model has no scheduler, so an up vCPU of a running domain is running
and every other vCPU is offline (Xen's runstate for a vCPU that is not runnable). Time comes from the host's
deterministic model clock (:meth:`Hypervisor.advance_clock`, nanoseconds since boot). Each change writes the
vCPU's registered areas once, O(1): the runstate area (the physical one if registered, else the linear one, as
Xen stops updating the linear area while a physical one exists), and the time area (same rule), whose version
goes up by 2 per update (odd while Xen writes; the model's write is atomic, so the guest only sees even values).
The model's TSC runs at 1 GHz: ``tsc_to_system_mul`` 0x80000000 with ``tsc_shift`` 1, TSC stable.
Registering fills a time area at once; a physical runstate area is filled at once only for the calling vCPU
(``runstate_area_populate``), a linear one always.

**register_vcpu_info** (op 10), by release: before 4.18 (``map_vcpu_info``) an offset above 4096 - 64 is
``vcpu_info_offset_rc`` (-EINVAL, -ENXIO from 4.16, 7ee7a3749b), a misaligned one the same code from 4.14
(``vcpu_info_align_check``, XSA-327, 3fdc211b01; in 4.13.2 and 4.12.4), a second registration -EINVAL, another vCPU
that is up -EINVAL, a frame without RAM -EINVAL. From 4.18 (``vcpu_info_guest_area``, 295514ff75): an offset of a
page or more -EINVAL, re-registering -EBUSY, then ``map_guest_area``'s checks. On success the current vcpu_info is
copied to the new place, every selector bit and the upcall are marked pending (a spurious event the guest must
cope with), and the event-channel code uses the new place from then on. A 32-bit guest's vcpu_info alignment is 4.

**up, down, is_up, stop_periodic_timer** (ops 1, 2, 3, 7; HVM guests reach 1-3 only from 4.7): ``is_up`` answers 1
or 0; ``up`` wakes a vCPU that has had a context (-EINVAL for one never initialised); ``down`` takes one down, and
from 4.11 (d3b230fc46, ``vcpu_down_last_shuts_down``) taking down the last vCPU that is up powers the domain off
instead; ``stop_periodic_timer`` sets the vCPU's periodic period to 0 (PV vCPUs start with 10 ms, HVM ones with
none; the model fires no timers, so this is state only).

Other sub-ops that exist in Xen (initialise, set_periodic_timer, the singleshot timer, send_nmi, get_physid) raise
:class:`~xenabi.errors.NotModelled`; an op the release lacks answers -ENOSYS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.vcpu import (
    AREA_ALIGN,
    HVM_FILTER_4_3,
    RUNSTATE_INFO,
    RUNSTATE_INFO_COMPAT,
    UNREGISTER,
    VCPU_INFO_ALIGN,
    VCPU_INFO_SIZE,
    VCPU_TIME_INFO,
    XEN_PVCLOCK_TSC_STABLE_BIT,
    RegisterArea,
    RegisterVcpuInfo,
    Runstate,
    VcpuOp,
    VcpuOpArg,
)
from xenabi.abi.xen import PAGE_SIZE, HYPERVISOR_vcpu_op
from xenabi.errors import GuestNotRunning, NotModelled
from xenabi.hypervisor.guestmem import copy_from_guest, copy_to_guest, guest_handle_okay
from xenabi.hypervisor.upcall import vcpu_mark_events_pending

if TYPE_CHECKING:
    from xenabi.hypervisor.dispatch import Call
    from xenabi.hypervisor.domain import Domain, Vcpu
    from xenabi.hypervisor.hypervisor import Hypervisor

MAX_VIRT_CPUS = 8192  # x86
TSC_TO_SYSTEM_MUL = 0x80000000  # with a shift of 1: 1 TSC tick = 1 ns
TSC_SHIFT = 1
_ENOSYS, _EFAULT, _EINVAL, _ENXIO, _ENOENT, _EBUSY = (
    -errno.ENOSYS, -errno.EFAULT, -errno.EINVAL, -errno.ENXIO, -errno.ENOENT, -errno.EBUSY)  # fmt: skip


VcpuHandler = Callable[["Hypervisor", "Domain", "Vcpu", int, int], int]  # vCPU named, argument, calling vCPU


@dataclass(slots=True)
class VcpuAreas:
    """What a vCPU has registered: addresses of its areas (None: none), and whether its vcpu_info has moved."""

    runstate_linear: int | None = None
    runstate_phys: int | None = None
    time_linear: int | None = None
    time_phys: int | None = None
    vcpu_info: bool = False
    time_version: int = 0


# --- keeping areas current ----------------------------------------------------------------------------------------
def runstate_bytes(v: Vcpu, now: int, compat: bool) -> bytes:
    """``struct vcpu_runstate_info`` as of ``now``: the time of the current state includes the time since it began."""
    times = list(v.runstate_time)
    times[v.runstate] += now - v.state_entry_time
    layout = RUNSTATE_INFO_COMPAT if compat else RUNSTATE_INFO
    return layout.pack(v.runstate, v.state_entry_time, *times)


def time_bytes(version: int, now: int) -> bytes:
    return VCPU_TIME_INFO.pack(version, now, now, TSC_TO_SYSTEM_MUL, TSC_SHIFT, XEN_PVCLOCK_TSC_STABLE_BIT)


def _write(d: Domain, addr: int, data: bytes) -> None:
    copy_to_guest(d, addr, data)  # a linear area outside RAM: Xen ignores the failed copy, and so does the model


def update_runstate_area(v: Vcpu, now: int) -> None:
    areas = v.areas
    if areas is None:
        return
    addr = areas.runstate_phys if areas.runstate_phys is not None else areas.runstate_linear
    if addr is not None:
        _write(v.domain, addr, runstate_bytes(v, now, v.domain.word_bits == 32))


def update_time_area(v: Vcpu, now: int) -> None:
    areas = v.areas
    if areas is None:
        return
    addr = areas.time_phys if areas.time_phys is not None else areas.time_linear
    if addr is not None:
        areas.time_version = (areas.time_version + 2) & 0xFFFFFFFF
        _write(v.domain, addr, time_bytes(areas.time_version, now))


def set_runstate(v: Vcpu, state: Runstate, now: int) -> None:
    """``vcpu_runstate_change``: account the time of the old state, enter the new one, update the vCPU's areas."""
    if v.runstate == state:
        return
    v.runstate_time[v.runstate] += now - v.state_entry_time
    v.runstate = state
    v.state_entry_time = now
    if v.areas is not None:
        update_runstate_area(v, now)
        update_time_area(v, now)


# --- the sub-ops --------------------------------------------------------------------------------------------------
def _get_runstate_info(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    data = runstate_bytes(v, hv.clock_ns, cur.word_bits == 32)
    return 0 if copy_to_guest(cur, addr, data) else _EFAULT


def _read_area(cur: Domain, addr: int) -> int | None:
    raw = copy_from_guest(cur, addr, RegisterArea.size())
    return None if raw is None else RegisterArea.unpack(raw).addr


def _areas(v: Vcpu) -> VcpuAreas:
    if v.areas is None:
        v.areas = VcpuAreas()
    return v.areas


def _register_runstate_linear(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    area = _read_area(cur, addr)
    if area is None:
        return _EFAULT
    compat = cur.word_bits == 32
    if compat:
        area &= 0xFFFFFFFF
    if not guest_handle_okay(cur, area, (RUNSTATE_INFO_COMPAT if compat else RUNSTATE_INFO).size):
        return _EFAULT
    _areas(v).runstate_linear = area
    if _areas(v).runstate_phys is None:
        _write(cur, area, runstate_bytes(v, hv.clock_ns, compat))
    return 0


def _register_time_linear(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    area = _read_area(cur, addr)
    if area is None:
        return _EFAULT
    if cur.word_bits == 32:
        area &= 0xFFFFFFFF
    if not guest_handle_okay(cur, area, VCPU_TIME_INFO.size):
        return _EFAULT
    _areas(v).time_linear = area
    update_time_area(v, hv.clock_ns)  # force_update_vcpu_system_time
    return 0


def _map_guest_area(cur: Domain, gaddr: int, size: int) -> int:
    """``map_guest_area``'s checks for a mapping request (not ~0): 0 or the errno."""
    if gaddr // PAGE_SIZE != (gaddr + size - 1) // PAGE_SIZE:
        return _ENXIO
    if gaddr % AREA_ALIGN[cur.word_bits]:
        return _ENXIO
    if not cur.is_guest_ram(gaddr // PAGE_SIZE):
        return _EINVAL
    return 0


def _register_phys(kind: str) -> VcpuHandler:
    def register(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
        gaddr = _read_area(cur, addr)
        if gaddr is None:
            return _EFAULT
        runstate = kind == "runstate"
        compat = cur.word_bits == 32
        size = (RUNSTATE_INFO_COMPAT if compat else RUNSTATE_INFO).size if runstate else VCPU_TIME_INFO.size
        if gaddr != UNREGISTER:
            rc = _map_guest_area(cur, gaddr, size)
            if rc:
                return rc
        where = None if gaddr == UNREGISTER else gaddr
        areas = _areas(v)
        now = hv.clock_ns
        if runstate:
            areas.runstate_phys = where
            if where is not None and v.vcpu_id == current:
                _write(cur, where, runstate_bytes(v, now, compat))
        else:
            areas.time_phys = where
            if where is not None:
                update_time_area(v, now)
        return 0

    return register


def _register_vcpu_info(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    raw = copy_from_guest(cur, addr, RegisterVcpuInfo.size())
    if raw is None:
        return _EFAULT
    info = RegisterVcpuInfo.unpack(raw)
    release = hv.release
    registered = v.areas is not None and v.areas.vcpu_info
    align = VCPU_INFO_ALIGN[cur.word_bits]
    if release.vcpu_info_guest_area:
        gaddr = info.mfn * PAGE_SIZE + info.offset
        if info.offset >= PAGE_SIZE or gaddr >= 1 << 64:  # the gfn of gaddr is not mfn, or ~0
            return _EINVAL
        if registered:
            return _EBUSY
        rc = _map_guest_area(cur, gaddr, VCPU_INFO_SIZE)
        if rc:
            return rc
    else:
        bad_place = release.vcpu_info_offset_rc
        if info.offset > PAGE_SIZE - VCPU_INFO_SIZE:
            return bad_place
        if release.vcpu_info_align_check and info.offset % align:
            return bad_place
        if registered:
            return _EINVAL
        if v.vcpu_id != current and v.up:
            return _EINVAL  # only the caller's own vCPU, or one that is down
        if not cur.is_guest_ram(info.mfn):
            return _EINVAL
        gaddr = info.mfn * PAGE_SIZE + info.offset
    memory = cur.memory
    memory[gaddr : gaddr + VCPU_INFO_SIZE] = memory[v.info_offset : v.info_offset + VCPU_INFO_SIZE]
    v.info_offset = gaddr
    _areas(v).vcpu_info = True
    # mark everything pending: evtchn_pending_sel all ones, then evtchn_upcall_pending (and the upcall)
    sel = gaddr + cur.pending_sel
    memory[sel : sel + cur.word_bits // 8] = b"\xff" * (cur.word_bits // 8)
    vcpu_mark_events_pending(v)
    update_time_area(v, hv.clock_ns)
    return 0


def _up(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    """VCPUOP_up: a vCPU that has never had a context (``is_initialised``) cannot be woken (-EINVAL)."""
    if not v.initialised:
        return _EINVAL
    if not v.up:
        hv.vcpu_up(cur.domid, v.vcpu_id)
    return 0


def _down(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    """VCPUOP_down; from 4.11 (d3b230fc46) taking down the last vCPU that is up shuts the domain down instead
    (poweroff), and the call answers 0."""
    if hv.release.vcpu_down_last_shuts_down and not any(o.up for o in cur.vcpus if o is not v):
        hv.shutdown_domain(cur.domid, "poweroff")
        return 0
    if v.up:
        hv.vcpu_up(cur.domid, v.vcpu_id, up=False)
    return 0


def _is_up(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    return int(v.up)  # 1 or 0: !(pause_flags & VPF_down)


def _stop_periodic_timer(hv: Hypervisor, cur: Domain, v: Vcpu, addr: int, current: int) -> int:
    """VCPUOP_stop_periodic_timer: the vCPU's periodic tick stops (its period becomes 0). The model fires no timer,
    so the period is state a guest's later calls and the tests can see."""
    v.periodic_period_ns = 0
    return 0


SUBOPS: dict[int, VcpuHandler] = {
    VcpuOp.up: _up,
    VcpuOp.down: _down,
    VcpuOp.is_up: _is_up,
    VcpuOp.stop_periodic_timer: _stop_periodic_timer,
    VcpuOp.get_runstate_info: _get_runstate_info,
    VcpuOp.register_runstate_memory_area: _register_runstate_linear,
    VcpuOp.register_vcpu_info: _register_vcpu_info,
    VcpuOp.register_vcpu_time_memory_area: _register_time_linear,
    VcpuOp.register_runstate_phys_area: _register_phys("runstate"),
    VcpuOp.register_vcpu_time_phys_area: _register_phys("time"),
}
# ops 14 and 15 exist only where the registry's vcpu_phys_area row is implemented; before, the late gate (the
# feature is never exposed on a release that predates it) answers -ENOSYS in the same place as Xen's switch default.
NOT_MODELLED_OPS = frozenset(range(VcpuOp.initialise, VcpuOp.register_vcpu_time_memory_area + 1)) - set(SUBOPS)


def vcpu_op(hv: Hypervisor, cur: Domain, arg: VcpuOpArg, cmd: int, call: Call) -> int:
    """The whole hypercall: ``cmd`` is the sub-op, ``call.vcpuid`` the vCPU it names (a 32-bit register),
    ``call.vcpu`` the vCPU making the call."""
    release = hv.release
    if not 0 <= call.vcpu < cur.max_vcpus or not cur.vcpus[call.vcpu].up:
        raise GuestNotRunning(cur.domid, call.vcpu)  # the model's caller, not the guest's argument, is wrong
    if release.vcpu_op_hvm_filter and cur.is_hvm and cmd not in HVM_FILTER_4_3:
        return _ENOSYS
    vcpuid = call.vcpuid & 0xFFFFFFFF
    if release.vcpu_op_vcpuid_range_einval and (vcpuid >= 1 << 31 or vcpuid >= MAX_VIRT_CPUS):
        return _EINVAL  # a negative int, or at least MAX_VIRT_CPUS
    if vcpuid >= cur.max_vcpus:
        return _ENOENT
    if (HYPERVISOR_vcpu_op, cmd) in cur.hidden_late:
        return _ENOSYS
    handler = SUBOPS.get(cmd)
    if handler is None:
        if cmd in NOT_MODELLED_OPS:
            raise NotModelled(f"vcpu_op {VcpuOp(cmd).name} ({cmd})")
        return _ENOSYS
    return handler(hv, cur, cur.vcpus[vcpuid], arg.addr, call.vcpu)
