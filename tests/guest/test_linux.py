"""The Linux-like guest kernel (``spec/evtchn.md`` §4.5, §5.7, §5.8, §7; ``spec/abi-control.md`` §1.2, §4)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.hvm import EvtchnUpcallVector
from xenabi.abi.xen import VIRQ_TIMER, HYPERVISOR_event_channel_op
from xenabi.errors import AbiIncompatible, UnknownKernel
from xenabi.fingerprint import Fingerprint, take_fingerprint
from xenabi.guest.backends import Backend
from xenabi.guest.linux import (
    IMAGE_USED,
    KERNEL_STATE_GFN,
    KernelStateMissing,
    LinuxKernel,
    image_on,
)
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import Lifecycle
from xenabi.hypervisor.trace import HypercallTrace
from xenabi.toolstack import DomainConfig, Toolstack

BOTH = ("evtchn_fifo", "evtchn_upcall")
ALL_414 = (*BOTH, "gnttab_v2")  # what a 4.14 host implements


def vm(ts: Toolstack, body: str = "", vcpus: int = 2) -> int:
    return ts.create(
        DomainConfig.from_xl(f'name = "k"\ntype = "hvm"\nmemory = 8\nvcpus = {vcpus}\n{body}\n'), start=True
    )


def host(release: str = "4.14", control: bool = True, tmp: Path | None = None) -> Toolstack:
    return Toolstack(Hypervisor(release, abi_control=control), state_dir=tmp)


def traffic(ts: Toolstack, kernel: LinuxKernel, rounds: int = 3) -> int:
    """Backends, timers and IPIs; returns how many events were sent to bound ports."""
    backends = [Backend.connect(ts.hv, name, kernel.domid, port) for name, port in kernel.channels().items()]
    sent = 0
    for _ in range(rounds):
        sent += sum(b.notify() for b in backends)
        for vcpu in range(kernel.state.vcpus):
            sent += ts.hv.send_virq(kernel.domid, VIRQ_TIMER, vcpu)
            sent += kernel.send_ipi(vcpu)
        for vcpu in range(kernel.state.vcpus):
            kernel.run(vcpu)
    for b in backends:
        b.close()
    return sent


def handled(kernel: LinuxKernel) -> int:
    return sum(kernel.state.handled.values())


# --- boot (§5.8) ----------------------------------------------------------------------------------------------------
PER_CPU = ("timer", "resched", "callfunc", "callfuncsingle")


@pytest.mark.parametrize(("kernel", "debug"), [("5.10", True), ("6.1", False)])
def test_section_5_8_boot_prefers_fifo_and_binds_everything(kernel: str, debug: bool) -> None:
    """xen_smp_intr_init: three IPIs per CPU, VIRQ_DEBUG under FIFO on 5.10 only; no per-vCPU upcall vector on
    4.14 for either kernel (CPUID leaf 4 bit 6 is 4.17's)."""
    ts = host()
    booted = LinuxKernel.boot(ts.hv, vm(ts), kernel=kernel)
    assert booted.state.abi == "fifo" == ts.hv.domain(booted.domid).evtchn_abi and booted.state.kernel == kernel
    assert set(booted.state.control_blocks) == {0, 1} and booted.state.upcall_vector == [False, False]
    names = {name for name, _vcpu in booted.state.bindings.values()}
    per_cpu = PER_CPU + (("debug",) if debug else ())
    assert names == {f"{n}{vcpu}" for n in per_cpu for vcpu in (0, 1)} | {"xenstore", "console", "net"}
    assert take_fingerprint(ts.hv, booted.domid) == Fingerprint(ALL_414, ALL_414) and booted.state.errors == []


def test_section_5_8_any_negative_result_means_2_level() -> None:
    ts = host("4.3", control=False)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    assert kernel.state.abi == "2l" and kernel.state.upcall_vector == [False, False]
    assert kernel.state.errors == [["EVTCHNOP_init_control", "-ENOSYS", "fall back to the 2-level ABI"]]
    assert take_fingerprint(ts.hv, kernel.domid) == Fingerprint(("gnttab_v2",), None)


@pytest.mark.parametrize("option", ["fifo_events", "fifo_support"])
def test_kernels_that_never_try_fifo(option: str) -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts), **{option: False})
    assert kernel.state.abi == "2l" and ts.hv.domain(kernel.domid).evtchn_abi == "2l" and kernel.state.errors == []


