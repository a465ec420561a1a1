"""xen_version (hypercall 17), release by release (spec/gnttab-vcpu-version.md §2; xen/common/kernel.c at each tag).
Each rule names the commit that introduced it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi.domctl import XEN_X86_EMU_USE_PIRQ
from xenabi.abi.version import (
    CAPABILITIES_LEN,
    COMMANDLINE_LEN,
    HYPERVISOR_COMPAT_VIRT_START,
    HYPERVISOR_VIRT_START,
    VARBUF_MAX,
    XenVer,
    XenVersionArg,
)
from xenabi.abi.xen import HYPERVISOR_xen_version
from xenabi.errors import XenError
from xenabi.hypervisor import Hypervisor, version
from xenabi.releases import LINES

from ..conftest import new_domu

BUF = 0x3000  # a guest address inside every test domain's RAM
CMDLINE = "console=com1 dom0_mem=2048M gnttab=max-ver:2"


def host(release: str) -> Hypervisor:
    return Hypervisor(release, abi_control=False, memory_mb=1024, cmdline=CMDLINE)


def call(hv: Hypervisor, domid: int, cmd: int, addr: int = BUF) -> int:
    return hv.hypercall(domid, HYPERVISOR_xen_version, cmd, XenVersionArg(addr))


def read(hv: Hypervisor, domid: int, length: int, addr: int = BUF) -> bytes:
    return bytes(hv.domain(domid).memory[addr : addr + length])


def put(hv: Hypervisor, domid: int, data: bytes, addr: int = BUF) -> None:
    hv.domain(domid).memory[addr : addr + len(data)] = data


def features(hv: Hypervisor, domid: int) -> set[int]:
    put(hv, domid, bytes(8))
    assert call(hv, domid, XenVer.get_features) == 0
    submap = int.from_bytes(read(hv, domid, 8)[4:], "little")
    return {bit for bit in range(32) if submap >> bit & 1}


@pytest.mark.parametrize("line", list(LINES))
def test_version_is_major_minor(line: str) -> None:
    hv = host(line)
    major, minor = hv.release.version
    assert call(hv, new_domu(hv), XenVer.version, 0) == major << 16 | minor


# --- XENFEAT submap 0: release x guest type (the table of spec §2) ------------------------------------------------
HVM, PV, PVH = {0, 2, 8, 9, 10}, {5, 6, 7}, {0, 2, 8, 9}
FEATURE_CASES = [
    # release, guest type, bits; the commit of the difference from the row before
    ("4.3", "hvm", HVM), ("4.3", "pv", PV), ("4.3", "pvh", HVM),  # PVHv1 is not modelled: an HVM container
    ("4.6", "hvm", HVM | {13}), ("4.6", "pv", PV | {13}),  # 319442762f memory_op_vnode_supported
    ("4.8", "pvh", HVM | {13}),
    ("4.9", "pvh", PVH | {13}), ("4.9", "hvm", HVM | {13}),  # b96b500048 hvm_pirqs only with PIRQ emulation
    ("4.16", "hvm", HVM | {13, 16}), ("4.16", "pv", PV | {13, 17}),  # d66bf122c0 (not_)direct_mapped
    ("4.17", "pvh", PVH | {13, 16}),
    ("4.18", "hvm", HVM | {13, 16, 18, 19}), ("4.18", "pv", PV | {13, 17, 18, 19}),  # 48a3fd1432 phys areas
    ("4.19", "pvh", PVH | {13, 16, 18, 19, 20}), ("4.22", "pv", PV | {13, 17, 18, 19, 20}),  # 64b21662b1 MSI-X
]  # fmt: skip


@pytest.mark.parametrize(("release", "kind", "bits"), FEATURE_CASES, ids=[f"{r}-{k}" for r, k, _ in FEATURE_CASES])
def test_get_features_by_release_and_guest_type(release: str, kind: str, bits: set[int]) -> None:
    hv = host(release)
    assert features(hv, new_domu(hv, kind)) == bits
    if kind == "pv":
        assert features(hv, 0) == bits | {11}  # dom0, a PV domain, is the hardware domain


def test_hvm_pirqs_follows_pirq_emulation_from_4_9() -> None:
    """b96b500048 (4.9): only a domain with X86_EMU_USE_PIRQ gets XENFEAT_hvm_pirqs: every HVM guest (libxl asks
    for it, and until 4.19 Xen requires it), never PVH; before 4.9 every HVM container had it. (4.19 made the flag
    optional for HVM, 72cad62abb: not modelled.)"""
    for release, hvm, pvh in (("4.8", True, True), ("4.9", True, False), ("4.22", True, False)):
        hv = host(release)
        assert hv.domain(new_domu(hv)).config.effective_emulation_flags & XEN_X86_EMU_USE_PIRQ
        assert (10 in features(hv, new_domu(hv))) is hvm and (10 in features(hv, new_domu(hv, "pvh"))) is pvh


def test_get_features_checks() -> None:
    hv = host("4.22")
    d = new_domu(hv)
    put(hv, d, (1).to_bytes(4, "little") + bytes(4))
    assert call(hv, d, XenVer.get_features) == -errno.EINVAL  # only submap 0
    assert call(hv, d, XenVer.get_features, 1 << 40) == -errno.EFAULT  # the read fails first


# --- strings and the default XSM policy -------------------------------------------------------------------------------
def test_fixed_strings() -> None:
    hv = host("4.14.1")
    d = new_domu(hv)
    assert call(hv, d, XenVer.extraversion) == 0 and read(hv, d, 16) == b".1".ljust(16, b"\0")
    assert call(hv, d, XenVer.changeset) == 0 and read(hv, d, 64).rstrip(b"\0") == b"git:RELEASE-4.14.1"
    assert call(hv, d, XenVer.capabilities) == 0
    caps = read(hv, d, CAPABILITIES_LEN)
    assert caps.startswith(b"xen-3.0-x86_64 ") and caps.endswith(b"\0")
    put(hv, d, b"\xff" * 144)
    assert call(hv, d, XenVer.compile_info) == 0
    info = read(hv, d, 144)
    assert info[:64].rstrip(b"\0") and info[143] == 0 and b"\xff" not in info
    for cmd in (XenVer.extraversion, XenVer.compile_info, XenVer.capabilities, XenVer.changeset):
        assert call(hv, d, cmd, (8 << 20) - 4) == -errno.EFAULT  # the copy would leave the domain's RAM


def test_commandline_is_the_control_domains_from_4_7() -> None:
    """a2fc8d514d (4.7): XSM_PRIV for commandline: "<denied>" and its NUL, nothing more, for a domU."""
    hv = host("4.6")
    d = new_domu(hv)
    assert call(hv, d, XenVer.commandline) == 0
    assert read(hv, d, COMMANDLINE_LEN) == CMDLINE.encode().ljust(COMMANDLINE_LEN, b"\0")
    hv = host("4.7")
    d = new_domu(hv)
    put(hv, d, b"\xaa" * 16)
    assert call(hv, d, XenVer.commandline) == 0 and read(hv, d, 10) == b"<denied>\0\xaa"
    put(hv, 0, bytes(16))
    assert call(hv, 0, XenVer.commandline) == 0 and read(hv, 0, len(CMDLINE)) == CMDLINE.encode()


def test_pagesize_and_guest_handle() -> None:
    hv = host("4.22")
    d = new_domu(hv, handle=bytes(range(16)))
    assert call(hv, d, XenVer.pagesize, 0) == 4096 and call(hv, d, XenVer.pagesize) == -errno.EINVAL
    assert call(hv, d, XenVer.guest_handle) == 0 and read(hv, d, 16) == bytes(range(16))


@pytest.mark.parametrize("handle", [b"short", bytes(17), "0123456789abcdef"])
def test_a_handle_that_is_not_16_bytes_is_refused_at_creation(handle: object) -> None:
    hv = host("4.22")
    with pytest.raises(XenError) as info:
        new_domu(hv, handle=handle)
    assert info.value.field == "handle" and list(hv.domains) == [0]


def test_platform_parameters() -> None:
    """273bde319f (4.18): HVM and PVH read virt_start 0; PV keeps Xen's start; a 32-bit caller the compat one."""
    for release, hvm_start in (("4.17", HYPERVISOR_VIRT_START), ("4.18", 0)):
        hv = host(release)
        for kind, start in (("hvm", hvm_start), ("pvh", hvm_start), ("pv", HYPERVISOR_VIRT_START)):
            d = new_domu(hv, kind)
            assert call(hv, d, XenVer.platform_parameters) == 0
            assert int.from_bytes(read(hv, d, 8), "little") == start, (release, kind)
    hv = host("4.22")
    pv32 = new_domu(hv, "pv")
    hv.domain(pv32).set_word_bits(32)
    put(hv, pv32, b"\xff" * 8)
    assert call(hv, pv32, XenVer.platform_parameters) == 0
    assert read(hv, pv32, 8) == HYPERVISOR_COMPAT_VIRT_START.to_bytes(4, "little") + b"\xff" * 4


