"""Issue 21: the hypercall trace (``hv.start_trace``, ``xenabi demo --trace``), free when off."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.gnttab import GnttabOp, SetVersion
from xenabi.abi.vcpu import RegisterVcpuInfo, VcpuOp, VcpuOpArg
from xenabi.abi.xen import (
    HYPERVISOR_event_channel_op,
    HYPERVISOR_grant_table_op,
    HYPERVISOR_vcpu_op,
)
from xenabi.cli import main
from xenabi.errors import GuestNotRunning
from xenabi.guest.linux import LinuxKernel
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.trace import HypercallTrace
from xenabi.toolstack import DomainConfig, Toolstack

from ..conftest import new_domu

EC = HYPERVISOR_event_channel_op


def host(release: str = "4.14") -> tuple[Hypervisor, int]:
    hv = Hypervisor(release, abi_control=True, memory_mb=1024)
    return hv, new_domu(hv)  # every feature that applies


def test_off_by_default_and_the_class_method_answers() -> None:
    """Free when off: an untraced host has no wrapper in front of the dispatch floor."""
    hv, domid = host()
    assert hv.trace is None and "hypercall" not in vars(type(hv)).get("__slots__", ())
    assert hv.hypercall.__func__ is Hypervisor.hypercall  # type: ignore[attr-defined]
    trace = hv.start_trace()
    assert hv.hypercall(domid, EC, 99, E.Send(1)) == -38 and len(trace.records) == 1
    assert hv.stop_trace() is trace and hv.trace is None
    assert hv.hypercall.__func__ is Hypervisor.hypercall  # type: ignore[attr-defined]
    hv.hypercall(domid, EC, 99, E.Send(1))
    assert len(trace.records) == 1  # nothing recorded once stopped


def test_a_record_names_the_call_its_arguments_answer_and_out_fields() -> None:
    hv, domid = host()
    hv.advance_clock(1234)
    trace = hv.start_trace()
    unbound = E.AllocUnbound(dom=domid, remote_dom=0)
    assert hv.hypercall(domid, EC, E.EVTCHNOP_alloc_unbound, unbound, vcpu=0) == 0
    hv.hypercall(domid, EC, E.EVTCHNOP_init_control, E.InitControl(control_gfn=1 << 40, offset=0, vcpu=0))
    first, second = trace.records
    assert first == {"ns": 1234, "dom": domid, "vcpu": 0, "op": "event_channel_op", "cmd": "alloc_unbound",
                     "args": {"dom": domid, "remote_dom": 0, "port": 0}, "rc": 0,
                     "out": {"port": unbound.port}}  # fmt: skip
    assert second["cmd"] == "init_control" and second["rc"] < 0 and second["errno"] == "EINVAL" and "out" not in second
    assert trace.calls(domid) == [("event_channel_op", "alloc_unbound", 0), ("event_channel_op", "init_control", -22)]


def test_raw_calls_and_structs_in_guest_memory_are_decoded() -> None:
    """A raw call's bytes are decoded with the sub-op's struct; a vcpu_op or grant_table_op argument that lives in
    guest memory is shown as that struct, not as its address; count and vcpuid are recorded."""
    hv, domid = host()
    trace = hv.start_trace()
    memory = hv.domain(domid).memory
    memory[0x3000:0x3010] = RegisterVcpuInfo(mfn=0x10, offset=64).pack()
    hv.hypercall(domid, HYPERVISOR_vcpu_op, VcpuOp.register_vcpu_info, VcpuOpArg(0x3000), vcpuid=0)
    memory[0x4000:0x4004] = SetVersion(version=2).pack()
    rc, _ = hv.hypercall_raw(domid, HYPERVISOR_grant_table_op, GnttabOp.set_version, (0x4000).to_bytes(8, "little"))
    hv.hypercall_raw(domid, EC, E.EVTCHNOP_send, b"\x01")  # too short for struct evtchn_send: shown as hex
    vcpu, gnttab, short = trace.records
    assert vcpu["cmd"] == "register_vcpu_info" and vcpu["vcpuid"] == 0
    assert vcpu["args"] == {"addr": 0x3000, "in_memory": {"mfn": 0x10, "offset": 64, "rsvd": 0}}
    assert gnttab["cmd"] == "set_version" and gnttab["count"] == 1 and gnttab["rc"] == rc == 0
    assert gnttab["args"]["in_memory"] == {"version": 2} and gnttab["out"] == {"version": 2}
    assert short["args"] == {"hex": "01"} and short["errno"] == "EFAULT"


def test_a_call_that_raises_is_recorded_and_raised_on() -> None:
    hv = Hypervisor("4.14", abi_control=True, memory_mb=1024)
    never_ran = hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=8)
    trace = hv.start_trace()
    with pytest.raises(GuestNotRunning):
        hv.hypercall(never_ran, EC, E.EVTCHNOP_send, E.Send(1))
    assert trace.records[0]["raised"] == "GuestNotRunning" and "rc" not in trace.records[0]
    assert trace.calls() == [("event_channel_op", "send", "GuestNotRunning")]


def test_limit_counts_what_it_drops_and_a_stream_keeps_nothing() -> None:
    hv, domid = host()
    kept = hv.start_trace(HypercallTrace(limit=2))
    for _ in range(5):
        hv.hypercall(domid, EC, 99, E.Send(1))
    assert len(kept.records) == 2 and kept.dropped == 3
    out = io.StringIO()
    streamed = hv.start_trace(HypercallTrace(out=out, label={"host": "a"}))
    hv.hypercall(domid, EC, 99, E.Send(1))
    assert streamed.records == [] and json.loads(out.getvalue())["host"] == "a"
    assert kept.jsonl().count("\n") == 2


def test_the_trace_shows_a_linux_boot() -> None:
    """The guest model's boot as hypercalls (Linux's xen_init_IRQ and friends; the sequence issue 21 refines):
    XENVER_get_features first, the vCPU areas, init_control on every vCPU, the upcall vector on every vCPU (a 6.1
    kernel on 4.17, whose CPUID leaf 4 offers it)."""
    hv = Hypervisor("4.17", abi_control=True, memory_mb=1024)
    ts = Toolstack(hv)
    domid = ts.create(DomainConfig.from_xl('name = "v"\ntype = "hvm"\nmemory = 16\nvcpus = 2\n'), start=True)
    trace = hv.start_trace()
    LinuxKernel.boot(hv, domid, kernel="6.1")
    calls = [(op, cmd) for op, cmd, rc in trace.calls(domid) if rc == 0]
    assert calls[0] == ("xen_version", "get_features")
    assert calls.count(("event_channel_op", "init_control")) == 2
    assert calls.count(("hvm_op", "set_evtchn_upcall_vector")) == 2
    assert calls.index(("vcpu_op", "register_runstate_memory_area")) < calls.index(("event_channel_op",
                                                                                    "init_control"))  # fmt: skip


def test_demo_writes_every_hosts_trace_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    result = CliRunner().invoke(main, ["demo", "--scenario", "migrate-down", "--rounds", "2", "--trace", str(path),
                                       "--kernel", "5.10", "--kernel", "6.1"])  # fmt: skip
    assert result.exit_code == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {(r["scenario"], r["run"], r["kernel"]) for r in records} == {
        ("migrate-down", run, kernel) for run in ("uncontrolled", "controlled") for kernel in ("5.10", "6.1")}
    assert {r["host"] for r in records} >= {"4.14", "4.14+control"}
    # the uncontrolled run's crash is there: init_control on 4.3 answering -ENOSYS after the migration
    assert any(r["host"] == "4.3" and r["cmd"] == "init_control" and r.get("errno") == "ENOSYS" for r in records)


def test_a_host_traced_from_boot_as_design_md_writes_it() -> None:
    """``DESIGN.md``'s contract: ``Hypervisor(release="4.22", trace=True); hv.trace``."""
    hv = Hypervisor(release="4.22", trace=True)
    assert hv.trace is not None and hv.trace.records == []
    domid = new_domu(hv, "hvm")
    assert hv.hypercall(domid, HYPERVISOR_event_channel_op, 99, None) == -errno.ENOSYS
    assert hv.trace.calls(domid) == [("event_channel_op", "99", -errno.ENOSYS)]
    untraced = Hypervisor(release="4.22")
    assert untraced.trace is None and "hypercall" not in vars(untraced)