def test_controlled_host_hides_fifo_and_the_kernel_falls_back() -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts, 'xen_abi_features = [ "!evtchn_fifo" ]'))
    assert kernel.state.abi == "2l" and kernel.state.upcall_vector == [False, False]
    expected = Fingerprint(("evtchn_upcall", "gnttab_v2"), ("evtchn_upcall", "gnttab_v2"))
    assert take_fingerprint(ts.hv, kernel.domid) == expected


# --- events through guest memory ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["", 'xen_abi_features = [ "!evtchn_fifo" ]'])
def test_every_event_is_handled_on_both_abis(body: str) -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts, body))
    sent = traffic(ts, kernel, rounds=10)
    assert sent == 10 * 7 and handled(kernel) == sent and kernel.state.spurious == 0


def test_section_5_7_higher_priority_preempts() -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts, vcpus=1))
    hv, domid = ts.hv, kernel.domid
    net = kernel.port_of("net")
    assert net is not None
    assert hv.hypercall(domid, HYPERVISOR_event_channel_op, E.EVTCHNOP_set_priority, E.SetPriority(net, 2)) == 0
    backend = Backend.connect(hv, "net", domid, net)
    order: list[str] = []

    def on_event(name: str) -> None:
        order.append(name)
        if name == "timer0" and order.count("timer0") == 1:
            backend.notify()  # a priority-2 event arrives while priority 7 is being consumed

    kernel.on_event = on_event
    hv.send_virq(domid, VIRQ_TIMER, 0)
    kernel.send_ipi(0)
    kernel.run(0)
    assert order == ["timer0", "net", "resched0"]


@pytest.mark.parametrize("body", ["", 'xen_abi_features = [ "!evtchn_fifo" ]'])
def test_masked_pending_event_arrives_on_unmask(body: str) -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts, body, vcpus=1))
    net = kernel.port_of("net")
    assert net is not None
    backend = Backend.connect(ts.hv, "net", kernel.domid, net)
    kernel.ops.mask(net)
    assert backend.notify()
    kernel.run(0)
    assert kernel.state.handled["net"] == 0
    rc = kernel.ops.unmask(net) if kernel.state.abi == "fifo" else kernel.ops.unmask(net, 0)  # type: ignore[call-arg]
    assert rc == 0
    kernel.run(0)
    assert kernel.state.handled["net"] == 1


# --- state in memory ------------------------------------------------------------------------------------------------
def test_state_lives_in_guest_memory() -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    traffic(ts, kernel)
    again = LinuxKernel.attach(ts.hv, kernel.domid)
    assert again.state == kernel.state
    # the serialisation is byte for byte what dataclasses.asdict gave (issue 13 dropped asdict for speed)
    import json
    from dataclasses import asdict

    assert kernel.state.to_bytes() == json.dumps(asdict(kernel.state), separators=(",", ":")).encode()
    # taking events rewrites only the counters after the rest: what attach reads is still the whole state
    kernel.run(0)
    traffic(ts, kernel, rounds=1)
    assert LinuxKernel.attach(ts.hv, kernel.domid).state == kernel.state
    d = ts.hv.domain(kernel.domid)
    d.memory[KERNEL_STATE_GFN * 4096 : KERNEL_STATE_GFN * 4096 + 4] = b"XXXX"
    with pytest.raises(KernelStateMissing):
        LinuxKernel.attach(ts.hv, kernel.domid)


