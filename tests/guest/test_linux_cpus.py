"""Linux's per-CPU set-up against Xen, by kernel version: vcpu_info placement, the callback, the periodic timer, and
what ``xen_hvm_post_suspend``, ``xen_vcpu_restore`` and ``xen_timer_resume`` redo (``spec/linux-guests.md`` §1, §2,
§4; arch/x86/xen/enlighten.c, enlighten_hvm.c, suspend_hvm.c, smp_hvm.c, time.c). Each test names its function."""

from __future__ import annotations

import io

import pytest

from xenabi.abi import errno
from xenabi.abi.hvm import HVM_PARAM_CALLBACK_IRQ, hvm_callback_vector
from xenabi.abi.vcpu import VcpuOp
from xenabi.abi.xen import HYPERVISOR_vcpu_op
from xenabi.errors import KernelNotRunning
from xenabi.guest.backends import Backend
from xenabi.guest.linux import LinuxKernel
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.trace import HypercallTrace
from xenabi.toolstack import DomainConfig, Toolstack


class Refusing(Hypervisor):
    """A host that answers one vcpu_op sub-op for one vCPU with an errno."""

    refuse: tuple[int, int, int] = (-1, 0, 0)  # (cmd, vcpuid, rc)

    def hypercall_raw(self, caller: int, op: int, cmd: int, data: bytes, **registers: int) -> tuple[int, bytes]:  # type: ignore[override]
        what, vcpu, rc = self.refuse
        if op == HYPERVISOR_vcpu_op and cmd == what and registers.get("vcpuid", 0) == vcpu:
            return rc, bytes(data)
        return super().hypercall_raw(caller, op, cmd, data, **registers)


def host(release: str = "4.17", refuse: tuple[int, int, int] = (-1, 0, 0)) -> Toolstack:
    hv = Refusing(release, abi_control=True)
    hv.refuse = refuse
    return Toolstack(hv)


def vm(ts: Toolstack) -> int:
    return ts.create(DomainConfig.from_xl('name = "k"\ntype = "hvm"\nmemory = 8\nvcpus = 2\n'), start=True)


def traced(ts: Toolstack, kernel: str) -> tuple[LinuxKernel, HypercallTrace]:
    domid = vm(ts)
    trace = ts.hv.start_trace()
    return LinuxKernel.boot(ts.hv, domid, kernel=kernel), trace


def steps(trace: HypercallTrace, domid: int) -> list[tuple[str, int | None]]:
    return [(r["cmd"], r.get("vcpuid", r["args"].get("vcpu"))) for r in trace.records if r["dom"] == domid]


def traffic(ts: Toolstack, kernel: LinuxKernel) -> tuple[int, int]:
    backends = [Backend.connect(ts.hv, name, kernel.domid, port) for name, port in kernel.channels().items()]
    sent = sum(b.notify() for b in backends) + sum(kernel.send_ipi(v) for v in range(2))
    before = sum(kernel.state.handled.values())
    for vcpu in range(2):
        kernel.run(vcpu)
    for b in backends:
        b.close()
    return sent, sum(kernel.state.handled.values()) - before


def restore(src: Toolstack, kernel: LinuxKernel, dst: Toolstack, *,
            up: tuple[int, ...] = ()) -> tuple[LinuxKernel, HypercallTrace]:  # fmt: skip
    """Save, restore and resume, tracing the resume. ``up``: vCPUs the restore brings back up in Xen, as a stream's
    CPU records would (the model's streams carry none)."""
    kernel.suspend()
    data = io.BytesIO()
    src.save(kernel.domid, data)
    data.seek(0)
    domid = dst.restore(data)
    for vcpu in up:
        dst.hv.vcpu_up(domid, vcpu)
    trace = dst.hv.start_trace()
    resumed = LinuxKernel.attach(dst.hv, domid)
    resumed.resume()
    return resumed, trace


