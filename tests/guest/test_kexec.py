"""kexec as Linux 5.10 and 6.1 do it on Xen HVM (``xen_hvm_shutdown``, ``xen_reboot``; ``spec/linux-guests.md``
§6), and calls on a kernel that is no longer running."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenabi.errors import KernelNotRunning, NotModelled, XenError
from xenabi.guest.kernels import KERNELS
from xenabi.guest.linux import KERNEL_HEAP_GFN, LinuxKernel
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack

SECOND_HEAP = 0x80


def vm(release: str, guest_type: str = "hvm") -> tuple[Toolstack, int]:
    ts = Toolstack(Hypervisor(release))
    cfg = DomainConfig.from_xl(f'name = "k"\ntype = "{guest_type}"\nmemory = 8\nvcpus = 2\n')
    return ts, ts.create(cfg, start=True)


def kexec(release: str, kernel: str) -> tuple[Toolstack, LinuxKernel, LinuxKernel | None, list[tuple[str, str, int]]]:
    ts, domid = vm(release)
    first = LinuxKernel.boot(ts.hv, domid, kernel=kernel)
    trace = ts.hv.start_trace()
    handover = first.kexec()
    handled = ts.handle_shutdown(domid)
    if handled.domid is None:
        return ts, first, None, trace.calls(domid)
    ts.hv.advance_clock(10**7)
    second = LinuxKernel.boot(ts.hv, domid, kernel=kernel, heap_gfn=SECOND_HEAP, handover=handover)
    return ts, first, second, trace.calls(domid)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_xen_hvm_shutdown_issues_soft_reset_and_the_second_kernel_gets_fifo(kernel: str) -> None:
    """``xen_hvm_shutdown`` with a kexec in progress: ``xen_reboot(SHUTDOWN_soft_reset)``; from 4.7 the toolstack's
    soft reset returns the domain to 2-level, so the second kernel's ``init_control`` on the boot CPU succeeds."""
    _ts, first, second, calls = kexec("4.17", kernel)
    assert calls[0] == ("sched_op", "shutdown", 0)
    assert first.state.phase == "kexec"
    assert second is not None and second.running and second.state.abi == "fifo"
    assert ("event_channel_op", "init_control", 0) in calls[1:]
    assert second.corrupted_frames() == {}


@pytest.mark.parametrize(("release", "corrupted"), [("4.14", True), ("4.16.3", False), ("4.17", False)])
def test_b80d4f8d2e_the_first_kernels_time_areas_are_written_after_the_reset(release: str, corrupted: bool) -> None:
    """Before b80d4f8d2e Xen keeps the first kernel's vCPU time areas through the soft reset and updates them when
    the domain runs again, in memory the second kernel (or a kdump kernel's dump) now owns."""
    _ts, first, second, _calls = kexec(release, "5.10")
    assert second is not None
    frames = second.corrupted_frames()
    if not corrupted:
        assert frames == {}
        return
    assert list(frames) == [first.state.areas_gfn]
    role, count = frames[first.state.areas_gfn]
    assert role == "runstate and time areas" and count > 0


def test_kexec_on_4_6_destroys_the_vm() -> None:
    """No soft reset before 4.7: xl 4.6 destroys a domain that shuts down with reason code 5."""
    ts, first, second, calls = kexec("4.6", "6.1")
    assert second is None and first.domid not in ts.hv.domains and calls == [("sched_op", "shutdown", 0)]


def test_a_second_kernel_at_the_same_place_reuses_the_first_kernels_frames() -> None:
    """A kexec'd kernel at the first kernel's place registers its areas in the same frame: nothing is counted."""
    ts, domid = vm("4.14")
    handover = LinuxKernel.boot(ts.hv, domid).kexec()
    ts.handle_shutdown(domid)
    second = LinuxKernel.boot(ts.hv, domid, heap_gfn=KERNEL_HEAP_GFN, handover=handover)
    assert second.corrupted_frames() == {}


def test_kexec_of_a_pv_guest_is_not_modelled() -> None:
    ts, domid = vm("4.17", "pv")
    kernel = LinuxKernel.boot(ts.hv, domid)
    with pytest.raises(NotModelled, match="kexec of a PV guest"):
        kernel.kexec()
    assert kernel.running


@pytest.mark.parametrize("heap_gfn", [0, KERNEL_HEAP_GFN - 1, 2048, "0x80", 1.5])
def test_a_kernel_placed_outside_its_memory_is_refused(heap_gfn: object) -> None:
    ts, domid = vm("4.17")
    with pytest.raises(XenError, match="heap_gfn"):
        LinuxKernel.boot(ts.hv, domid, heap_gfn=heap_gfn)  # type: ignore[arg-type]


# --- calls on a kernel that is not running ---------------------------------------------------------------------------
CALLS = {
    "bind_virq": lambda k: k.bind_virq(1, 0, "x"),
    "bind_ipi": lambda k: k.bind_ipi(0, "x"),
    "unbind": lambda k: k.unbind("timer0"),
    "unmask_port": lambda k: k.unmask_port(1),
    "expand_array": lambda k: k.expand_array(),
    "send_ipi": lambda k: k.send_ipi(0),
    "run": lambda k: k.run(0),
    "suspend": lambda k: k.suspend(),
    "resume": lambda k: k.resume(),
    "kexec": lambda k: k.kexec(),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_on_a_crashed_kernel_is_a_clear_error(call: str) -> None:
    ts, domid = vm("4.17")
    kernel = LinuxKernel.boot(ts.hv, domid)
    kernel.crash("BUG: for the test")
    with pytest.raises(KernelNotRunning, match=r"crashed \(BUG: for the test\)") as info:
        CALLS[call](kernel)
    assert info.value.phase == "crashed" and info.value.crash == "BUG: for the test"


def test_calls_after_kexec_hibernation_or_destruction_say_so(tmp_path: Path) -> None:
    ts, domid = vm("4.17")
    kernel = LinuxKernel.boot(ts.hv, domid)
    kernel.kexec()
    with pytest.raises(KernelNotRunning, match="kexec'd into another kernel"):
        kernel.run(0)
    ts, domid = vm("4.17")
    kernel = LinuxKernel.boot(ts.hv, domid)
    kernel.hibernate(tmp_path / "disk")
    with pytest.raises(KernelNotRunning, match="powered off"):
        kernel.bind_ipi(0, "x")
    ts, domid = vm("4.17")
    kernel = LinuxKernel.boot(ts.hv, domid)
    ts.destroy(domid)
    with pytest.raises(KernelNotRunning, match="destroyed"):
        kernel.send_ipi(0)


def test_resume_of_a_running_kernel_is_an_error() -> None:
    ts, domid = vm("4.17")
    kernel = LinuxKernel.boot(ts.hv, domid)
    with pytest.raises(KernelNotRunning, match="running, not suspended"):
        kernel.resume()
    assert kernel.running