# --- suspend and resume (§7) ----------------------------------------------------------------------------------------
def save_restore(src: Toolstack, kernel: LinuxKernel, dst: Toolstack,
                 prints: list[Fingerprint] | None = None) -> LinuxKernel:  # fmt: skip
    """Save on ``src``, restore on ``dst``, resume; ``prints`` gets the fingerprints before the save and on arrival
    (before the kernel resumes), taken by the test as the scenarios take them."""
    if prints is not None:
        prints.append(take_fingerprint(src.hv, kernel.domid))
    kernel.suspend()
    buffer = io.BytesIO()
    src.save(kernel.domid, buffer)
    buffer.seek(0)
    new = dst.restore(buffer)
    if prints is not None:
        prints.append(take_fingerprint(dst.hv, new))
    resumed = LinuxKernel.attach(dst.hv, new)
    resumed.resume()
    return resumed


def test_section_7_fifo_guest_resumes_and_rebinds() -> None:
    src, dst = host(), host()
    kernel = LinuxKernel.boot(src.hv, vm(src))
    sent = traffic(src, kernel)
    pages = list(kernel.state.array_gfns)
    prints: list[Fingerprint] = []
    resumed = save_restore(src, kernel, dst, prints)
    assert resumed.state.abi == "fifo" == dst.hv.domain(resumed.domid).evtchn_abi
    assert resumed.state.resumes == 1 and resumed.state.array_gfns == pages  # the old array pages are reused
    assert not prints[1].differs_from(prints[0])
    sent += traffic(dst, resumed)
    assert handled(resumed) == sent


def test_section_7_fifo_resume_without_fifo_is_a_bug() -> None:
    src, dst = host(), Toolstack(Hypervisor("4.3", abi_control=False), legacy=True)
    kernel = LinuxKernel.boot(src.hv, vm(src))
    prints: list[Fingerprint] = []
    resumed = save_restore(src, kernel, dst, prints)
    assert resumed.state.phase == "crashed" and "BUG" in resumed.state.crash
    assert dst.hv.domain(resumed.domid).lifecycle is Lifecycle.SHUT_DOWN
    assert prints[1].operations == ("gnttab_v2",) and prints[0].operations == ALL_414


def test_2l_guest_resumes_in_2l_on_a_newer_host() -> None:
    src, dst = host("4.3", control=False), Toolstack(Hypervisor("4.14", abi_control=False), legacy=True)
    kernel = LinuxKernel.boot(src.hv, vm(src))
    prints: list[Fingerprint] = []
    resumed = save_restore(src, kernel, dst, prints)
    assert resumed.state.abi == "2l" == dst.hv.domain(resumed.domid).evtchn_abi
    assert prints[1].differs_from(prints[0])  # new hypercalls appeared
    sent = traffic(dst, resumed)
    assert handled(resumed) == sent


# --- hibernation ----------------------------------------------------------------------------------------------------
def hibernate_and_boot(ts: Toolstack, kernel: LinuxKernel, **options: Any) -> LinuxKernel:
    disk = ts.disk_path("k")
    kernel.hibernate(disk)
    assert image_on(disk) and ts.hv.domain(kernel.domid).shutdown_reason == "poweroff"
    ts.shutdown(kernel.domid)
    domid = ts.start("k")
    resumed = LinuxKernel.boot(ts.hv, domid, disk=disk, **options)
    assert not image_on(disk) and disk.read_bytes().startswith(IMAGE_USED)
    return resumed


def test_hibernation_hands_over_to_the_resume_kernel(tmp_path: Path) -> None:
    ts = host("4.3", control=False, tmp=tmp_path)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    sent = traffic(ts, kernel)
    resumed = hibernate_and_boot(ts, kernel)
    # the boot kernel's own boot is not in the image; a thaw is not a Xen resume
    assert resumed.state.boots == 1 and resumed.state.thaws == 1 and resumed.state.resumes == 0
    assert handled(resumed) == sent  # counters came back with the image
    assert resumed.state.abi == "2l" == ts.hv.domain(resumed.domid).evtchn_abi
    sent += traffic(ts, resumed)
    assert handled(resumed) == sent