# --- vcpu_info --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["5.10", "6.1"])
def test_xen_vcpu_setup_places_every_cpus_vcpu_info_where_the_kernel_reads_it(kernel: str) -> None:
    """``xen_hvm_smp_prepare_boot_cpu`` places the boot CPU's vcpu_info before ``xen_init_IRQ``;
    ``xen_cpu_up_prepare_hvm`` places a secondary CPU's first of all. Xen and the kernel then agree where it is."""
    ts = host()
    booted, trace = traced(ts, kernel)
    order = steps(trace, booted.domid)
    assert order.index(("register_vcpu_info", 0)) < order.index(("init_control", 0))
    assert order.index(("register_vcpu_info", 1)) < order.index(("bind_virq", 1))
    d = ts.hv.domain(booted.domid)
    assert booted.state.vcpu_info == [v.info_offset for v in d.vcpus]
    assert all(info // 4096 in booted.state.vcpu_info_gfns for info in booted.state.vcpu_info)
    sent, handled = traffic(ts, booted)
    assert sent == handled > 0


def test_5_10_xen_vcpu_setup_refused_falls_back_to_shared_info_slots() -> None:
    """5.10: a refused VCPUOP_register_vcpu_info clears ``xen_have_vcpu_info_placement``; the CPU uses its slot in
    shared_info, later CPUs do not try, and events still arrive (Xen writes the slot too)."""
    ts = host(refuse=(VcpuOp.register_vcpu_info, 0, -errno.EINVAL))
    booted, trace = traced(ts, "5.10")
    assert booted.running and not booted.state.vcpu_info_placement
    tries = [(r["vcpuid"], r["rc"]) for r in trace.records if r["cmd"] == "register_vcpu_info"]
    assert tries == [(0, -errno.EINVAL)]  # CPU 1 never tries
    assert booted.state.vcpu_info == [v.info_offset for v in ts.hv.domain(booted.domid).vcpus]
    assert ["VCPUOP_register_vcpu_info", "-EINVAL", "no vcpu_info placement: shared_info slots from now on"] in (
        booted.state.errors)
    sent, handled = traffic(ts, booted)
    assert sent == handled > 0


def test_6_x_xen_vcpu_setup_refused_panics() -> None:
    """5.16 removed ``xen_have_vcpu_info_placement``: 6.x panics when Xen refuses a CPU's vcpu_info."""
    ts = host(refuse=(VcpuOp.register_vcpu_info, 1, -errno.EINVAL))
    booted = LinuxKernel.boot(ts.hv, vm(ts), kernel="6.1")
    assert booted.state.phase == "crashed" and booted.state.crash == "panic: register_vcpu_info failed: cpu=1 err=-22"


# --- the callback -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "kernel", "value"), [
    ("4.17", "5.10", hvm_callback_vector(0xF3)),  # xen_setup_callback_vector
    ("4.14", "6.1", hvm_callback_vector(0xF3)),  # no CPUID leaf 4 bit 6 before 4.17: the domain-wide vector
    ("4.17", "6.1", 1),  # per-vCPU vectors, and "trick toolstack to think we are enlightened"
])  # fmt: skip
def test_xen_init_irq_sets_hvm_param_callback_irq(release: str, kernel: str, value: int) -> None:
    ts = host(release)
    booted = LinuxKernel.boot(ts.hv, vm(ts), kernel=kernel)
    assert ts.hv.domain(booted.domid).hvm_params[HVM_PARAM_CALLBACK_IRQ] == value
    assert booted.state.vector_callback


# --- the periodic timer ----------------------------------------------------------------------------------------------
def test_xen_time_init_stops_the_periodic_tick_on_every_cpu() -> None:
    """``xen_time_init`` on the boot CPU, then each CPU's clockevent as it comes up."""
    ts = host()
    booted, trace = traced(ts, "5.10")
    stops = [vcpu for cmd, vcpu in steps(trace, booted.domid) if cmd == "stop_periodic_timer"]
    assert stops == [0, 1] and booted.state.vcpuop_timer


