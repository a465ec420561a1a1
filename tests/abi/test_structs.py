"""spec/evtchn.md §1: sub-op numbers and argument struct sizes in C layout; §3.3 VIRQ classes; §0 errno values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CDF_BITS, CreateDomain, GuestType
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import NR_VIRQS, VIRQS, VirqClass

# §1 table: the C sizes of each argument struct
SIZES = {
    "bind_interdomain": 12,
    "bind_virq": 12,
    "bind_pirq": 12,
    "close": 4,
    "send": 4,
    "status": 24,
    "alloc_unbound": 8,
    "bind_ipi": 8,
    "bind_vcpu": 8,
    "unmask": 4,
    "reset": 2,
    "init_control": 24,
    "expand_array": 8,
    "set_priority": 8,
    "reset_cont": 2,
}


@pytest.mark.parametrize(("name", "size"), SIZES.items())
def test_section1_struct_sizes(name: str, size: int) -> None:
    assert E.ARG_STRUCTS[E.EvtchnOp[name]].size() == size


def test_section1_subop_numbers() -> None:
    assert [op.name for op in sorted(E.EvtchnOp)] == list(SIZES)
    assert [int(op) for op in sorted(E.EvtchnOp)] == list(range(15))


def test_section1_compat_evtchn_op_is_28_bytes_and_carries_subops_0_to_9() -> None:
    assert E.CompatEvtchnOp.size() == 28
    assert set(range(10)) == E.COMPAT_SUBOPS
    assert max(E.ARG_STRUCTS[c].size() for c in E.COMPAT_SUBOPS) == E.COMPAT_UNION_SIZE


def test_section1_field_offsets_match_c_layout() -> None:
    raw = E.BindInterdomain(remote_dom=0x1234, remote_port=0x55667788, local_port=9).pack()
    assert raw[0:2] == b"\x34\x12" and raw[4:8] == (0x55667788).to_bytes(4, "little")
    raw = E.InitControl(control_gfn=0x1122334455, offset=8, vcpu=3, link_bits=17).pack()
    assert raw[0:8] == (0x1122334455).to_bytes(8, "little") and raw[8:12] == b"\x08\0\0\0" and raw[16] == 17
    status = E.Status(u=bytes([1, 0, 0, 0, 7, 0, 0, 0]))
    assert (status.interdomain_dom, status.interdomain_port, status.virq) == (1, 7, 1)


@pytest.mark.parametrize("cmd", list(E.EvtchnOp))
@given(data=st.data())
def test_pack_unpack_round_trip_keeps_every_byte(cmd: E.EvtchnOp, data: st.DataObject) -> None:
    struct = E.ARG_STRUCTS[cmd]
    raw = data.draw(st.binary(min_size=struct.size(), max_size=struct.size()))
    assert struct.unpack(raw).pack() == raw


def test_upcall_vector_struct() -> None:
    assert HVMOP_set_evtchn_upcall_vector == 23
    assert EvtchnUpcallVector.size() == 8


def test_section3_3_virq_classes() -> None:
    assert len(VIRQS) == NR_VIRQS == 24
    per_vcpu = {v.number for v in VIRQS if v.kind is VirqClass.PER_VCPU}
    per_domain = {v.number for v in VIRQS if v.kind is VirqClass.PER_DOMAIN}
    assert per_vcpu == {0, 1, 7, 13}
    assert per_domain == {11}
    assert all(v.kind is VirqClass.GLOBAL for v in VIRQS if v.number in {5, 14, 15, *range(16, 24)})
    assert [v.number for v in VIRQS] == list(range(24))


def test_section0_errno_values() -> None:
    expected = dict(EPERM=1, ENOENT=2, ESRCH=3, EAGAIN=11, ENOMEM=12, EACCES=13, EFAULT=14, EBUSY=16, EEXIST=17)
    expected |= dict(EINVAL=22, ENOSPC=28, ENOSYS=38, EOPNOTSUPP=95)
    for name, value in expected.items():
        assert getattr(errno, name) == value
    assert errno.errno_name(-38) == "-ENOSYS" and errno.errno_name(0) == "0"


def test_cdf_flags_as_of_4_14_plus_v5() -> None:
    assert CDF_BITS == {
        "hvm": 0,
        "hap": 1,
        "s3_integrity": 2,
        "oos_off": 3,
        "xs_domain": 4,
        "iommu": 5,
        "nested_virt": 6,
        "evtchn_fifo": 7,
        "evtchn_upcall": 8,
    }


@pytest.mark.parametrize("kind", list(GuestType))
def test_create_domain_for_type_round_trips_guest_type(kind: GuestType) -> None:
    assert CreateDomain.for_type(kind).guest_type is kind


def test_create_domain_defaults_follow_libxl() -> None:
    config = CreateDomain()
    assert (config.max_evtchn_port, config.max_grant_frames, config.max_maptrack_frames) == (1023, -1, -1)


def test_section5_1_fifo_constants() -> None:
    assert (E.EVTCHN_FIFO_PRIORITY_MAX, E.EVTCHN_FIFO_PRIORITY_DEFAULT, E.EVTCHN_FIFO_PRIORITY_MIN) == (0, 7, 15)
    assert E.EVTCHN_FIFO_MAX_QUEUES == 16
    assert (E.EVTCHN_FIFO_PENDING, E.EVTCHN_FIFO_MASKED, E.EVTCHN_FIFO_LINKED, E.EVTCHN_FIFO_BUSY) == (31, 30, 29, 28)
    assert (E.EVTCHN_FIFO_LINK_BITS, E.EVTCHN_FIFO_LINK_MASK, E.EVTCHN_FIFO_NR_CHANNELS) == (17, 0x1FFFF, 131072)
    assert (E.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, E.EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES) == (1024, 128)
    assert (E.CONTROL_BLOCK_READY, E.CONTROL_BLOCK_HEAD, E.CONTROL_BLOCK_SIZE) == (0, 8, 72)