def test_boot_kernel_switching_to_fifo_loses_the_2l_kernels_events(tmp_path: Path) -> None:
    ts = host("4.3", control=False, tmp=tmp_path)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    disk = ts.disk_path("k")
    kernel.hibernate(disk)
    ts.shutdown(kernel.domid)
    ts.upgrade("4.14", abi_control=False)
    resumed = LinuxKernel.boot(ts.hv, ts.start("k"), disk=disk)
    assert resumed.state.abi == "2l" and ts.hv.domain(resumed.domid).evtchn_abi == "fifo"
    assert resumed.corrupted_frames() == {}  # nothing written yet
    before = handled(resumed)
    sent = traffic(ts, resumed)
    assert sent > 0 and handled(resumed) == before  # every event lost
    # Xen wrote READY/HEAD into the boot kernel's control blocks and LINK/PENDING into its event array page: frames
    # that hold the 2-level image's memory (spec/linux-guests.md §5)
    corrupted = resumed.corrupted_frames()
    assert sorted(role for role, _bytes in corrupted.values()) == ["control block of vCPU 0", "control block of vCPU 1",
                                                                   "event array page 0"]  # fmt: skip
    assert all(count > 0 for _role, count in corrupted.values())


def test_a_fifo_image_after_a_fifo_boot_kernel_runs_no_event_channel_step(tmp_path: Path) -> None:
    """Linux has no event-channel step on hibernation resume (``xen_irq_resume`` runs only after a Xen
    save/restore), so a FIFO image never calls init_control and never BUG()s. The boot kernel took its secondary
    CPU down (``freeze_secondary_cpus``: its IPIs and VIRQs unbound, its control block left registered); the image
    brings its own back (``evtchn_fifo_percpu_init`` keeps the control block it has). Both kernels of the same build
    placed their FIFO frames alike here, so the image keeps receiving its events and nothing is corrupted: the
    model's page allocation is deterministic (the next test places the boot kernel elsewhere)."""
    ts = host(tmp=tmp_path)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    disk = ts.disk_path("k")
    kernel.hibernate(disk)
    assert kernel.state.frozen == [1] and kernel.port_of("timer1") is None  # down before the snapshot
    ts.shutdown(kernel.domid)
    domid = ts.start("k")
    trace = ts.hv.start_trace()
    image = LinuxKernel.boot(ts.hv, domid, disk=disk)
    calls = [(r["cmd"], r["args"].get("vcpu")) for r in trace.records]
    assert calls.count(("init_control", 0)) == calls.count(("init_control", 1)) == 1  # the boot kernel's only
    assert image.state.phase == "running" and image.state.thaws == 1 and image.state.online == [True, True]
    assert image.corrupted_frames() == {}
    sent = traffic(ts, image)
    assert handled(image) - handled(kernel) == sent
    assert image.corrupted_frames() == {}  # Xen's writes landed in the image's own, identically placed, FIFO frames


def test_a_fifo_image_after_a_boot_kernel_placed_elsewhere_is_corrupted_and_loses_events(tmp_path: Path) -> None:
    """The same hand-over with the boot kernel's memory elsewhere (another build, or physical KASLR): Xen keeps
    the boot kernel's control blocks, event array page and vcpu_info pages, which are now the image's memory; the
    FIFO image's events are linked into queues it never reads, as the 2-level image's are (spec §5)."""
    ts = host(tmp=tmp_path)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    image = hibernate_and_boot(ts, kernel, heap_gfn=0x80)
    assert image.state.abi == "fifo" and image.running
    sent = traffic(ts, image)
    assert handled(image) - handled(kernel) < sent
    roles = sorted(role for role, _count in image.corrupted_frames().values())
    assert "control block of vCPU 0" in roles and "event array page 0" in roles and "vcpu_info page 0" in roles


