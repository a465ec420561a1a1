"""grant_table_op (hypercall 20): the version negotiation release by release (spec/gnttab-vcpu-version.md §3;
do_grant_table_op and the gnttab_* handlers at each tag), gnttab_v2 under ABI control, Xen's own knobs
(grant_opts, gnttab=max-ver:1). Each rule names the commit that introduced it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.features import REGISTRY
from xenabi.abi.gnttab import (
    GRANT_ENTRY_V2,
    GetStatusFrames,
    GetVersion,
    Gntst,
    GnttabOp,
    GTF_permit_access,
    GTF_transitive,
    QuerySize,
    SetupTable,
    SetVersion,
)
from xenabi.abi.xen import DOMID_SELF, HYPERVISOR_grant_table_op
from xenabi.errors import NotModelled, XenError
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.gnttab import GRANT_FRAME_BASE, NOT_MODELLED, STATUS_FRAME_BASE

from ..conftest import new_domu

ARG = 0x10000
FRAMES = 0x11000
OUTSIDE = 1 << 40
XEN_RANGE = 0xFFFF800000001000
ENOSYS, EINVAL, EFAULT, ESRCH, EPERM, ERANGE = (
    -errno.ENOSYS, -errno.EINVAL, -errno.EFAULT, -errno.ESRCH, -errno.EPERM, -errno.ERANGE)  # fmt: skip
ALL_BUT_V2 = ("evtchn_fifo", "evtchn_upcall")


def gnttab(hv: Hypervisor, domid: int, cmd: int, arg: object = None, count: int = 1, addr: int = ARG) -> int:
    if arg is not None:
        raw = arg.pack()  # type: ignore[attr-defined]
        hv.domain(domid).memory[addr : addr + len(raw)] = raw
    return hv.hypercall_raw(domid, HYPERVISOR_grant_table_op, cmd, addr.to_bytes(8, "little"), count=count)[0]


def out(hv: Hypervisor, domid: int, struct: type, addr: int = ARG):  # type: ignore[no-untyped-def]
    return struct.unpack(bytes(hv.domain(domid).memory[addr : addr + struct.size()]))


def guest(
    release: str, kind: str = "hvm", *features: str, control: bool = True, **host: object
) -> tuple[Hypervisor, int]:
    hv = Hypervisor(release, abi_control=control, memory_mb=1024, **host)  # type: ignore[arg-type]
    return hv, new_domu(hv, kind, *features)


def set_version(hv: Hypervisor, domid: int, version: int) -> tuple[int, int]:
    rc = gnttab(hv, domid, GnttabOp.set_version, SetVersion(version))
    return rc, out(hv, domid, SetVersion).version


def get_version(hv: Hypervisor, caller: int, dom: int = DOMID_SELF) -> tuple[int, int]:
    rc = gnttab(hv, caller, GnttabOp.get_version, GetVersion(dom=dom))
    return rc, out(hv, caller, GetVersion).version


# --- entry ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hvm", "pvh"])
def test_hvm_allow_list(kind: str) -> None:
    """grant_table_op_is_allowed (hvm.c 4.3-4.8, hvm/hypercall.c from 4.9, e637e8d12e): eight sub-ops only."""
    hv, domid = guest("4.22", kind)
    assert gnttab(hv, domid, GnttabOp.get_status_frames, GetStatusFrames(nr_frames=0, dom=DOMID_SELF)) == ENOSYS
    assert gnttab(hv, domid, GnttabOp.dump_table) == ENOSYS
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=DOMID_SELF)) == 0
    assert gnttab(hv, domid, GnttabOp.set_version | 1 << 12, SetVersion(1)) == ENOSYS  # raw command


@pytest.mark.parametrize("count", [-1, 0xFFFFFFFF, 1 << 31])
def test_negative_count_is_einval_everywhere(count: int) -> None:
    for release in ("4.3", "4.22"):
        hv, domid = guest(release, "pv")
        assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=DOMID_SELF), count=count) == EINVAL


@pytest.mark.parametrize("count", [0, 2])
def test_query_and_setup_need_count_1(count: int) -> None:
    hv, domid = guest("4.22", "pv")
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=DOMID_SELF), count=count) == EINVAL
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF), count=count) == EINVAL
    assert gnttab(hv, domid, GnttabOp.set_version, SetVersion(1), count=count) == 0  # set_version ignores it


@pytest.mark.parametrize(("release", "expected"), [("4.4", ENOSYS), ("4.5", ENOSYS), ("4.7", ENOSYS), ("4.8", EINVAL)])
def test_junk_above_the_command(release: str, expected: int) -> None:
    """No mask in 4.3-4.4; 18e8d22fe7 (4.5) masked it, -ENOSYS; a66765eb06 (4.8) made it -EINVAL."""
    hv, domid = guest(release, "pv")
    assert gnttab(hv, domid, GnttabOp.query_size | 1 << 12, QuerySize(dom=DOMID_SELF)) == expected


@pytest.mark.parametrize("cmd", sorted(NOT_MODELLED))
def test_ops_outside_the_model_raise_not_modelled(cmd: int) -> None:
    hv, domid = guest("4.22", "pv")
    with pytest.raises(NotModelled, match=GnttabOp(cmd).name):
        gnttab(hv, domid, cmd)


@pytest.mark.parametrize(("release", "exists"), [("4.4", False), ("4.5", True), ("4.20", True), ("4.21", False)])
def test_cache_flush_on_x86_from_4_5_to_4_20(release: str, exists: bool) -> None:
    """18e8d22fe7 (4.5) added it; 5642a6055c (4.21) took it away from x86."""
    hv, domid = guest(release, "pv")
    if exists:
        with pytest.raises(NotModelled):
            gnttab(hv, domid, GnttabOp.cache_flush)
    else:
        assert gnttab(hv, domid, GnttabOp.cache_flush) == ENOSYS


# --- set_version and get_version ----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 3, 0xFFFFFFFF])
def test_set_version_bad_version_writes_the_current_one_back(version: int) -> None:
    hv, domid = guest("4.22")
    assert set_version(hv, domid, version) == (EINVAL, 1)


def test_set_version_switches_and_get_version_reads_it() -> None:
    hv, domid = guest("4.22")
    assert set_version(hv, domid, 2) == (0, 2) and get_version(hv, domid) == (0, 2)
    assert hv.domain(domid).grant_table.nr_status_frames == 1
    assert set_version(hv, domid, 2) == (0, 2)  # already there
    assert set_version(hv, domid, 1) == (0, 1) and hv.domain(domid).grant_table.nr_status_frames == 0


def test_hidden_gnttab_v2_answers_as_xen_own_knob() -> None:
    """The registry's value gate: -ENOSYS, the current version written back, nothing switched; v1 still works."""
    hv, domid = guest("4.22", "hvm", *ALL_BUT_V2)
    assert set_version(hv, domid, 2) == (ENOSYS, 1) and get_version(hv, domid) == (0, 1)
    assert set_version(hv, domid, 3) == (EINVAL, 1)  # the version check comes first
    assert set_version(hv, domid, 1) == (0, 1)


