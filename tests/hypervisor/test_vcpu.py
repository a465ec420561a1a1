"""vcpu_op (hypercall 24) release by release (spec/gnttab-vcpu-version.md §4; do_vcpu_op, common_vcpu_op,
map_vcpu_info and map_guest_area at each tag), the 4.18 physical areas under ABI control, and the areas kept
current in guest memory. Each rule names the commit that introduced it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.features import REGISTRY
from xenabi.abi.vcpu import (
    RUNSTATE_INFO,
    RUNSTATE_INFO_COMPAT,
    UNREGISTER,
    VCPU_TIME_INFO,
    Runstate,
    VcpuOp,
)
from xenabi.abi.version import Xenfeat, XenVer, XenVersionArg
from xenabi.abi.xen import HYPERVISOR_vcpu_op, HYPERVISOR_xen_version
from xenabi.errors import GuestNotRunning, NotModelled
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.vcpu import NOT_MODELLED_OPS

from ..conftest import ev, new_domu

ARG = 0x10000  # where the guest puts the hypercall's argument
AREA = 0x11000  # a page of guest RAM for the areas
OUTSIDE = 1 << 40
ENOSYS, ENOENT, EINVAL, ENXIO, EFAULT, EBUSY = (
    -errno.ENOSYS, -errno.ENOENT, -errno.EINVAL, -errno.ENXIO, -errno.EFAULT, -errno.EBUSY)  # fmt: skip


def vcpu_op(hv: Hypervisor, domid: int, cmd: int, vcpuid: int = 0, arg: bytes | None = None, vcpu: int = 0) -> int:
    """Put ``arg`` at ARG in the guest and issue the op (no argument: a handle to ARG as it is)."""
    if arg is not None:
        hv.domain(domid).memory[ARG : ARG + len(arg)] = arg
    return hv.hypercall_raw(domid, HYPERVISOR_vcpu_op, cmd, ARG.to_bytes(8, "little"), vcpuid=vcpuid, vcpu=vcpu)[0]


def area(address: int) -> bytes:
    return address.to_bytes(8, "little")


def read(hv: Hypervisor, domid: int, addr: int, length: int) -> bytes:
    return bytes(hv.domain(domid).memory[addr : addr + length])


def runstate(hv: Hypervisor, domid: int, addr: int = AREA) -> tuple[int, ...]:
    return RUNSTATE_INFO.unpack(read(hv, domid, addr, RUNSTATE_INFO.size))


def guest(release: str, *features: str, kind: str = "hvm", vcpus: int = 2) -> tuple[Hypervisor, int]:
    hv = Hypervisor(release, memory_mb=1024)
    return hv, new_domu(hv, kind, *features, max_vcpus=vcpus)


# --- the order of the first checks -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("release", "vcpuid", "expected"),
    [
        ("4.5", -1, EINVAL), ("4.5", 8192, EINVAL), ("4.5", 2, ENOENT), ("4.5", 8191, ENOENT),
        ("4.6", -1, ENOENT), ("4.6", 8192, ENOENT), ("4.6", 2, ENOENT),
    ],
)  # fmt: skip
def test_bad_vcpuid_einval_before_4_6_enoent_after(release: str, vcpuid: int, expected: int) -> None:
    """d9e66702fd / 1d4290342f (4.6): the vcpuid became unsigned and the MAX_VIRT_CPUS check went."""
    hv, domid = guest(release, kind="pv")
    assert vcpu_op(hv, domid, VcpuOp.get_runstate_info, vcpuid) == expected


@pytest.mark.parametrize(("release", "expected"), [("4.3", ENOSYS), ("4.6", ENOSYS), ("4.7", ENOENT)])
def test_hvm_filter_before_the_vcpuid_until_4_7(release: str, expected: int) -> None:
    """192df6f912 (4.7): before it, an HVM guest's VCPUOP_up (not in hvm_vcpu_op's list) was -ENOSYS before
    anything else; from 4.7 every op reaches the vcpuid check."""
    hv, domid = guest(release)
    assert vcpu_op(hv, domid, VcpuOp.up, 5) == expected
    assert vcpu_op(hv, domid, VcpuOp.get_runstate_info, 5) == ENOENT  # in the list: the vcpuid is checked


def test_pv_guests_never_had_the_filter() -> None:
    hv, domid = guest("4.3", kind="pv")
    assert vcpu_op(hv, domid, VcpuOp.up, 5) == ENOENT


@pytest.mark.parametrize("cmd", sorted(NOT_MODELLED_OPS))
def test_ops_outside_the_model_raise_not_modelled(cmd: int) -> None:
    hv, domid = guest("4.22")
    with pytest.raises(NotModelled, match=VcpuOp(cmd).name):
        vcpu_op(hv, domid, cmd)


@pytest.mark.parametrize("cmd", [16, 99, 0xFFFFFFFF])
def test_unknown_op_is_enosys_after_the_vcpuid(cmd: int) -> None:
    hv, domid = guest("4.22")
    assert vcpu_op(hv, domid, cmd) == ENOSYS and vcpu_op(hv, domid, cmd, 9) == ENOENT


def test_a_vcpu_that_is_not_up_cannot_call() -> None:
    hv, domid = guest("4.22")
    with pytest.raises(GuestNotRunning):
        vcpu_op(hv, domid, VcpuOp.get_runstate_info, vcpu=1)  # vCPU 1 has not been brought up
    with pytest.raises(GuestNotRunning):
        vcpu_op(hv, domid, VcpuOp.get_runstate_info, vcpu=7)  # no such vCPU


# --- the 4.18 physical areas and ABI control ----------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [VcpuOp.register_runstate_phys_area, VcpuOp.register_vcpu_time_phys_area])
def test_phys_areas_exist_from_4_18(cmd: int) -> None:
    """d5df44275e, 60e544a8c5 (4.18). Before: -ENOSYS after the vcpuid check (the switch's default)."""
    hv, domid = guest("4.17")
    assert vcpu_op(hv, domid, cmd, 0, area(AREA)) == ENOSYS and vcpu_op(hv, domid, cmd, 9) == ENOENT
    hv, domid = guest("4.18")
    assert vcpu_op(hv, domid, cmd, 0, area(AREA)) == 0


@pytest.mark.parametrize("cmd", [VcpuOp.register_runstate_phys_area, VcpuOp.register_vcpu_time_phys_area])
def test_hidden_vcpu_phys_area_answers_as_4_17_after_the_vcpuid_check(cmd: int) -> None:
    """The registry row's late gate: -ENOENT first, then -ENOSYS, nothing registered, and the XENFEAT bits 18 and
    19 (48a3fd1432) are clear, Xen's own advertisement of the feature."""
    hv, domid = guest("4.22", "evtchn_fifo", "evtchn_upcall", "gnttab_v2", "xenver_varbuf")
    assert vcpu_op(hv, domid, cmd, 9, area(AREA)) == ENOENT
    assert vcpu_op(hv, domid, cmd, 0, area(AREA)) == ENOSYS
    assert hv.domain(domid).vcpus[0].areas is None and read(hv, domid, AREA, 48) == bytes(48)
    assert features_of(hv, domid) & {Xenfeat.runstate_phys_area, Xenfeat.vcpu_time_phys_area} == set()
    exposed = new_domu(hv, "hvm")
    assert features_of(hv, exposed) >= {Xenfeat.runstate_phys_area, Xenfeat.vcpu_time_phys_area}


def features_of(hv: Hypervisor, domid: int) -> set[int]:
    hv.domain(domid).memory[ARG : ARG + 8] = bytes(8)
    assert hv.hypercall(domid, HYPERVISOR_xen_version, XenVer.get_features, XenVersionArg(ARG)) == 0
    submap = int.from_bytes(read(hv, domid, ARG + 4, 4), "little")
    return {bit for bit in range(32) if submap >> bit & 1}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (AREA + 4096 - 8, ENXIO),  # crosses a page
        (AREA + 4, ENXIO),  # not 8-aligned
        (OUTSIDE, EINVAL),  # no RAM behind the frame
        (4096, EINVAL),  # shared_info's frame is Xen's, not guest RAM
        (UNREGISTER, 0),  # ~0 unregisters, nothing checked
        (AREA, 0),
    ],
)
def test_map_guest_area_checks(address: int, expected: int) -> None:
    """map_guest_area at 4.18 (d5df44275e): the order and codes of its checks."""
    hv, domid = guest("4.18")
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 0, area(address)) == expected


