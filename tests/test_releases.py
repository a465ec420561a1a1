"""Issue 12: Xen's release history as data. Every difference of the release table is tested at its boundary, with
the commit that made it; the table itself is checked release by release; names, bad names, and the property that
ABI control hides exactly the feature differences while ``releases diff`` lists every other one."""

from __future__ import annotations

import io
import json
import struct

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain, GuestType, XEN_DOMCTL_CDF_hap
from xenabi.abi.features import REGISTRY
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import (
    DOMID_SELF,
    HYPERVISOR_event_channel_op,
    HYPERVISOR_event_channel_op_compat,
    HYPERVISOR_hvm_op,
)
from xenabi.cli import main
from xenabi.cli.releases import diff_json
from xenabi.errors import NotModelled, PolicyError, StreamError
from xenabi.fleet.inventory import parse_release
from xenabi.guest.evtchn_fifo import PENDING, FifoGuest
from xenabi.hypervisor import Hypervisor, XenError
from xenabi.policy import AbiPolicy, legacy_policy
from xenabi.releases import (
    BEHAVIOUR_FIELDS,
    CHANGES,
    LINES,
    all_point_releases,
    changes_between,
    get_release,
)
from xenabi.toolstack.streams import libxc
from xenabi.toolstack.streams.reader import StreamReader

from .conftest import create_with, ev, features_flags, new_domu, port_of
from .toolstack.streamkit import libxc_body, libxl_body, xl_stream

BASE = 0x40000000


# --- names -------------------------------------------------------------------------------------------------------
def test_a_line_means_its_newest_point_release_and_a_point_release_is_exact() -> None:
    assert get_release("4.14").name == "4.14.6" and get_release("4.14.0").name == "4.14.0"
    assert get_release("4.22").name == "4.22.0" and get_release(" 4.3 ").name == "4.3.4"
    assert list(LINES) == [f"4.{minor}" for minor in range(3, 23)]
    assert "4.6.2" not in all_point_releases() and len(all_point_releases()) == sum(n + 1 for n in LINES.values()) - 1


@pytest.mark.parametrize("name", ["4.2", "4.23", "4.14.99", "four", "4.6.2", "", "4", "4.14.1.1", "5.0"])
def test_bad_release_names_are_clear_errors_everywhere(name: str) -> None:
    with pytest.raises(PolicyError) as refused:
        get_release(name)
    assert "4.3" in str(refused.value) and ("4.22" in str(refused.value) or "never released" in str(refused.value))
    with pytest.raises(PolicyError):
        Hypervisor(name)
    with pytest.raises(ValueError):
        parse_release(name)
    result = CliRunner().invoke(main, ["releases", "diff", "4.14", name])
    assert result.exit_code == 1 and result.output.startswith("error: ")


@pytest.mark.parametrize(("major", "minor"), [(4, 2), (4, 23), (5, 0)])
def test_a_stream_from_a_release_outside_the_table_is_refused_at_its_offset(major: int, minor: int) -> None:
    inner = libxc_body(xen=(major, minor))
    data = xl_stream(libxl_stream=libxl_body(inner))
    with pytest.raises(StreamError) as refused:
        StreamReader(io.BytesIO(data)).read()
    error = refused.value
    assert (error.layer, error.record) == ("libxc", "domain header")
    assert struct.unpack_from("<II", data, error.offset) == (major, minor)


# --- the table, release by release --------------------------------------------------------------------------------
def _before(tag: str) -> str | None:
    """The release just before ``tag`` in its own line, or for an x.y.0 the previous line's x.y.0 (whose later
    point releases may have the change as a backport)."""
    releases = all_point_releases()
    if not tag.endswith(".0"):
        return releases[releases.index(tag) - 1]
    lines = list(LINES)
    index = lines.index(tag.rsplit(".", 1)[0])
    return f"{lines[index - 1]}.0" if index else None


BOUNDARIES = [
    pytest.param(change, tag, id=f"{change.field}@{tag}:{change.commit.split()[0]}")
    for change in CHANGES
    for tag in (f"{change.since}.0", *change.backports)
]


