"""hypfs (``spec/abi-control.md`` §7): Xen's order of checks, byte formats, and the per-domain abi-features tree."""

from __future__ import annotations

import pytest

from xenabi.abi import errno
from xenabi.abi.hypfs import (
    DIRENTRY_NAME_OFF,
    XEN_HYPFS_MAX_PATHLEN,
    HypfsDirentry,
    HypfsOp,
    HypfsOpArgs,
    HypfsType,
    dirlistentry_size,
    parse_dirlist,
)
from xenabi.abi.xen import HYPERVISOR_hypfs_op
from xenabi.hypervisor import Hypervisor

from ..conftest import new_domu

FIFO_LEAF = "/domain/{}/abi-features/evtchn_fifo"


def test_direntry_is_12_bytes_and_names_start_at_14() -> None:
    assert HypfsDirentry.size() == 12 and DIRENTRY_NAME_OFF == 14
    assert dirlistentry_size("major") == 14 + 8  # "major\0" rounded up to 4
    assert dirlistentry_size("abc") == 14 + 4


def test_get_version_answers_1_for_dom0(hv: Hypervisor) -> None:
    assert hv.hypfs.get_version(0) == 1


def test_every_guest_gets_eperm_first(hv: Hypervisor) -> None:
    domu = new_domu(hv)
    assert hv.hypfs.get_version(domu) == -errno.EPERM
    assert hv.hypfs.read(domu, "/buildinfo/version/major") == (-errno.EPERM, b"")
    assert hv.hypfs.write(domu, FIFO_LEAF.format(domu), b"\0") == -errno.EPERM
    # XSM comes before everything, even an unknown command or a bad path
    args = HypfsOpArgs(path_addr=1 << 40, path_len=5000)
    assert hv.hypercall(domu, HYPERVISOR_hypfs_op, 99, args) == -errno.EPERM


def test_old_release_without_control_has_no_hypfs() -> None:
    hv = Hypervisor("4.13", abi_control=False)
    assert hv.hypfs.get_version(0) == -errno.ENOSYS
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.get_version, HypfsOpArgs()) == -errno.ENOSYS
    assert Hypervisor("4.14", abi_control=False).hypfs.get_version(0) == 1
    assert Hypervisor("4.6", abi_control=True).hypfs.get_version(0) == 1


def test_read_uint_leaf_bytes(hv: Hypervisor) -> None:
    rc, data = hv.hypfs.read(0, "/buildinfo/version/minor")
    assert rc == 0
    head = HypfsDirentry.unpack(data)
    assert (head.type, head.encoding, head.pad, head.content_len, head.max_write_len) == (HypfsType.UINT, 0, 0, 4, 0)
    assert data[12:] == (14).to_bytes(4, "little")


def test_read_string_leaf_includes_its_nul(hv: Hypervisor) -> None:
    rc, data = hv.hypfs.read(0, "/buildinfo/version/extra")
    assert rc == 0 and HypfsDirentry.unpack(data).type == HypfsType.STRING and data[12:].endswith(b"\0")


def test_directory_listing_is_sorted_with_off_next(hv: Hypervisor) -> None:
    rc, data = hv.hypfs.read(0, "/buildinfo/version")
    assert rc == 0
    head = HypfsDirentry.unpack(data)
    contents = data[12:]
    assert head.type == HypfsType.DIR and head.content_len == len(contents)
    entries = parse_dirlist(contents)
    assert [name for name, _ in entries] == ["extra", "major", "minor"]
    # off_next of all but the last is the entry size; the last is 0
    assert int.from_bytes(contents[12:14], "little") == dirlistentry_size("extra")
    last = dirlistentry_size("extra") + dirlistentry_size("major")
    assert int.from_bytes(contents[last + 12 : last + 14], "little") == 0
    assert len(contents) == sum(dirlistentry_size(n) for n in ("extra", "major", "minor"))


def test_domain_directory_lists_domains_by_id(hv: Hypervisor) -> None:
    for _ in range(11):
        new_domu(hv, "pv")
    rc, data = hv.hypfs.read(0, "/domain")
    assert rc == 0
    assert [name for name, _ in parse_dirlist(data[12:])] == [str(i) for i in range(12)]