def test_phys_area_argument_unreadable_is_efault() -> None:
    hv, domid = guest("4.18")
    rc = hv.hypercall_raw(domid, HYPERVISOR_vcpu_op, VcpuOp.register_runstate_phys_area, OUTSIDE.to_bytes(8, "little"))
    assert rc[0] == EFAULT


def test_32_bit_guest_needs_only_4_byte_alignment() -> None:
    hv, domid = guest("4.18", kind="pv")
    hv.set_guest_width(domid, 32)
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 0, area(AREA + 4)) == 0
    assert RUNSTATE_INFO_COMPAT.unpack(read(hv, domid, AREA + 4, 44))[0] == Runstate.running


# --- areas kept current -----------------------------------------------------------------------------------------
def test_runstate_area_follows_the_vcpu_and_the_clock() -> None:
    hv, domid = guest("4.18")
    hv.advance_clock(1000)
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 0, area(AREA)) == 0
    state, entry, running, _, _, offline = runstate(hv, domid)
    assert (state, entry, running, offline) == (Runstate.running, 0, 1000, 0)  # filled at once for the calling vCPU
    hv.advance_clock(500)
    hv.pause(domid)
    state, entry, running, _, _, offline = runstate(hv, domid)
    assert (state, entry, running, offline) == (Runstate.offline, 1500, 1500, 0)
    hv.advance_clock(200)
    hv.unpause(domid)
    state, entry, running, _, _, offline = runstate(hv, domid)
    assert (state, entry, running, offline) == (Runstate.running, 1700, 1500, 200)