@pytest.mark.parametrize(("change", "tag"), BOUNDARIES)
def test_each_change_takes_effect_exactly_at_its_release_and_backports(change, tag) -> None:
    """Releases x differences: the field has the change's value from its first release and each backport on,
    and the release just before each of those does not get it from this change."""
    assert getattr(get_release(tag), change.field) == change.value
    before = _before(tag)
    assert before is not None and not change.applies(get_release(before).point)
    for newer in all_point_releases()[all_point_releases().index(tag) :]:
        row = get_release(newer)
        if row.line == tag.rsplit(".", 1)[0] or row.version >= tuple(int(p) for p in change.since.split(".")):
            later = [c for c in CHANGES if c.field == change.field and c.applies(row.point) and c is not change]
            if not any(CHANGES.index(c) > CHANGES.index(change) for c in later):
                assert getattr(row, change.field) == change.value, newer


def test_every_field_has_a_commit_for_every_value_it_takes() -> None:
    for name in BEHAVIOUR_FIELDS:
        assert any(c.field == name for c in CHANGES), name
    for change in CHANGES:
        commit = change.commit.split()[0]
        assert len(commit) == 10 and int(commit, 16) >= 0, change


# --- each difference, observed through the model ------------------------------------------------------------------
def running(hv: Hypervisor, kind: str = "hvm", *features: str, **limits: int) -> int:
    return new_domu(hv, kind, *features, **limits)


def test_reset_cont_exists_from_xsa_344() -> None:
    """2785b2a9e0 (XSA-344): sub-op 14 and -EBUSY reach 4.14.1, 4.13.2 and 4.12.4; 4.14.0 answers -ENOSYS."""
    for name, rc in (("4.14.0", -errno.ENOSYS), ("4.13.1", -errno.ENOSYS), ("4.14.1", -errno.EBUSY),
                     ("4.12.4", -errno.EBUSY), ("4.22", -errno.EBUSY)):  # fmt: skip
        hv = Hypervisor(name)
        a = running(hv)
        assert ev(hv, a, "reset_cont", dom=DOMID_SELF)[0] == rc, name


def test_reset_of_another_domain_needs_it_paused_from_4_7() -> None:
    """546d558a7a: 4.6 resets a running domain for its controller; 4.7 refuses (-EINVAL)."""
    for name, rc in (("4.6", 0), ("4.7", -errno.EINVAL)):
        hv = Hypervisor(name)
        assert ev(hv, 0, "reset", dom=running(hv))[0] == rc, name


@pytest.mark.parametrize(
    ("name", "dom_is_self", "abi_after"),
    [("4.4", True, "fifo"), ("4.5", False, "fifo"), ("4.5", True, "2l"), ("4.6", False, "fifo"), ("4.7", False, "2l")],
)
def test_when_reset_leaves_fifo(name: str, dom_is_self: bool, abi_after: str) -> None:
    """400b3bd642 (4.5): only a literal DOMID_SELF; 546d558a7a (4.7): always; 4.4: never."""
    hv = Hypervisor(name)
    a = running(hv)
    assert FifoGuest(hv, a).init_control(0) == 0
    assert ev(hv, a, "reset", dom=DOMID_SELF if dom_is_self else a)[0] == 0
    assert hv.domain(a).evtchn_abi == abi_after


def test_unusable_ports_are_inert_from_xsa_343() -> None:
    """e045199c7c (XSA-343): set_priority on a free port is -EACCES (0 before); unmask of a Xen-bound port leaves it
    masked (cleared before)."""
    for name, priority_rc, unmasked in (("4.14.0", 0, True), ("4.14.1", -errno.EACCES, False)):
        hv = Hypervisor(name)
        a = running(hv)
        assert FifoGuest(hv, a).init_control(0) == 0
        assert ev(hv, a, "set_priority", port=200, priority=3)[0] in (priority_rc, -errno.EINVAL)
        assert ev(hv, a, "set_priority", port=5, priority=3)[0] == priority_rc, name
        b = running(hv)
        d = hv.domain(b)
        xen = hv.alloc_xen_event_channel(b, 0, 0, lambda *_: None)
        d.memory[d.shinfo_mask] |= 1 << xen
        assert ev(hv, b, "unmask", port=xen)[0] == 0
        assert (not d.port_ops.is_masked(d, xen)) is unmasked, name


def test_buckets_of_128_ports_until_4_6() -> None:
    """b58214a242 (4.6): struct evtchn padded to 64 bytes, so a bucket holds 64 ports, not 128."""
    for name, rc in (("4.5", 0), ("4.6", -errno.EINVAL)):
        hv = Hypervisor(name)
        a = running(hv)
        assert ev(hv, a, "status", dom=DOMID_SELF, port=100)[0] == rc, name