def test_grant_opts_max_version_1_from_4_16() -> None:
    """7379f9e10a (4.16): the domain's own maximum, the same answer as the registry's gate."""
    hv = Hypervisor("4.16", abi_control=False, memory_mb=256)
    domid = hv.create_domain(CreateDomain.for_type("hvm", grant_opts=1), memory_mb=8)
    hv.unpause(domid)
    assert set_version(hv, domid, 2) == (ENOSYS, 1)
    assert "gnttab_v2" not in hv.domain(domid).policy.features


@pytest.mark.parametrize(("release", "limited"), [("4.10.1", None), ("4.10.2", ENOSYS), ("4.11", ENOSYS),
                                                  ("4.15", ENOSYS), ("4.22", ENOSYS)])  # fmt: skip
def test_boot_option_max_ver_1(release: str, limited: int | None) -> None:
    """dc96c65ed6 (4.11; XSA-226 in 4.8.5, 4.9.3, 4.10.2): gnttab=max-ver:1 for every domain of the host."""
    if limited is None:
        with pytest.raises(XenError, match="no such boot option") as info:
            Hypervisor(release, gnttab_max_version=1)
        assert info.value.field == "gnttab_max_version"
        return
    hv, domid = guest(release, "hvm", *ALL_BUT_V2, gnttab_max_version=1)
    assert set_version(hv, domid, 2)[0] == limited
    assert "gnttab_v2" not in hv.features and hv.boot_hidden == {"gnttab_v2"}


@pytest.mark.parametrize("value", [0, 3, -1, "two"])
def test_boot_option_bad_version(value: object) -> None:
    with pytest.raises(XenError) as info:
        Hypervisor("4.22", gnttab_max_version=value)  # type: ignore[arg-type]
    assert info.value.field == "gnttab_max_version"


@pytest.mark.parametrize(("release", "fresh"), [("4.11", 0), ("4.12", 1)])
def test_fresh_version_0_until_4_12(release: str, fresh: int) -> None:
    """1237659523 (4.12): version 1 from creation; before, 0 until the first setup_table fixes it."""
    hv, domid = guest(release)
    assert get_version(hv, domid) == (0, fresh)
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF, nr_frames=1, frame_list=FRAMES)) == 0
    assert get_version(hv, domid) == (0, 1)