def test_image_from_a_different_memory_size_is_not_resumed(tmp_path: Path) -> None:
    ts = host(tmp=tmp_path)
    kernel = LinuxKernel.boot(ts.hv, vm(ts, 'xen_abi_features = [ "!evtchn_fifo" ]'))
    disk = ts.disk_path("k")
    kernel.hibernate(disk)
    ts.shutdown(kernel.domid)
    bigger = ts.create(DomainConfig.from_xl('name = "k2"\ntype = "hvm"\nmemory = 16\n'), start=True)
    fresh = LinuxKernel.boot(ts.hv, bigger, disk=disk)
    assert fresh.state.resumes == 0 and fresh.state.errors[-1][0] == "software_resume" and image_on(disk)


# --- a guest doing what Xen forbids --------------------------------------------------------------------------------
def test_forbidden_things_get_xens_errno_and_a_recorded_reaction() -> None:
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    assert kernel.bind_virq(VIRQ_TIMER, 0, "timer0-again") == -errno.EEXIST
    assert kernel.state.errors[-1] == ["EVTCHNOP_bind_virq", "-EEXIST", "timer0-again not bound"]
    net = kernel.port_of("net")
    assert kernel.unbind("net") == 0 and kernel.port_of("net") is None
    assert kernel.unmask_port(net) == 0  # a closed port in an allocated bucket: Xen ignores the unmask
    assert kernel.unmask_port(1 << 20) == -errno.EINVAL
    while kernel.expand_array() == 0:
        pass
    assert len(kernel.state.array_gfns) == 128
    assert kernel.state.errors[-1] == ["EVTCHNOP_expand_array", "-EINVAL", "no more ports"]
    sent = traffic(ts, kernel)
    assert kernel.running and handled(kernel) == sent


def test_fingerprint_probe_changes_nothing() -> None:
    ts = host()
    domid = vm(ts)
    before = bytes(ts.hv.domain(domid).memory)
    assert take_fingerprint(ts.hv, domid) == Fingerprint(ALL_414, ALL_414)
    assert bytes(ts.hv.domain(domid).memory) == before and ts.hv.domain(domid).evtchn_abi == "2l"


# --- issue 18: what the kernel learns of Xen at boot and keeps ----------------------------------------------------
def pv_vm(ts: Toolstack, body: str = "") -> int:
    return ts.create(DomainConfig.from_xl(f'name = "p"\ntype = "pv"\nmemory = 8\nvcpus = 2\n{body}\n'), start=True)


def test_xenfeat_read_once_at_boot_and_cached() -> None:
    """xen_setup_features: submap 0, read at boot; the cached bits decide later (48a3fd1432's bits 18, 19)."""
    ts = host("4.18")
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    assert kernel.xen_feature(18) and kernel.xen_feature(19) and kernel.state.areas_by == "phys"
    old = host("4.17")
    kernel = LinuxKernel.boot(old.hv, vm(old))
    assert not kernel.xen_feature(18) and kernel.state.areas_by == "linear"


def test_areas_registered_for_every_vcpu_and_kept_current() -> None:
    ts = host("4.18")
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    d = ts.hv.domain(kernel.domid)
    base = kernel.state.areas_gfn * 4096
    assert all(v.areas is not None and v.areas.runstate_phys == base + 64 * v.vcpu_id for v in d.vcpus)
    ts.hv.advance_clock(10_000)
    ts.hv.pause(kernel.domid)
    assert int.from_bytes(d.memory[base : base + 4], "little") == 3  # vCPU 0's area: RUNSTATE_offline