# --- build_id and the 4.20 varbuf sub-ops -----------------------------------------------------------------------------
def test_build_id_before_4_20() -> None:
    """460d24188d (4.7) added it; until 4.20 a non-null handle's len is read first and 0 is -EINVAL."""
    assert call(host("4.6"), 0, XenVer.build_id, 0) == -errno.ENOSYS
    hv = host("4.7")
    d = new_domu(hv)
    assert call(hv, d, XenVer.build_id, 0) == -errno.EPERM  # XSM_PRIV, before anything else
    size = call(hv, 0, XenVer.build_id, 0)
    assert size == 20
    put(hv, 0, (0).to_bytes(4, "little"))
    assert call(hv, 0, XenVer.build_id) == -errno.EINVAL
    put(hv, 0, (19).to_bytes(4, "little"))
    assert call(hv, 0, XenVer.build_id) == -errno.ENOBUFS
    put(hv, 0, (64).to_bytes(4, "little"))
    assert call(hv, 0, XenVer.build_id) == 20 and len(set(read(hv, 0, 20, BUF + 4))) > 1
    assert call(hv, 0, XenVer.build_id, 1 << 40) == -errno.EFAULT


def test_build_id_through_varbuf_from_4_20() -> None:
    """8eed14bf9d (4.20): the varbuf order; a len of 0 is now -ENOBUFS."""
    hv = host("4.20")
    put(hv, 0, (0).to_bytes(4, "little"))
    assert call(hv, 0, XenVer.build_id) == -errno.ENOBUFS
    assert call(hv, 0, XenVer.build_id, 0) == 20
    assert call(hv, new_domu(hv), XenVer.build_id, 0) == -errno.EPERM