def test_phys_area_for_another_vcpu_is_filled_at_its_next_change() -> None:
    """runstate_area_populate fills the area at once only for the caller's own vCPU."""
    hv, domid = guest("4.18")
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 1, area(AREA)) == 0
    assert read(hv, domid, AREA, 48) == bytes(48)
    hv.advance_clock(300)
    hv.vcpu_up(domid, 1)
    assert runstate(hv, domid)[:2] == (Runstate.running, 300)


def test_linear_area_stops_while_a_phys_area_exists() -> None:
    hv, domid = guest("4.18")
    linear = AREA + 0x100
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_memory_area, 0, area(linear)) == 0
    assert runstate(hv, domid, linear)[0] == Runstate.running
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 0, area(AREA)) == 0
    hv.pause(domid)
    assert runstate(hv, domid, AREA)[0] == Runstate.offline and runstate(hv, domid, linear)[0] == Runstate.running
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_phys_area, 0, area(UNREGISTER)) == 0
    hv.unpause(domid)
    hv.pause(domid)
    assert runstate(hv, domid, linear)[0] == Runstate.offline  # the linear area is current again


def test_linear_area_outside_ram_registers_and_updates_are_dropped() -> None:
    """Xen ignores a failing copy into a linear area; a PV handle in Xen's own range is -EFAULT."""
    hv, domid = guest("4.14")
    assert vcpu_op(hv, domid, VcpuOp.register_runstate_memory_area, 0, area(OUTSIDE)) == 0
    hv.pause(domid)  # nothing to write to, nothing breaks
    pv = new_domu(hv, "pv")
    assert vcpu_op(hv, pv, VcpuOp.register_runstate_memory_area, 0, area(0xFFFF800000001000)) == EFAULT


def test_time_area_version_goes_up_by_two_per_update() -> None:
    hv, domid = guest("4.14")
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_time_memory_area, 0, area(AREA)) == 0
    version, tsc, system_time, mul, shift, flags = VCPU_TIME_INFO.unpack(read(hv, domid, AREA, 32))
    assert (version, mul, shift, flags) == (2, 0x80000000, 1, 1)
    hv.advance_clock(4000)
    hv.pause(domid)
    version, tsc, system_time, *_ = VCPU_TIME_INFO.unpack(read(hv, domid, AREA, 32))
    assert (version, tsc, system_time) == (4, 4000, 4000)