def test_small_buffer_enobufs_still_tells_the_size(hv: Hypervisor) -> None:
    rc, data = hv.hypfs.read(0, "/buildinfo/version/major", buf_len=12)
    assert rc == -errno.ENOBUFS and HypfsDirentry.unpack(data).content_len == 4
    assert hv.hypfs.read(0, "/buildinfo/version/major", buf_len=11) == (-errno.EINVAL, b"")


@pytest.mark.parametrize(
    ("path", "rc"),
    [
        ("buildinfo", -errno.ENOENT),  # must start with / (-EINVAL from 4.15: test_releases)
        ("", -errno.ENOENT),  # just the NUL: an empty path, likewise
        (b"", -errno.EINVAL),  # no bytes at all: the NUL check fails
        ("/nothing", -errno.ENOENT),
        ("/buildinfo/version/major/x", -errno.ENOENT),  # through a leaf: the walk's type test, never -ENOTDIR
        ("/buildinfo//version", -errno.ENOENT),
        (b"/buildinfo", -errno.EINVAL),  # no terminating NUL
        (b"/build\0info\0", -errno.EINVAL),  # a NUL before the last byte
        ("/" + "a" * XEN_HYPFS_MAX_PATHLEN, -errno.EINVAL),  # 1025 bytes with the NUL
    ],
)
def test_path_errors(hv: Hypervisor, path: str | bytes, rc: int) -> None:
    assert hv.hypfs.read(0, path)[0] == rc


def test_trailing_slash_names_the_directory(hv: Hypervisor) -> None:
    assert hv.hypfs.read(0, "/buildinfo/")[0] == 0


def test_write_read_only_leaf_is_eacces(hv: Hypervisor) -> None:
    assert hv.hypfs.write(0, "/buildinfo/version/major", b"\0\0\0\0") == -errno.EACCES
    assert hv.hypfs.write(0, "/buildinfo", b"") == -errno.EACCES


def test_bool_leaf_sizes(hv: Hypervisor) -> None:
    domu = new_domu(hv, start=False)
    assert hv.hypfs.write(0, FIFO_LEAF.format(domu), b"") == -errno.EDOM
    # 4.14.1 on (b4e41b1750): the bool writer decides; 4.14.0 checked the size first (-ENOSPC, test_releases)
    assert hv.hypfs.write(0, FIFO_LEAF.format(domu), b"\0\0") == -errno.EDOM


def test_feature_leaf_writable_until_first_unpause(hv: Hypervisor) -> None:
    domu = new_domu(hv, "hvm", "evtchn_upcall", start=False)
    d = hv.domain(domu)
    assert hv.hypfs.read(0, FIFO_LEAF.format(domu))[1][12:] == b"\0"
    assert hv.hypfs.write(0, FIFO_LEAF.format(domu), b"\1") == 0
    assert d.policy.features == {"evtchn_fifo", "evtchn_upcall"}
    assert hv.hypfs.read(0, FIFO_LEAF.format(domu))[1][12:] == b"\1"
    hv.unpause(domu)
    assert hv.hypfs.write(0, FIFO_LEAF.format(domu), b"\0") == -errno.EBUSY
    assert d.policy.features == {"evtchn_fifo", "evtchn_upcall"}
    hv.pause(domu)  # paused again, but creation has finished
    assert hv.hypfs.write(0, FIFO_LEAF.format(domu), b"\0") == -errno.EBUSY


def test_leaves_exist_only_where_the_feature_applies() -> None:
    hv = Hypervisor("4.5", abi_control=True)
    pv, hvm = new_domu(hv, "pv"), new_domu(hv, "hvm")
    for domid in (pv, hvm):
        rc, data = hv.hypfs.read(0, f"/domain/{domid}/abi-features")
        assert rc == 0 and [name for name, _ in parse_dirlist(data[12:])] == ["evtchn_fifo", "gnttab_v2"]  # no upcall
    hv14 = Hypervisor("4.14", abi_control=True)
    pv = new_domu(hv14, "pv")
    assert hv14.hypfs.read(0, f"/domain/{pv}/abi-features/evtchn_upcall")[0] == -errno.ENOENT