def test_xen_time_init_refused_keeps_the_old_clockevent_and_resume_never_stops_it() -> None:
    ts = host(refuse=(VcpuOp.stop_periodic_timer, 0, -errno.EINVAL))
    booted = LinuxKernel.boot(ts.hv, vm(ts))
    assert booted.running and not booted.state.vcpuop_timer
    resumed, trace = restore(ts, booted, host())
    assert resumed.running and "stop_periodic_timer" not in [cmd for cmd, _v in steps(trace, resumed.domid)]


def test_xen_timer_resume_bugs_when_a_cpus_tick_cannot_be_stopped() -> None:
    src = host()
    booted = LinuxKernel.boot(src.hv, vm(src))
    resumed, _trace = restore(src, booted, host(refuse=(VcpuOp.stop_periodic_timer, 1, -errno.EINVAL)))
    assert resumed.state.phase == "crashed"
    assert resumed.state.crash == "BUG: VCPUOP_stop_periodic_timer failed for vCPU 1 (-EINVAL)"


# --- resume -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "is_up"), [("4.6", -errno.ENOSYS), ("4.17", 0)])
def test_xen_vcpu_restore_asks_is_up_then_places_vcpu_info_again(release: str, is_up: int) -> None:
    """``xen_vcpu_restore``: VCPUOP_is_up per CPU (an HVM guest gets -ENOSYS before 4.7, which reads as down), then
    the vcpu_info again from the shared_info slot; a CPU that is down is neither taken down nor brought up. In the
    model a secondary vCPU is down in Xen after a restore (the stream carries no CPU records)."""
    src = host("4.6")
    booted = LinuxKernel.boot(src.hv, vm(src))
    resumed, trace = restore(src, booted, host(release))
    calls = [(r["cmd"], r["vcpuid"], r["rc"]) for r in trace.records if r["op"] == "vcpu_op"]
    restore_calls = [c for c in calls if c[0] in ("is_up", "down", "up", "register_vcpu_info")]
    assert restore_calls == [("is_up", 0, 1 if is_up == 0 else is_up), ("register_vcpu_info", 0, 0),
                             ("is_up", 1, is_up), ("register_vcpu_info", 1, 0)]  # fmt: skip
    assert resumed.running
    assert resumed.state.vcpu_info == [v.info_offset for v in resumed.hv.domain(resumed.domid).vcpus]


@pytest.mark.parametrize("kernel", ["5.10", "6.1"])
def test_xen_hvm_post_suspend_sets_the_callback_again(kernel: str) -> None:
    src = host()
    booted = LinuxKernel.boot(src.hv, vm(src), kernel=kernel)
    resumed, trace = restore(src, booted, host())
    cmds = [cmd for cmd, _v in steps(trace, resumed.domid)]
    if kernel == "6.1":
        assert cmds.count("set_evtchn_upcall_vector") == 2
    assert "set_param" in cmds and cmds.index("set_param") < cmds.index("init_control")
    value = 1 if kernel == "6.1" else hvm_callback_vector(0xF3)
    assert resumed.hv.domain(resumed.domid).hvm_params[HVM_PARAM_CALLBACK_IRQ] == value


def test_a_cancelled_suspend_sets_the_callback_again_but_keeps_its_ports() -> None:
    """``xen_suspend`` cancelled: ``xen_hvm_post_suspend(1)`` and ``gnttab_resume`` but no ``xen_irq_resume``."""
    ts = host()
    booted = LinuxKernel.boot(ts.hv, vm(ts), kernel="6.1")
    ports = dict(booted.state.bindings)
    booted.suspend()
    trace = ts.hv.start_trace()
    booted.cancel_suspend()
    cmds = [cmd for cmd, _v in steps(trace, booted.domid)]
    assert cmds == ["set_evtchn_upcall_vector", "set_param", "set_evtchn_upcall_vector", "set_version"]
    assert booted.running and booted.state.bindings == ports
    assert LinuxKernel.attach(ts.hv, booted.domid).state == booted.state
    sent, handled = traffic(ts, booted)
    assert sent == handled > 0
    with pytest.raises(KernelNotRunning, match="running, not suspended"):
        booted.cancel_suspend()