def test_get_runstate_info_native_and_compat() -> None:
    hv, domid = guest("4.14", kind="pv")
    hv.advance_clock(70)
    assert vcpu_op(hv, domid, VcpuOp.get_runstate_info, 0) == 0
    assert RUNSTATE_INFO.unpack(read(hv, domid, ARG, 48))[:3] == (Runstate.running, 0, 70)
    assert vcpu_op(hv, domid, VcpuOp.get_runstate_info, 1) == 0
    assert RUNSTATE_INFO.unpack(read(hv, domid, ARG, 48))[0] == Runstate.offline  # vCPU 1 is not up
    hv.set_guest_width(domid, 32)
    hv.domain(domid).memory[ARG : ARG + 48] = b"\xee" * 48
    assert vcpu_op(hv, domid, VcpuOp.get_runstate_info, 0) == 0
    assert read(hv, domid, ARG + 44, 4) == b"\xee" * 4  # 44 bytes, no padding


# --- register_vcpu_info, by release ------------------------------------------------------------------------------
def vcpu_info(gfn: int, offset: int) -> bytes:
    return struct.pack("<QII", gfn, offset, 0)


GFN = AREA // 4096


@pytest.mark.parametrize(
    ("release", "offset", "expected"),
    [
        ("4.13.0", 4, 0), ("4.13.0", 4033, EINVAL),  # no alignment check; past 4096 - 64
        ("4.13.2", 4, EINVAL), ("4.14", 4, EINVAL),  # XSA-327, 3fdc211b01 (4.14; 4.13.2, 4.12.4)
        ("4.16", 4, ENXIO), ("4.16", 4033, ENXIO),  # 7ee7a3749b (4.16)
        ("4.18", 4, ENXIO), ("4.18", 4040, ENXIO), ("4.18", 4096, EINVAL),  # 295514ff75 (4.18)
        ("4.18", 4032, 0),
    ],
)  # fmt: skip
def test_register_vcpu_info_offsets(release: str, offset: int, expected: int) -> None:
    hv, domid = guest(release)
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_info, 0, vcpu_info(GFN, offset)) == expected


@pytest.mark.parametrize(("release", "again", "other_up", "no_ram"), [
    ("4.17", EINVAL, EINVAL, EINVAL), ("4.18", EBUSY, 0, EINVAL)])  # fmt: skip