def test_uncontrolled_host_has_no_domain_tree() -> None:
    hv = Hypervisor("4.14", abi_control=False)
    assert hv.hypfs.read(0, "/domain")[0] == -errno.ENOENT


def test_unknown_command_after_path_checks(hv: Hypervisor) -> None:
    hv.domain(0).memory[0x1000 : 0x1000 + 11] = b"/buildinfo\0"
    ok_path = HypfsOpArgs(path_addr=0x1000, path_len=11)
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, 7, ok_path) == -errno.EOPNOTSUPP
    bad_path = HypfsOpArgs(path_addr=0x1000, path_len=10)  # no NUL
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, 7, bad_path) == -errno.EINVAL


def test_guest_memory_form_reads_into_the_buffer(hv: Hypervisor) -> None:
    mem = hv.domain(0).memory
    path = b"/buildinfo/version/major\0"
    mem[0x2000 : 0x2000 + len(path)] = path
    args = HypfsOpArgs(0x2000, len(path), 0x3000, 64)
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.read, args) == 0
    assert mem[0x3000 + 12 : 0x3000 + 16] == (4).to_bytes(4, "little")
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.read, HypfsOpArgs(0x2000, len(path), len(mem) - 4, 64)) == (
        -errno.EFAULT
    )
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.read, HypfsOpArgs(len(mem), 4, 0x3000, 64)) == -errno.EFAULT


def test_get_version_wants_null_arguments(hv: Hypervisor) -> None:
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.get_version, HypfsOpArgs()) == 1
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.get_version, HypfsOpArgs(buf_len=1)) == -errno.EINVAL


def test_guest_memory_write_sets_a_feature(hv: Hypervisor) -> None:
    domu = new_domu(hv, "pv", "evtchn_fifo", start=False)
    mem = hv.domain(0).memory
    path = FIFO_LEAF.format(domu).encode() + b"\0"
    mem[0x2000 : 0x2000 + len(path)] = path
    mem[0x3000] = 0
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.write_contents, HypfsOpArgs(0x2000, len(path), 0x3000, 1)) == 0
    assert hv.domain(domu).policy.features == frozenset()
    unreadable = HypfsOpArgs(0x2000, len(path), len(mem), 1)
    assert hv.hypercall(0, HYPERVISOR_hypfs_op, HypfsOp.write_contents, unreadable) == -errno.EFAULT


def test_no_leaf_for_a_feature_the_boot_options_hide() -> None:
    """gnttab=max-ver:1: no domain can have grant v2, so there is no leaf to turn it on (and no write can fail)."""
    hv = Hypervisor("4.14", abi_control=True, gnttab_max_version=1)
    domid = new_domu(hv, "hvm", start=False)
    assert hv.hypfs.read(0, f"/domain/{domid}/abi-features/gnttab_v2")[0] == -errno.ENOENT
    assert hv.hypfs.write(0, f"/domain/{domid}/abi-features/gnttab_v2", b"\1") == -errno.ENOENT
    assert hv.hypfs.write(0, f"/domain/{domid}/abi-features/evtchn_fifo", b"\0") == 0


def test_a_leaf_write_the_creation_checks_refuse_answers_einval_and_changes_nothing() -> None:
    """A 4.16 domain created with grant_opts' maximum version 1: turning grant v2 on through hypfs is what the
    create struct could not ask either (-EINVAL), and the hypercall never raises."""
    from xenabi.abi.domctl import CreateDomain

    hv = Hypervisor("4.16", abi_control=True)
    domid = hv.create_domain(CreateDomain.for_type("hvm", grant_opts=1))
    before = hv.domain(domid).policy
    assert hv.hypfs.write(0, f"/domain/{domid}/abi-features/gnttab_v2", b"\1") == -errno.EINVAL
    assert hv.domain(domid).policy == before