def test_32_bit_guests_two_level_limit() -> None:
    """fbbd5009e6 (4.4) latched 4096 at creation; 62bcdc4edb (XSA-342: 4.15, 4.14.1) follows the width again."""
    for name, limit in (("4.3", 1024), ("4.4", 4096), ("4.14.0", 4096), ("4.14.1", 1024), ("4.22", 1024)):
        hv = Hypervisor(name)
        d = hv.domain(running(hv))
        hv.set_guest_width(d.domid, 32)
        assert d.port_ops.max_evtchns(d) == limit, name


def test_virq_classes_per_release() -> None:
    """a8b551321e (4.6): VIRQ 13 per-vCPU; bb1accab69 (4.21): VIRQ 11 per-domain; eba922abdb (4.21): only dom0 may
    bind a global VIRQ (-EBUSY, after the vCPU check)."""
    for name, rc in (("4.5", -errno.EINVAL), ("4.6", 0)):
        hv = Hypervisor(name)
        assert ev(hv, running(hv, max_vcpus=2), "bind_virq", virq=13, vcpu=1)[0] == rc, name
    for name, console_rc, argo_rc in (("4.20", 0, 0), ("4.21", -errno.EBUSY, 0)):
        hv = Hypervisor(name)
        a = running(hv)
        assert ev(hv, a, "bind_virq", virq=2, vcpu=0)[0] == console_rc, name  # VIRQ_CONSOLE: global
        assert ev(hv, a, "bind_virq", virq=11, vcpu=0)[0] == argo_rc, name  # ARGO: global, then per-domain
        assert ev(hv, a, "bind_virq", virq=2, vcpu=7)[0] == -errno.EINVAL  # the global rule still comes first
        assert ev(hv, 0, "bind_virq", virq=2, vcpu=0)[0] == 0  # dom0, the handler


def test_status_of_a_xen_bound_port_refused_4_15_to_4_18() -> None:
    """f60ab5337f (4.15) then its revert 2d8d7481ca (4.19)."""
    for name, rc in (("4.14", 0), ("4.15", -errno.EACCES), ("4.18", -errno.EACCES), ("4.19", 0)):
        hv = Hypervisor(name)
        a = running(hv)
        xen = hv.alloc_xen_event_channel(a, 0, 0, lambda *_: None)
        assert ev(hv, a, "status", dom=DOMID_SELF, port=xen)[0] == rc, name


def test_compat_hypercall_16() -> None:
    """ab48596654 (4.10): hypercall 16 forwards sub-ops 0-9 only; HVM and PVH never had it (-ENOSYS)."""
    for name, rc in (("4.9", -errno.EINVAL), ("4.10", -errno.ENOSYS)):
        hv = Hypervisor(name)
        op = E.CompatEvtchnOp(cmd=E.EVTCHNOP_init_control, u=E.InitControl(control_gfn=0, offset=1).pack())
        assert hv.hypercall(0, HYPERVISOR_event_channel_op_compat, 0, op) == rc, name  # dom0 is PV
    hv = Hypervisor("4.14")
    op = E.CompatEvtchnOp(cmd=E.EVTCHNOP_alloc_unbound, u=E.AllocUnbound(dom=DOMID_SELF).pack().ljust(24, b"\0"))
    for kind in ("hvm", "pvh"):
        assert hv.hypercall(running(hv, kind), HYPERVISOR_event_channel_op_compat, 0, op) == -errno.ENOSYS


def test_fifo_event_without_a_control_block_from_4_17() -> None:
    """8aa0e9d2d1 (4.17): the event is dropped without setting PENDING (before, PENDING was set)."""
    for name, word in (("4.16", PENDING), ("4.17", 0)):
        hv = Hypervisor(name)
        a = running(hv, max_vcpus=2)
        guest = FifoGuest(hv, a)
        guest.init_control(0)
        ipi = port_of(hv, a, "bind_ipi", vcpu=1)
        guest.setup_port(ipi)
        guest.d.memory32[guest.word_index(ipi)] = 0
        ev(hv, a, "send", port=ipi)
        assert guest.word(ipi) == word, name