def test_register_vcpu_info_refusals(release: str, again: int, other_up: int, no_ram: int) -> None:
    """295514ff75 (4.18): re-registering -EBUSY (was -EINVAL); another vCPU that is up may be given one."""
    hv, domid = guest(release)
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_info, 0, vcpu_info(GFN, 0)) == 0
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_info, 0, vcpu_info(GFN, 64)) == again
    hv.vcpu_up(domid, 1)
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_info, 1, vcpu_info(GFN, 128)) == other_up
    hv2, other = guest(release)
    assert vcpu_op(hv2, other, VcpuOp.register_vcpu_info, 0, vcpu_info(OUTSIDE // 4096, 0)) == no_ram


def test_registered_vcpu_info_moves_event_delivery() -> None:
    """map_guest_area/map_vcpu_info: the current contents move, every selector bit and the upcall are pending,
    and the event channel code writes the new place from then on."""
    hv, domid = guest("4.18")
    d = hv.domain(domid)
    old = d.vcpus[0].info_offset
    assert vcpu_op(hv, domid, VcpuOp.register_vcpu_info, 0, vcpu_info(GFN, 64)) == 0
    new = AREA + 64
    assert d.vcpus[0].info_offset == new and read(hv, domid, new + d.pending_sel, 8) == b"\xff" * 8
    assert read(hv, domid, new, 1) == b"\x01" and d.vcpus[0].upcall_count == 1
    hv.domain(domid).memory[new : new + 64] = bytes(64)  # the guest handles and clears the spurious event
    port = ev(hv, domid, "bind_ipi", vcpu=0)[1].port
    assert ev(hv, domid, "send", port=port)[0] == 0
    assert read(hv, domid, new, 1) == b"\x01" and read(hv, domid, old, 1) == b"\x00"


# --- garbage never raises ----------------------------------------------------------------------------------------
@given(
    cmd=st.integers(0, 2**32 - 1),
    vcpuid=st.integers(-(2**31), 2**32 - 1),
    data=st.binary(min_size=0, max_size=16),
    release=st.sampled_from(["4.3", "4.6", "4.17", "4.18", "4.22"]),
)
def test_garbage_never_raises(cmd: int, vcpuid: int, data: bytes, release: str) -> None:
    hv = Hypervisor(release, memory_mb=64)
    domid = new_domu(hv, "hvm", memory_mb=4)
    try:
        rc, _ = hv.hypercall_raw(domid, HYPERVISOR_vcpu_op, cmd, data, vcpuid=vcpuid)
    except NotModelled:
        assert cmd in NOT_MODELLED_OPS
        return
    assert rc <= 0 or (cmd == VcpuOp.is_up and rc == 1)


# --- up, down, is_up, stop_periodic_timer -----------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "reached"), [("4.6", False), ("4.7", True)])
def test_192df6f912_hvm_guests_reach_up_down_is_up_from_4_7(release: str, reached: bool) -> None:
    hv, domid = guest(release)
    for cmd in (VcpuOp.is_up, VcpuOp.down, VcpuOp.up):
        assert (vcpu_op(hv, domid, cmd, 1) != ENOSYS) == reached
    assert vcpu_op(hv, domid, VcpuOp.stop_periodic_timer, 1) == 0  # op 7 is in the 4.3-4.6 filter


def test_common_vcpu_op_up_down_is_up() -> None:
    """``VCPUOP_is_up`` answers 1 or 0; ``VCPUOP_up`` of a vCPU never initialised is -EINVAL; ``VCPUOP_down``
    takes it down and the runstate follows."""
    hv, domid = guest("4.17")
    assert vcpu_op(hv, domid, VcpuOp.is_up, 0) == 1 and vcpu_op(hv, domid, VcpuOp.is_up, 1) == 0
    assert vcpu_op(hv, domid, VcpuOp.up, 1) == EINVAL
    hv.vcpu_up(domid, 1)  # the guest starts it (INIT-SIPI): from now on it has had a context
    assert vcpu_op(hv, domid, VcpuOp.down, 1) == 0 and vcpu_op(hv, domid, VcpuOp.is_up, 1) == 0
    assert hv.domain(domid).vcpus[1].runstate == Runstate.offline
    assert vcpu_op(hv, domid, VcpuOp.up, 1) == 0 and vcpu_op(hv, domid, VcpuOp.is_up, 1) == 1
    assert hv.domain(domid).vcpus[1].runstate == Runstate.running


@pytest.mark.parametrize(("release", "shuts_down"), [("4.10", False), ("4.11.0", True)])
def test_d3b230fc46_the_last_vcpu_going_down_shuts_the_domain_down(release: str, shuts_down: bool) -> None:
    hv, domid = guest(release)
    assert vcpu_op(hv, domid, VcpuOp.down, 0) == 0
    d = hv.domain(domid)
    assert (d.shutdown_reason == "poweroff") == shuts_down and d.vcpus[0].up == shuts_down


def test_stop_periodic_timer_zeroes_the_period() -> None:
    hv, domid = guest("4.17", kind="pv")
    v = hv.domain(domid).vcpus[1]
    assert v.periodic_period_ns == 10_000_000  # pv_vcpu_initialise's 10 ms
    assert vcpu_op(hv, domid, VcpuOp.stop_periodic_timer, 1) == 0 and v.periodic_period_ns == 0
    hv2, hvm = guest("4.17")
    assert hv2.domain(hvm).vcpus[0].periodic_period_ns == 0


def test_registry_row_is_what_gates_ops_14_and_15() -> None:
    assert REGISTRY.gating(HYPERVISOR_vcpu_op, VcpuOp.register_runstate_phys_area) is REGISTRY["vcpu_phys_area"]
    hv = Hypervisor("4.18")
    d = hv.create_domain(CreateDomain.for_type("hvm", abi_features=REGISTRY["gnttab_v2"].mask_flag))
    assert (HYPERVISOR_vcpu_op, 14) in hv.domain(d).hidden_late