@pytest.mark.parametrize("cmd", [XenVer.extraversion2, XenVer.capabilities2, XenVer.changeset2,
                                 XenVer.commandline2])  # fmt: skip
def test_varbuf_subops_from_4_20(cmd: XenVer) -> None:
    """e3bb1b6525 (4.20): sub-ops 11-14; before, -ENOSYS."""
    assert call(host("4.19"), 0, cmd, 0) == -errno.ENOSYS
    hv = host("4.20")
    d = new_domu(hv)
    caller = 0 if cmd == XenVer.commandline2 else d
    if cmd == XenVer.commandline2:
        assert call(hv, d, cmd, 0) == -errno.EPERM  # XSM_PRIV, checked first
    size = call(hv, caller, cmd, 0)
    assert size > 0
    put(hv, caller, (size - 1).to_bytes(4, "little"))
    assert call(hv, caller, cmd) == -errno.ENOBUFS
    put(hv, caller, size.to_bytes(4, "little") + b"\xee" * (size + 1))
    assert call(hv, caller, cmd) == size
    text = read(hv, caller, size + 1, BUF + 4)
    assert text.endswith(b"\xee") and b"\0" not in text[:size]  # no terminating NUL
    assert call(hv, caller, cmd, 1 << 40) == -errno.EFAULT
    if cmd == XenVer.commandline2:
        assert text[:size] == CMDLINE.encode()


@pytest.mark.parametrize("cmd", [XenVer.extraversion2, XenVer.capabilities2, XenVer.changeset2,
                                 XenVer.commandline2])  # fmt: skip
def test_hidden_xenver_varbuf_answers_as_4_19(cmd: XenVer) -> None:
    """The registry row xenver_varbuf (bit 4): hidden, sub-ops 11-14 are -ENOSYS at entry, before XSM, as on 4.19;
    build_id keeps its 4.20 behaviour (a difference ABI control does not hide: build_id_varbuf)."""
    hv = Hypervisor("4.20", memory_mb=1024, cmdline=CMDLINE)
    hidden = new_domu(hv, "hvm", "evtchn_fifo", "evtchn_upcall", "gnttab_v2", "vcpu_phys_area")
    assert call(hv, hidden, cmd, 0) == -errno.ENOSYS
    assert call(hv, hidden, XenVer.extraversion, 0) == 0


def test_the_command_line_is_what_xen_saved() -> None:
    """saved_cmdline is a 1024-byte xen_commandline_t filled by safe_strcpy: 1023 bytes at most, in both sub-ops."""
    hv = Hypervisor("4.22", memory_mb=1024, cmdline="x" * 5000)
    assert call(hv, 0, XenVer.commandline2, 0) == COMMANDLINE_LEN - 1
    assert call(hv, 0, XenVer.commandline) == 0
    assert read(hv, 0, COMMANDLINE_LEN) == b"x" * (COMMANDLINE_LEN - 1) + b"\0"


def test_varbuf_refuses_a_string_over_64_kib_before_anything_else() -> None:
    """xenver_varbuf_op's first check (e3bb1b6525): -E2BIG before the null-handle size request."""
    hv = host("4.20")
    dom0 = hv.domain(0)
    assert version._varbuf(b"x" * (VARBUF_MAX + 1), dom0, 0) == -errno.E2BIG
    assert version._varbuf(b"x" * VARBUF_MAX, dom0, 0) == VARBUF_MAX


def test_unknown_subops_and_the_raw_path() -> None:
    hv = host("4.22")
    d = new_domu(hv)
    assert call(hv, d, 15, 0) == -errno.ENOSYS and call(hv, d, -1, 0) == -errno.ENOSYS
    assert hv.hypercall_raw(d, HYPERVISOR_xen_version, XenVer.pagesize, bytes(8))[0] == 4096
    assert hv.hypercall_raw(d, HYPERVISOR_xen_version, XenVer.version, b"\0")[0] == -errno.EFAULT  # short argument


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["4.3", "4.7", "4.18", "4.20", "4.22"]), st.integers(-5, 20),
       st.integers(-(1 << 63), (1 << 64) - 1), st.binary(max_size=8))  # fmt: skip
def test_garbage_never_raises(release: str, cmd: int, addr: int, data: bytes) -> None:
    hv = host(release)
    d = new_domu(hv, memory_mb=1)
    put(hv, d, data)
    rc = hv.hypercall(d, HYPERVISOR_xen_version, cmd, XenVersionArg(addr))
    assert isinstance(rc, int)
    assert rc >= 0 or -rc in errno.ERRNO_NAMES