def test_upcall_vector_check_order_and_the_spurious_upcall() -> None:
    """5efaeaa823 (4.10): the type check before copy-in; 7b5b8ca7df (4.11; 4.10.1, 4.9.2, 4.8.3, 4.7.5): the vector
    is injected once as it is set."""
    for name, rc in (("4.9", -errno.EFAULT), ("4.10", -errno.EINVAL)):
        hv = Hypervisor(name, abi_control=False)
        assert hv.hypercall_raw(running(hv, "pv"), HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, b"")[0] == rc
    for name, upcalls in (("4.10.0", 0), ("4.10.1", 1), ("4.9.1", 0), ("4.9.2", 1), ("4.6", 0)):
        hv = Hypervisor(name, abi_control=False)
        a = running(hv)
        arg = EvtchnUpcallVector(vcpu=0, vector=0xF3)
        assert hv.hypercall(a, HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, arg) == 0
        assert hv.domain(a).vcpus[0].upcall_count == upcalls, name


def test_cpuid_leaves_per_release() -> None:
    """03d745c8bf (4.5) and c3d74acf55 (4.10): the highest leaf; dd9b092266 (4.6) vCPU id; 021e1b7c7a (4.11, 4.10.1)
    domid; 0f43883193 (4.8; 4.7.2, 4.6.5) PV reads zeros; e2d2b9fd7a (4.17) UPCALL_VECTOR, clear where hidden."""
    for name, top in (("4.4", 2), ("4.5", 4), ("4.9", 4), ("4.10", 5)):
        hv = Hypervisor(name, abi_control=False)
        assert hv.cpuid(running(hv), BASE)[0] == BASE + top, name
    for name, eax in (("4.5", 0x4), ("4.6", 0xC), ("4.10.0", 0xC), ("4.10.1", 0x1C), ("4.16", 0x1C), ("4.17", 0x5C)):
        hv = Hypervisor(name, abi_control=False)
        assert hv.cpuid(running(hv), BASE + 4)[0] == eax, name
    for name, eax in (("4.6.4", 0xC), ("4.6.5", 0), ("4.7.1", 0xC), ("4.7.2", 0), ("4.8", 0)):
        hv = Hypervisor(name, abi_control=False)
        assert hv.cpuid(running(hv, "pv"), BASE + 4)[0] == eax, name
    hv = Hypervisor("4.17")
    assert hv.cpuid(running(hv, "hvm", "evtchn_fifo"), BASE + 4)[0] == 0x1C  # upcall hidden: Xen's bit too
    assert hv.cpuid(running(hv, "pvh"), BASE + 4)[0] == 0x5C


def test_hypfs_codes_per_release() -> None:
    """f1b920bb06 (4.15): a bad path is -EINVAL (was -ENOENT); b4e41b1750 (4.15; 4.14.1): a 2-byte bool is -EDOM."""
    for name, rc in (("4.14", -errno.ENOENT), ("4.15", -errno.EINVAL)):
        hv = Hypervisor(name)
        assert hv.hypfs.read(0, "buildinfo")[0] == rc and hv.hypfs.read(0, "")[0] == rc, name
    for name, rc in (("4.14.0", -errno.ENOSPC), ("4.14.1", -errno.EDOM), ("4.22", -errno.EDOM)):
        hv = Hypervisor(name)
        domu = new_domu(hv, start=False)
        assert hv.hypfs.write(0, f"/domain/{domu}/abi-features/evtchn_fifo", b"\1\1") == rc, name
    assert Hypervisor("4.13", abi_control=False).hypfs.read(0, "/")[0] == -errno.ENOSYS  # no hypfs before 4.14


def test_create_flags_per_release() -> None:
    """The real flags: xs_domain bit 5 (5513bd0b46, 4.7) moved to 4 (33e5c32559, 4.9); iommu (c45f592923, 4.13)
    needs an IOMMU; vpmu (dbb948110a, 4.16) is never available on x86; hap without hvm (d0c0ba7d3d, 4.13)."""
    assert Hypervisor("4.8", abi_control=False).create_domain(CreateDomain.for_type("pv", features=1 << 5)) > 0
    with pytest.raises(XenError):
        Hypervisor("4.9", abi_control=False).create_domain(CreateDomain.for_type("pv", features=1 << 5))
    with pytest.raises(XenError, match="no IOMMU"):
        Hypervisor("4.13").create_domain(CreateDomain.for_type("hvm", features=1 << 5))
    with pytest.raises(XenError, match="vPMU"):
        Hypervisor("4.16").create_domain(CreateDomain.for_type("hvm", features=1 << 7))
    assert Hypervisor("4.12", abi_control=False).create_domain(CreateDomain(flags=XEN_DOMCTL_CDF_hap)) > 0
    with pytest.raises(XenError, match="hap requested without hvm"):
        Hypervisor("4.13", abi_control=False).create_domain(CreateDomain(flags=XEN_DOMCTL_CDF_hap))
    with pytest.raises(NotModelled):
        Hypervisor("4.4", abi_control=False).create_domain(CreateDomain.for_type("pv", features=1 << 4))
    with pytest.raises(NotModelled):
        Hypervisor("4.14").create_domain(CreateDomain.for_type("pv", max_vcpus=200))
    with pytest.raises(XenError, match="above 8192"):
        Hypervisor("4.14").create_domain(CreateDomain.for_type("pv", max_vcpus=9000))