def test_hidden_phys_area_means_linear_registration() -> None:
    ts = host("4.22")
    domid = vm(ts, 'xen_abi_features = [ "all", "!vcpu_phys_area" ]')
    kernel = LinuxKernel.boot(ts.hv, domid)
    assert kernel.state.areas_by == "linear" and kernel.state.errors == []
    assert ts.hv.domain(domid).vcpus[1].areas.runstate_linear is not None  # type: ignore[union-attr]


def test_grant_version_follows_linuxs_rule() -> None:
    """gnttab_need_v2: a PV guest whose host reports machine addresses wider than 44 bits (CPUID leaf 5) asks for
    v2; an HVM guest of this size v1; grant_table.version= overrides."""
    ts = host("4.14")
    assert LinuxKernel.boot(ts.hv, vm(ts)).state.gnttab_version == 1
    pv = LinuxKernel.boot(ts.hv, pv_vm(ts))
    assert pv.state.gnttab_version == 2 and ts.hv.domain(pv.domid).grant_table.version == 2
    hidden = LinuxKernel.boot(ts.hv, pv_vm(ts, 'xen_abi_features = [ "all", "!gnttab_v2" ]'))
    assert hidden.state.gnttab_version == 1 and hidden.state.errors == [["GNTTABOP_set_version", "-ENOSYS",
                                                                         "grant tables version 1"]]  # fmt: skip


def test_v2_guest_resumed_where_v2_is_hidden_panics() -> None:
    """gnttab_request_version on resume: a kernel that used v2 and is refused it panics. (An HVM guest booted
    with grant_table.version=2: the model does not save PV domains.)"""
    src = host("4.14")
    kernel = LinuxKernel.boot(src.hv, vm(src), gnttab_version=2)
    assert kernel.state.gnttab_version == 2
    dst = Toolstack(Hypervisor("4.14", abi_control=True, gnttab_max_version=1), legacy=True)  # checks nothing
    resumed = save_restore(src, kernel, dst)
    assert resumed.state.phase == "crashed" and "grant tables version 2" in resumed.state.crash
    again = LinuxKernel.boot(src.hv, vm(src), gnttab_version=2)
    again.suspend()
    with pytest.raises(AbiIncompatible) as info:  # a toolstack that admits refuses it, naming the feature
        src.migrate(again.domid, Toolstack(Hypervisor("4.14", abi_control=True, gnttab_max_version=1)))
    assert [(r.feature, r.kind.value) for r in info.value.reasons] == [("gnttab_v2", "host-disabled")]


# --- issue 21: the kernels of the table (xenabi.guest.kernels) --------------------------------------------------------
def traced_boot(release: str, kernel: str, body: str = "", **options: bool) -> tuple[LinuxKernel, HypercallTrace]:
    ts = host(release)
    domid = vm(ts, body)
    trace = ts.hv.start_trace()
    return LinuxKernel.boot(ts.hv, domid, kernel=kernel, **options), trace


@pytest.mark.parametrize(("release", "kernel", "body", "vectors"), [
    ("4.17", "5.10", "", False),  # 5.10 never calls it
    ("4.17", "6.1", "", True),  # leaf 4 bit 6 set from 4.17, and vCPU 0's call succeeds
    ("4.14", "6.1", "", False),  # the hypercall exists since 4.6, but CPUID does not say so before 4.17
    ("4.17", "6.1", 'xen_abi_features = [ "!evtchn_upcall" ]', False),  # hidden: the leaf bit is clear too
])  # fmt: skip
def test_xen_init_setup_upcall_vector_by_kernel(release: str, kernel: str, body: str, vectors: bool) -> None:
    """Linux 6.1 ``xen_init_setup_upcall_vector`` asks CPUID leaf 0x40000x04 EAX bit 6 first; Linux 5.10 has no
    such code and takes every event through the domain-wide callback."""
    booted, trace = traced_boot(release, kernel, body)
    calls = [cmd for _op, cmd, _rc in trace.calls(booted.domid)]
    assert booted.state.upcall_vector == [vectors, vectors]
    assert calls.count("set_evtchn_upcall_vector") == (2 if vectors else 0)