def test_xen_irq_resume_rebinds_without_the_timers_priority() -> None:
    """``xen_irq_resume`` binds each CPU's VIRQs (in VIRQ order) and IPIs again but never sets a priority: the FIFO
    timer that ``xen_setup_timer`` put at the highest priority comes back at the default one, a real Linux quirk."""
    from xenabi.abi.evtchn import EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MAX

    src = host()
    booted = LinuxKernel.boot(src.hv, vm(src))
    timer = booted.port_of("timer0")
    assert timer is not None and src.hv.domain(booted.domid).chans[timer].priority == EVTCHN_FIFO_PRIORITY_MAX
    resumed, trace = restore(src, booted, host())
    timer = resumed.port_of("timer0")
    assert timer is not None
    assert resumed.hv.domain(resumed.domid).chans[timer].priority == EVTCHN_FIFO_PRIORITY_DEFAULT
    cmds = [cmd for cmd, vcpu in steps(trace, resumed.domid) if vcpu == 0 and cmd.startswith("bind")]
    assert cmds == ["bind_virq", "bind_virq", "bind_ipi", "bind_ipi", "bind_ipi"]  # timer, debug, then the IPIs
    assert "set_priority" not in [cmd for cmd, _v in steps(trace, resumed.domid)]


def restore_with_cpu1_up(release: str, kernel: str) -> tuple[LinuxKernel, HypercallTrace]:
    src = host(release)
    return restore(src, LinuxKernel.boot(src.hv, vm(src), kernel=kernel), host(release), up=(1,))


@pytest.mark.parametrize("kernel", ["5.10", "6.1"])
def test_xen_vcpu_restore_takes_an_up_cpu_down_to_place_its_vcpu_info(kernel: str) -> None:
    """From 4.7 ``xen_vcpu_restore`` finds vCPU 1 up, takes it down (Xen refuses another vCPU's vcpu_info while it is
    up, before 4.18), places its vcpu_info and brings it back up."""
    resumed, trace = restore_with_cpu1_up("4.17", kernel)
    restore_ops = ("is_up", "down", "register_vcpu_info", "up")
    calls = [(r["cmd"], r["rc"]) for r in trace.records if r["cmd"] in restore_ops and r["vcpuid"] == 1]
    assert calls[:4] == [("is_up", 1), ("down", 0), ("register_vcpu_info", 0), ("up", 0)]
    assert resumed.running and resumed.hv.domain(resumed.domid).vcpus[1].up


@pytest.mark.parametrize(("kernel", "crashed"), [("5.10", False), ("6.1", True)])
def test_before_4_7_an_up_cpus_vcpu_info_cannot_be_placed_again(kernel: str, crashed: bool) -> None:
    """Before 4.7 an HVM guest's VCPUOP_is_up is -ENOSYS (read as down), so ``xen_vcpu_restore`` places vCPU 1's
    vcpu_info while it is up and Xen refuses it: 5.10 goes on with shared_info slots, 6.x panics (derived from
    Xen's ``map_vcpu_info`` and Linux's ``xen_vcpu_setup``; not seen on real hardware here)."""
    resumed, _trace = restore_with_cpu1_up("4.6", kernel)
    if crashed:
        assert resumed.state.crash == "panic: register_vcpu_info failed: cpu=1 err=-22"
        return
    assert resumed.running and not resumed.state.vcpu_info_placement
    assert resumed.state.vcpu_info == [v.info_offset for v in resumed.hv.domain(resumed.domid).vcpus]