def test_the_series_flags_move_off_the_bits_xen_took() -> None:
    """The review's objection made concrete: on 4.16 bit 7 is vpmu, on 4.21 bit 8 is trap_unmapped_accesses."""
    assert Hypervisor("4.15").feature_cdf_bits == {"evtchn_fifo": 7, "evtchn_upcall": 8}
    assert Hypervisor("4.16").feature_cdf_bits == {"evtchn_fifo": 9, "evtchn_upcall": 8}
    assert Hypervisor("4.21").feature_cdf_bits == {"evtchn_fifo": 9, "evtchn_upcall": 10}
    hv = Hypervisor("4.22")
    domid = hv.create_domain(CreateDomain.for_type("hvm", features=1 << 9 | 1 << 10))
    assert hv.domain(domid).policy.features == {"evtchn_fifo", "evtchn_upcall"}
    result = CliRunner().invoke(main, ["features", "--release", "4.22", "--json"])
    rows = json.loads(result.output)
    assert [(r["cdf_bit"], r["series_bit_taken_by"]) for r in rows] == [
        (9, "vpmu"), (10, "trap_unmapped_accesses"), (None, None), (None, None), (None, None)]  # fmt: skip


def test_grant_limit_caps_until_4_18() -> None:
    """b2ea81d2b9 (4.18): the command-line maxima became defaults, not caps."""
    with pytest.raises(XenError):
        Hypervisor("4.17").create_domain(CreateDomain.for_type("hvm", max_grant_frames=65))
    assert Hypervisor("4.18").create_domain(CreateDomain.for_type("hvm", max_grant_frames=65)) > 0


def test_busy_ports_skipped_from_4_7_and_its_backports() -> None:
    """78e24c269b (4.7; 4.6.1, 4.5.3, 4.4.4): a closed port whose word is still LINKED is not handed out again."""
    for name, reused in (("4.4.3", True), ("4.4.4", False), ("4.6.0", True), ("4.6.1", False), ("4.7", False)):
        hv = Hypervisor(name)
        a = running(hv)
        guest = FifoGuest(hv, a)
        assert guest.init_control(0) == 0
        gport = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=0)
        assert guest.setup_port(gport) == 0
        port0 = port_of(hv, 0, "bind_interdomain", remote_dom=a, remote_port=gport)
        assert guest.unmask(gport) == 0
        ev(hv, 0, "send", port=port0)
        assert ev(hv, a, "close", port=gport)[0] == 0
        assert (port_of(hv, a, "bind_ipi", vcpu=0) == gport) is reused, name


def test_pvh_keeps_its_upcall_vector_from_an_uncontrolled_host() -> None:
    """Decision 1 corrected: a PVH guest of an uncontrolled 4.14 arrives on a controlled 4.22 with the vector."""
    from xenabi.toolstack import DomainConfig, Toolstack

    src = Toolstack(Hypervisor("4.14", abi_control=False))
    domid = src.create(DomainConfig.from_xl('name = "p"\ntype = "pvh"\nmemory = 4\n'), start=True)
    assert "evtchn_upcall" in src.hv.domain(domid).policy.features
    dst = Toolstack(Hypervisor("4.22"))
    new = src.migrate(domid, dst)
    assert dst.hv.domain(new).policy.features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}


# --- the property: ABI control hides the feature differences, releases diff names all the rest ------------------------
GATED = sorted({gate for row in REGISTRY for gate in row.gates})
release_pairs = st.tuples(st.sampled_from(all_point_releases()), st.sampled_from(all_point_releases())).filter(
    lambda pair: get_release(pair[0]).point < get_release(pair[1]).point
)