@pytest.mark.parametrize(("kernel", "fifo", "debug"), [("5.10", True, True), ("5.10", False, True),
                                                       ("6.1", True, False), ("6.1", False, True)])  # fmt: skip
def test_xen_smp_intr_init_virq_debug_by_kernel_and_abi(kernel: str, fifo: bool, debug: bool) -> None:
    """Linux 5.10 ``xen_smp_intr_init`` binds VIRQ_DEBUG on every CPU; Linux 6.1 only under 2-level."""
    booted, _trace = traced_boot("4.14", kernel, fifo_events=fifo)
    assert booted.state.abi == ("fifo" if fifo else "2l")
    assert (booted.port_of("debug0") is not None, booted.port_of("debug1") is not None) == (debug, debug)


@pytest.mark.parametrize("fifo", [True, False])
def test_xen_setup_timer_sets_the_timer_priority_and_ignores_enosys(fifo: bool) -> None:
    """Linux ``xen_setup_timer`` -> ``xen_set_irq_priority(XEN_IRQ_PRIORITY_MAX)``: EVTCHNOP_set_priority on each
    vCPU's timer port; under 2-level Xen answers -ENOSYS and the kernel carries on without an error."""
    booted, trace = traced_boot("4.14", "6.1", fifo_events=fifo)
    calls = [r for r in trace.records if r["cmd"] == "set_priority"]
    timers = [booted.port_of("timer0"), booted.port_of("timer1")]
    assert [r["args"] for r in calls] == [{"port": port, "priority": 0} for port in timers]
    assert {r["rc"] for r in calls} == ({0} if fifo else {-errno.ENOSYS}) and booted.state.errors == []


def test_an_unknown_kernel_is_an_error_naming_the_known_ones() -> None:
    ts = host()
    with pytest.raises(UnknownKernel, match=r"unknown guest kernel '4.19' \(known: 5.10, 6.1\)"):
        LinuxKernel.boot(ts.hv, vm(ts), kernel="4.19")


def test_evtchn_2l_handle_events_serves_this_cpus_timer_first() -> None:
    """Linux ``evtchn_2l_handle_events``: "timer interrupt has highest priority": this vCPU's VIRQ_TIMER port is
    handled before the selector scan, even when a lower-numbered port is pending too."""
    ts = host()
    kernel = LinuxKernel.boot(ts.hv, vm(ts), fifo_events=False)
    store, timer = kernel.port_of("xenstore"), kernel.port_of("timer0")
    assert store is not None and timer is not None and store < timer  # the toolstack's ports come first
    order: list[str] = []
    kernel.on_event = order.append
    backend = Backend.connect(ts.hv, "xenstore", kernel.domid, store)
    assert backend.notify() and ts.hv.send_virq(kernel.domid, VIRQ_TIMER, 0)
    kernel.run(0)
    assert order == ["timer0", "xenstore"]


class Refusing(Hypervisor):
    """A host that refuses one chosen hypercall (the others are answered as usual): how the tests make one step of
    a Linux boot or resume fail."""

    refuse: tuple[str, int, int] = ("", 0, 0)  # (what, vCPU, rc)

    def hypercall(self, caller: int, op: int, cmd: int, arg: object, **registers: int) -> int:  # type: ignore[override]
        what, vcpu, rc = self.refuse
        if (what == "vector" and isinstance(arg, EvtchnUpcallVector) and arg.vcpu == vcpu) or (
            what == "init_control" and isinstance(arg, E.InitControl) and arg.vcpu == vcpu
        ) or (what == "expand_array" and isinstance(arg, E.ExpandArray)):
            return rc
        return super().hypercall(caller, op, cmd, arg, **registers)