def test_get_version_order() -> None:
    """-EFAULT, -ESRCH, then the default XSM policy (XSM_TARGET)."""
    hv, a = guest("4.22")
    b = new_domu(hv, "hvm")
    assert hv.hypercall_raw(a, HYPERVISOR_grant_table_op, GnttabOp.get_version, OUTSIDE.to_bytes(8, "little"))[0] \
        == EFAULT  # fmt: skip
    assert get_version(hv, a, 0x7000)[0] == ESRCH
    assert get_version(hv, a, b)[0] == EPERM
    assert get_version(hv, 0, b) == (0, 1)  # the control domain may


@pytest.mark.parametrize(("release", "frame", "kind", "expected"), [
    ("4.5", 1 << 33, GTF_permit_access, 0),  # truncated silently
    ("4.6", 1 << 33, GTF_permit_access, ERANGE),  # 3459050e04
    ("4.6", 5, GTF_permit_access, 0),
    ("4.9", 0, GTF_transitive, 0),
    ("4.10", 0, GTF_transitive, ERANGE),  # ad48fb963d
])  # fmt: skip
def test_v2_to_v1_unrepresentable_reserved_entries(release: str, frame: int, kind: int, expected: int) -> None:
    hv, domid = guest(release, "pv")
    assert set_version(hv, domid, 2)[0] == 0
    table = hv.domain(domid).grant_table
    GRANT_ENTRY_V2.pack_into(table.shared, 3 * GRANT_ENTRY_V2.size, kind, 0, frame)  # what the guest wrote
    assert set_version(hv, domid, 1) == (expected, 2 if expected else 1)


def test_switch_keeps_the_reserved_entries_and_clears_the_rest() -> None:
    hv, domid = guest("4.22", "pv")
    table = hv.domain(domid).grant_table
    table.shared[0:8] = GRANT_ENTRY_V2.pack(GTF_permit_access, 0, 77)[:8]  # v1 entry 0: flags, domid, frame 0
    table.shared[8:16] = (1).to_bytes(2, "little") + (0).to_bytes(2, "little") + (77).to_bytes(4, "little")
    table.shared[8 * 8 : 8 * 8 + 8] = b"\x01" * 8  # entry 8: not reserved
    assert set_version(hv, domid, 2)[0] == 0
    assert GRANT_ENTRY_V2.unpack_from(table.shared, GRANT_ENTRY_V2.size) == (1, 0, 77)
    assert bytes(table.shared[8 * 16 :]) == bytes(len(table.shared) - 8 * 16)


# --- query_size and setup_table -------------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "frames", "maximum"), [("4.9", 4, 32), ("4.10", 1, 64)])
def test_query_size_per_release(release: str, frames: int, maximum: int) -> None:
    """18b1be5e32 (4.10): 1 initial frame, the domain's own maximum (default 64)."""
    hv, domid = guest(release)
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=DOMID_SELF)) == 0
    answer = out(hv, domid, QuerySize)
    assert (answer.status, answer.nr_frames, answer.max_nr_frames) == (Gntst.okay, frames, maximum)


def test_query_size_own_limit_from_4_10_and_statuses() -> None:
    hv = Hypervisor("4.10", memory_mb=256)
    domid = new_domu(hv, "hvm", max_grant_frames=10)
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=DOMID_SELF)) == 0
    assert out(hv, domid, QuerySize).max_nr_frames == 10
    other = new_domu(hv, "hvm")
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=other)) == 0
    assert out(hv, domid, QuerySize).status == Gntst.permission_denied
    assert gnttab(hv, domid, GnttabOp.query_size, QuerySize(dom=0x7000)) == 0
    assert out(hv, domid, QuerySize).status == Gntst.bad_domain


@pytest.mark.parametrize(("release", "status"), [("4.9", Gntst.general_error), ("4.10", Gntst.bad_domain)])
def test_setup_table_order_changed_in_4_10(release: str, status: int) -> None:
    """18b1be5e32 (4.10): the frame limit moved from first to last (after domain and XSM)."""
    hv, domid = guest(release, "pv")
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=0x7000, nr_frames=65, frame_list=FRAMES)) == 0
    assert out(hv, domid, SetupTable).status == status


def test_setup_table_grows_and_returns_frames() -> None:
    hv, domid = guest("4.22", "pv")
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF, nr_frames=3, frame_list=FRAMES)) == 0
    assert out(hv, domid, SetupTable).status == Gntst.okay and hv.domain(domid).grant_table.nr_frames == 3
    frames = [int.from_bytes(hv.domain(domid).memory[FRAMES + 8 * i : FRAMES + 8 * i + 8], "little") for i in range(3)]
    assert frames == [GRANT_FRAME_BASE, GRANT_FRAME_BASE + 1, GRANT_FRAME_BASE + 2]
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF, nr_frames=65, frame_list=FRAMES)) == 0
    assert out(hv, domid, SetupTable).status == Gntst.general_error