@settings(max_examples=60, deadline=None)
@given(pair=release_pairs, kind=st.sampled_from(["hvm", "pvh", "pv"]))
def test_a_legacy_policy_on_a_newer_host_gets_enosys_from_exactly_what_it_lacks(pair, kind) -> None:
    a, b = (get_release(name) for name in pair)
    hv = Hypervisor(b.name)
    policy = legacy_policy(a).features & a.applicable_features(hv.domain(0).guest_type.__class__(kind))
    domid = new_domu(hv, kind, *sorted(policy)) if policy else _no_features(hv, kind)
    lacks = {gate for row in REGISTRY if row.name not in policy for gate in row.gates}
    for op, cmd in GATED:
        rc, _ = hv.hypercall_raw(domid, op, cmd, b"\xff" * 64)
        if (op, cmd) in lacks:
            assert rc == -errno.ENOSYS, (op, cmd)
        elif not _answers_enosys_anyway(hv, domid, op, cmd):
            assert rc != -errno.ENOSYS, (op, cmd)
    doc = diff_json(a, b)
    listed = {c["name"] for c in doc["changes"] if c["kind"] == "behaviour"}
    assert listed == {name for name in BEHAVIOUR_FIELDS if getattr(a, name) != getattr(b, name)}
    assert all(not c["hidden_by_abi_control"] for c in doc["changes"] if c["kind"] == "behaviour")
    hideable = {c["name"] for c in doc["changes"] if c["hidden_by_abi_control"]}
    assert hideable == b.features - a.features
    assert {c.field for c in changes_between(a, b)} == listed


def _no_features(hv: Hypervisor, kind: str) -> int:
    domid = hv.create_domain(CreateDomain.for_type(kind, features=features_flags()), memory_mb=8)
    hv.unpause(domid)
    return domid


def _answers_enosys_anyway(hv: Hypervisor, domid: int, op: int, cmd: int) -> bool:
    """An operation the domain has that may still answer -ENOSYS for these arguments: set_priority in 2-level mode,
    and expand_array before init_control on releases before a66765eb06 (4.8) - the release's own code, which is
    why the guest fingerprint judges a feature by whether any of its operations answers."""
    if (op, cmd) == (HYPERVISOR_event_channel_op, E.EVTCHNOP_set_priority):
        return True
    return (op, cmd) == (HYPERVISOR_event_channel_op, E.EVTCHNOP_expand_array) and (
        hv.release.expand_array_uninit_rc == -errno.ENOSYS
    )


def test_releases_cli_lists_and_diffs() -> None:
    result = CliRunner().invoke(main, ["releases", "--json"])
    rows = json.loads(result.output)
    assert [row["line"] for row in rows] == list(LINES) and rows[-1]["release"] == "4.22.0"
    assert rows[0]["cpuid_max_leaf"] == "0x40000002" and rows[0]["features"] == ["gnttab_v2"]
    result = CliRunner().invoke(main, ["releases", "--all"])
    assert result.exit_code == 0 and "4.14.1" in result.output and "reset_preemptible" in result.output
    one = json.loads(CliRunner().invoke(main, ["releases", "--release", "4.14.0", "--json"]).output)
    assert one["release"] == "4.14.0" and one["behaviour"]["reset_preemptible"] is False
    doc = json.loads(CliRunner().invoke(main, ["releases", "diff", "4.14.0", "4.14.1", "--json"]).output)
    names = {c["name"] for c in doc["changes"]}
    assert {"reset_preemptible", "unusable_ports_inert", "hypfs_bool_oversize_rc"} <= names
    doc = json.loads(CliRunner().invoke(main, ["releases", "diff", "4.5", "4.6", "--json"]).output)
    feature = next(c for c in doc["changes"] if c["name"] == "evtchn_upcall")
    assert feature["hidden_by_abi_control"] is True and feature["change"] == "appears"
    text = CliRunner().invoke(main, ["releases", "diff", "4.14.6", "4.14.6"]).output
    assert "nothing a guest can see changes" in text