def refusing_host(release: str, what: str, vcpu: int = 1, rc: int = -errno.EINVAL) -> Toolstack:
    hv = Refusing(release, abi_control=True)
    hv.refuse = (what, vcpu, rc)
    return Toolstack(hv)


def test_xen_evtchn_cpu_prepare_comes_after_the_cpus_bindings() -> None:
    """Linux CPU hotplug order: the boot CPU's control block at ``xen_init_IRQ``; a secondary CPU's IPIs and timer
    (CPUHP_XEN_PREPARE) before its control block (CPUHP_XEN_EVTCHN_PREPARE, ``xen_evtchn_cpu_prepare``)."""
    booted, trace = traced_boot("4.14", "6.1")
    steps = [(r["cmd"], r["args"].get("vcpu")) for r in trace.records if r["dom"] == booted.domid]
    assert steps.index(("init_control", 0)) < steps.index(("bind_ipi", 0))
    assert steps.index(("bind_virq", 1)) < steps.index(("init_control", 1))
    assert booted.state.online == [True, True]


def test_a_cpu_whose_control_block_fails_is_never_brought_online() -> None:
    """``xen_evtchn_cpu_prepare`` failing fails the CPU's bring-up: its bindings are undone, it takes no events,
    and the other CPU carries on."""
    ts = refusing_host("4.14", "init_control", vcpu=1)
    kernel = LinuxKernel.boot(ts.hv, vm(ts), kernel="6.1")
    assert kernel.state.abi == "fifo" and kernel.state.online == [True, False] and kernel.running
    assert kernel.port_of("timer1") is None and kernel.port_of("resched1") is None
    assert ["EVTCHNOP_init_control", "-EINVAL", "CPU 1 not brought online"] in kernel.state.errors
    assert not kernel.send_ipi(1) and kernel.run(1) == 0
    sent = traffic(ts, kernel)
    assert handled(kernel) == sent


def test_a_6x_cpu_whose_upcall_vector_fails_stays_down() -> None:
    """6.x ``xen_cpu_up_prepare_hvm``: a secondary CPU whose per-vCPU vector cannot be set is not brought up."""
    ts = refusing_host("4.17", "vector", vcpu=1)
    kernel = LinuxKernel.boot(ts.hv, vm(ts), kernel="6.1")
    assert kernel.state.upcall_vector == [True, False] and kernel.state.online == [True, False]


def test_6x_resume_bug_on_when_the_upcall_vector_cannot_be_set_again() -> None:
    """``xen_hvm_post_suspend`` (6.x): BUG_ON if a CPU's upcall vector cannot be set again after a restore."""
    src = host("4.17")
    kernel = LinuxKernel.boot(src.hv, vm(src), kernel="6.1")
    assert kernel.state.upcall_vector == [True, True]
    resumed = save_restore(src, kernel, refusing_host("4.17", "vector", vcpu=0))
    assert resumed.state.phase == "crashed"
    assert "HVMOP_set_evtchn_upcall_vector failed for vCPU 0" in resumed.state.crash


def test_failing_to_add_the_first_event_array_page_panics() -> None:
    """``evtchn_fifo_setup``: without its first event array page the kernel panics."""
    ts = refusing_host("4.14", "expand_array", rc=-errno.ENOMEM)
    kernel = LinuxKernel.boot(ts.hv, vm(ts))
    assert kernel.state.phase == "crashed"
    assert kernel.state.crash == "panic: cannot add the first event array page (-ENOMEM)"


def test_the_guest_package_never_reads_the_hypervisors_dispatch_table() -> None:
    """Issue 21: Linux learns its ABI from XENFEAT, CPUID and the answers to what it tries; the guest model may not
    look up the hypervisor's dispatch table (the harness's fingerprint lives in ``xenabi.fingerprint``)."""
    import ast

    package = Path(__file__).resolve().parents[2] / "src" / "xenabi" / "guest"
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {"xenabi.hypervisor.dispatch", "xenabi.fingerprint"} & imported, module.name