def test_setup_table_frame_faults() -> None:
    hv, domid = guest("4.22", "pv")
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF, nr_frames=1, frame_list=OUTSIDE)) == 0
    assert out(hv, domid, SetupTable).status == Gntst.bad_virt_addr
    assert gnttab(hv, domid, GnttabOp.setup_table, SetupTable(dom=DOMID_SELF, nr_frames=1, frame_list=XEN_RANGE)) \
        == EFAULT  # fmt: skip


# --- get_status_frames (PV only) --------------------------------------------------------------------------------
def test_get_status_frames_v1_and_v2() -> None:
    hv, domid = guest("4.22", "pv")
    assert gnttab(hv, domid, GnttabOp.get_status_frames, GetStatusFrames(nr_frames=1, dom=DOMID_SELF,
                                                                          frame_list=FRAMES)) == 0  # fmt: skip
    assert out(hv, domid, GetStatusFrames).status == Gntst.general_error  # v1 has none
    assert set_version(hv, domid, 2)[0] == 0
    assert gnttab(hv, domid, GnttabOp.get_status_frames, GetStatusFrames(nr_frames=1, dom=DOMID_SELF,
                                                                          frame_list=FRAMES)) == 0  # fmt: skip
    assert out(hv, domid, GetStatusFrames).status == Gntst.okay
    assert int.from_bytes(hv.domain(domid).memory[FRAMES : FRAMES + 8], "little") == STATUS_FRAME_BASE


@pytest.mark.parametrize(("release", "expected"), [("4.15", 0), ("4.16", EFAULT)])
def test_get_status_frames_handle_checked_early_from_4_16(release: str, expected: int) -> None:
    """0c229e6c9f (4.16): a frame_list in Xen's range is -EFAULT up front (before: a status, here general_error
    since v1 has no status frames)."""
    hv, domid = guest(release, "pv")
    arg = GetStatusFrames(nr_frames=1, dom=DOMID_SELF, frame_list=XEN_RANGE)
    assert gnttab(hv, domid, GnttabOp.get_status_frames, arg) == expected


# --- creation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "opts", "ok"), [
    ("4.15", 2, False), ("4.16", 2, True), ("4.16", 1, True), ("4.16", 0, False), ("4.16", 3, False),
    ("4.16", 0x12, False),
])  # fmt: skip
def test_grant_opts_at_creation(release: str, opts: int, ok: bool) -> None:
    """7379f9e10a (4.16): bits outside the version mask, version 0 or above the host's: -EINVAL; no field before."""
    hv = Hypervisor(release)
    create = CreateDomain.for_type("hvm", grant_opts=opts)
    if ok:
        assert hv.domain(hv.create_domain(create)).grant_table.max_version == opts
        return
    with pytest.raises(XenError) as info:
        hv.create_domain(create)
    assert info.value.errno == errno.EINVAL and info.value.field == "grant_opts" and list(hv.domains) == [0]


def test_grant_opts_above_the_boot_option_and_conflicting_mask() -> None:
    hv = Hypervisor("4.16", gnttab_max_version=1)
    with pytest.raises(XenError, match="allows 1 to 1"):
        hv.create_domain(CreateDomain.for_type("hvm", grant_opts=2))
    with pytest.raises(XenError, match="boot options") as info:
        hv.create_domain(CreateDomain.for_type("hvm", abi_features=REGISTRY["gnttab_v2"].mask_flag))
    assert info.value.field == "abi_features"
    hv = Hypervisor("4.16")
    with pytest.raises(XenError, match="grant_opts hides"):
        hv.create_domain(CreateDomain.for_type("hvm", grant_opts=1, abi_features=REGISTRY["gnttab_v2"].mask_flag))
    assert list(hv.domains) == [0]


# --- garbage never raises ----------------------------------------------------------------------------------------
MODELLED_OR_ABSENT = st.integers(0, 2**32 - 1).filter(lambda cmd: cmd & 0xFFF not in NOT_MODELLED | {12})


@given(cmd=MODELLED_OR_ABSENT, count=st.integers(-(2**31), 2**32 - 1), data=st.binary(max_size=16),
       release=st.sampled_from(["4.3", "4.5", "4.10", "4.16", "4.22"]),
       kind=st.sampled_from(["hvm", "pv"]))  # fmt: skip
def test_garbage_never_raises(cmd: int, count: int, data: bytes, release: str, kind: str) -> None:
    hv = Hypervisor(release, memory_mb=64)
    domid = new_domu(hv, kind, memory_mb=4)
    rc, _ = hv.hypercall_raw(domid, HYPERVISOR_grant_table_op, cmd, data, count=count)
    assert rc <= 0