def test_diff_4_17_to_4_19_names_what_control_hides_and_what_it_cannot() -> None:
    """Issue 18: vcpu_phys_area is hideable (4.18, its commits); the register_vcpu_info codes (295514ff75) and
    XENFEAT bit 20 (64b21662b1) are differences ABI control does not hide."""
    doc = json.loads(CliRunner().invoke(main, ["releases", "diff", "4.17", "4.19", "--json"]).output)
    by_name = {c["name"]: c for c in doc["changes"]}
    phys = by_name["vcpu_phys_area"]
    assert (phys["kind"], phys["hidden_by_abi_control"]) == ("feature", True) and "d5df44275e" in phys["commit"]
    for name, commit in (("vcpu_info_guest_area", "295514ff75"), ("xenfeat_dm_msix_all_writes", "64b21662b1")):
        assert by_name[name]["hidden_by_abi_control"] is False and by_name[name]["commit"].startswith(commit)


def test_admission_uses_the_full_table() -> None:
    assert AbiPolicy(frozenset({"evtchn_fifo", "gnttab_v2"})) == legacy_policy("4.4.0")
    from xenabi.policy import admission

    assert admission(legacy_policy("4.5"), "4.22", False, "hvm")  # 4.22 without control would expose the vector
    assert not admission(legacy_policy("4.5"), "4.22", True, "hvm")
    assert libxc.DOMAIN_HEADER.size == 16


# --- the property for the issue-18 features: get_features, set_version(2), ops 14/15 -----------------------------
XENFEAT_FIELDS = {  # XENVER_get_features bits whose presence is a release-table field (not hideable)
    10: "xenfeat_pirqs_need_emulation", 13: "xenfeat_vnode", 16: "xenfeat_direct_mapped",
    17: "xenfeat_direct_mapped", 20: "xenfeat_dm_msix_all_writes",
}  # fmt: skip
ARG, AREA = 0x10000, 0x11000


def _answers(hv: Hypervisor, domid: int) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """(XENFEAT submap 0, set_version(2) and what it wrote back, ops 14 and 15 on a valid area)."""
    from xenabi.abi.gnttab import GnttabOp
    from xenabi.abi.version import XenVer
    from xenabi.abi.xen import HYPERVISOR_grant_table_op, HYPERVISOR_vcpu_op, HYPERVISOR_xen_version

    memory = hv.domain(domid).memory
    memory[ARG : ARG + 8] = bytes(8)
    assert hv.hypercall_raw(domid, HYPERVISOR_xen_version, XenVer.get_features, ARG.to_bytes(8, "little"))[0] == 0
    submap = int.from_bytes(memory[ARG + 4 : ARG + 8], "little")
    memory[ARG : ARG + 4] = (2).to_bytes(4, "little")
    rc = hv.hypercall_raw(domid, HYPERVISOR_grant_table_op, GnttabOp.set_version, ARG.to_bytes(8, "little"))[0]
    version = (rc, int.from_bytes(memory[ARG : ARG + 4], "little"))
    memory[ARG : ARG + 8] = AREA.to_bytes(8, "little")
    ops = tuple(hv.hypercall_raw(domid, HYPERVISOR_vcpu_op, cmd, ARG.to_bytes(8, "little"))[0] for cmd in (14, 15))
    return submap, version, ops  # type: ignore[return-value]


@settings(max_examples=40, deadline=None)
@given(pair=release_pairs, kind=st.sampled_from(["hvm", "pvh", "pv"]))
def test_a_legacy_policy_on_a_newer_host_answers_as_its_release_where_control_can_hide(pair, kind) -> None:
    """For releases A < B: a domain on a controlled B with A's legacy policy gets A's answers from set_version(2)
    and ops 14/15, and A's XENFEAT bits except those `releases diff A B` lists as not hideable."""
    a, b = (get_release(name) for name in pair)
    on_a = Hypervisor(a.name, abi_control=False, memory_mb=256)
    on_b = Hypervisor(b.name, abi_control=True, memory_mb=256)
    policy = sorted(legacy_policy(a).features & a.applicable_features(GuestType(kind)))
    old, new = _answers(on_a, new_domu(on_a, kind)), _answers(on_b, _with_exactly(on_b, kind, policy))
    assert new[1:] == old[1:]
    listed = {c["name"] for c in diff_json(a, b)["changes"] if not c["hidden_by_abi_control"]}
    for bit in range(32):
        if (old[0] ^ new[0]) >> bit & 1:
            assert XENFEAT_FIELDS.get(bit) in listed, bit  # 18 and 19 never differ: the row hides them


def _with_exactly(hv: Hypervisor, kind: str, features: list[str]) -> int:
    domid = hv.create_domain(create_with(hv, kind, features), memory_mb=8)
    hv.unpause(domid)
    return domid
