"""The scenarios that motivated ABI control, run end to end on the model (``spec/abi-control.md`` §1.2, §1.6, §1.7,
§4; the seed). ``xenabi demo`` and the tests run them.

Each scenario runs twice. *Uncontrolled*: every hypervisor lacks ABI control and every toolstack predates it (no
pinning, no admission), which is the world the series was written for. *Controlled*: the upgraded or newer hosts
have ABI control and every toolstack is xenabi's (it pins where it can and admits before creating). Xen 4.3 hosts
never have ABI control. VMs are created from xl.cfg text, moved with the real stream formats, and run the Linux-like
kernel of :mod:`xenabi.guest.linux`; dom0 backends and timer and IPI traffic send a known number of events, and the
kernel counts what it handles. Nothing in a scenario decides an outcome: it is read off the run. Whether the guest's
ABI changed is the harness's own measurement (:mod:`xenabi.fingerprint`), taken after each boot and on each
arrival, before the kernel resumes: the guest kernel never probes.

1. ``hibernate-across-upgrade``: booted on 4.3, hibernated, the host upgraded in place to 4.14, booted again.
2. ``migrate-up``: running on 4.3, live-migrated to 4.14 (fingerprint compared), then hibernated and booted there.
3. ``migrate-down``: a FIFO guest on 4.14 migrated to 4.3.
4. ``no-fifo-kernel`` and ``fifo-events-0``: scenario 2 with a kernel built without FIFO support and with
   ``xen.fifo_events=0``; nothing goes wrong either way, and control must not raise a false alarm.
5. ``phys-area-down``: booted on 4.18, which offers the physical-address vCPU areas (XENFEAT 18 and 19, which the
   kernel caches at boot), then migrated to 4.17 in the same pool. 4.17 stays without ABI control in both runs; in
   the controlled run the 4.18 host has it, and its toolstack creates new VMs with the pool's levelled default (what
   both releases give), so the guest never sees bits 18 and 19.
6. ``upcall-down``: booted on 4.17, whose CPUID leaf 4 bit 6 offers the per-vCPU upcall vector (Linux 6.1 takes it;
   5.10 never does), then migrated to 4.5, which has no HVMOP_set_evtchn_upcall_vector: 6.1's
   ``xen_hvm_post_suspend`` BUG()s. Controlled: the pool's level (4.17 with 4.5) hides ``evtchn_upcall``, so the leaf
   bit is clear and 6.1 uses the domain-wide vector from the start. The VM asks for 32 grant frames
   (``max_grant_frames``), what 4.5 gives, so that admission has only the ABI to decide on.
7. ``kexec``, ``kexec-4.14``, ``kexec-4.6``: the guest kexecs (SCHEDOP_shutdown with SHUTDOWN_soft_reset) and its
   host's xl acts as that release's xl does (:meth:`~xenabi.toolstack.Toolstack.handle_shutdown`); the second
   kernel is loaded elsewhere in memory. On 4.17 the soft reset returns FIFO to 2-level and drops every area, and
   the second kernel's init_control works; 4.14's soft reset keeps the first kernel's time areas (b80d4f8d2e is
   4.17), which Xen writes when the domain runs again, into memory the first kernel left; 4.6's xl knows no reason
   code 5 and destroys the VM. These are Xen's and xl's doing, not ABI hazards (``Scenario.abi_hazard`` False): the
   controlled run must end exactly as the uncontrolled one.

Outcome, worst first: ``crashed`` (the kernel BUG()ed or panicked), ``destroyed`` (the toolstack destroyed the VM
instead of letting it go on), ``corrupted`` (after a hand-over, hibernation or kexec, Xen wrote into frames the
previous kernel had registered, which now hold other memory; the frames and byte counts are named), ``missing CPU``
(a CPU the kernel tried to bring up stayed down, with the refusal that kept it there), ``hung``
(events sent to bound ports were never handled), ``refused`` (a host refused the VM before creating anything; it kept
running where it was), ``fine``. Every round of traffic is one 10 ms tick of the hosts' model clock.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from xenabi.abi.xen import VIRQ_TIMER
from xenabi.errors import AbiIncompatible, MigrationError
from xenabi.fingerprint import Fingerprint, take_fingerprint
from xenabi.guest.backends import Backend
from xenabi.guest.kernels import DEFAULT_KERNEL, get_kernel
from xenabi.guest.linux import KERNEL_HEAP_GFN, HandOver, LinuxKernel
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.trace import HypercallTrace
from xenabi.policy import legacy_policy
from xenabi.toolstack import DomainConfig, Toolstack

HOST_KINDS = ("uncontrolled", "controlled")
OUTCOME_ORDER = ("crashed", "destroyed", "corrupted", "missing CPU", "hung", "refused", "fine")
SAFE_OUTCOMES = frozenset({"fine", "refused"})
KEXEC_HEAP_GFN = 0x80  # where the kexec'd kernel's own memory starts (kexec loads it away from the first kernel's)
TICK_NS = 10_000_000  # one round of traffic is one 100 Hz timer tick of the model clock


def vm_config(name: str, extra: str = "") -> str:
    return f'name = "{name}"\ntype = "hvm"\nmemory = 4\nvcpus = 2\nvif = [ "" ]\n{extra}'


@dataclass
class ScenarioResult:
    scenario: str
    host: str
    kernel: str
    sent: int
    handled: int
    lost: int
    fingerprint_before: Fingerprint
    fingerprint_after: Fingerprint
    fingerprint_changed: bool
    outcome: str
    detail: str
    steps: list[str] = field(default_factory=list)
    abi_hazard: bool = True  # whether ABI control is meant to prevent what goes wrong (Scenario.abi_hazard)

    @property
    def safe(self) -> bool:
        return self.outcome in SAFE_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "host": self.host,
            "kernel": self.kernel,
            "sent": self.sent,
            "handled": self.handled,
            "lost": self.lost,
            "fingerprint_before": self.fingerprint_before.to_json(),
            "fingerprint_after": self.fingerprint_after.to_json(),
            "fingerprint_changed": self.fingerprint_changed,
            "outcome": self.outcome,
            "detail": self.detail,
            "steps": self.steps,
            "abi_hazard": self.abi_hazard,
        }


class Run:
    """One scenario on one kind of host: the VM, its kernel, its backends, and what was sent."""

    def __init__(self, name: str, controlled: bool, workdir: Path, *, rounds: int, trace: IO[str] | None = None,
                 kernel: str = DEFAULT_KERNEL, fifo_events: bool = True, fifo_support: bool = True,
                 config: str = "") -> None:  # fmt: skip
        self.name = name
        self.trace = trace  # where every host of the run writes its hypercall trace, as JSON lines (None: off)
        self.controlled = controlled
        self.workdir = workdir
        self.rounds = rounds
        self.kernel_version = get_kernel(kernel).name  # the Linux version every boot of this run uses
        self.fifo_events, self.fifo_support = fifo_events, fifo_support  # the kernel's command line and build
        self.config = config  # xl.cfg lines the scenario adds to the VM's
        self.retired: Counter[str] = Counter()  # events handled by kernels that have since been replaced (kexec)
        self.destroyed = ""  # what the toolstack said when it destroyed the VM instead of letting it go on
        self.steps: list[str] = []
        self.sent: Counter[str] = Counter()
        self.ts: Toolstack | None = None
        self.domid: int | None = None
        self.kernel: LinuxKernel | None = None
        self.backends: list[Backend] = []
        self.refusals: list[str] = []
        self.crashes: list[str] = []
        self.hosts: list[Toolstack] = []  # every host this run started, closed when it ends
        # the harness's ABI fingerprints (xenabi.fingerprint): after each boot, and on arrival after each move
        self.fingerprints: list[tuple[str, Fingerprint]] = []

    # --- hosts ------------------------------------------------------------------------------------------------
    def host(self, release: str, *, new: bool, pool: tuple[str, ...] = ()) -> Toolstack:
        """A host of ``release``; ``new`` hosts have ABI control in the controlled run, and there a host in a
        ``pool`` of releases creates new VMs with the pool's levelled default (decision 6)."""
        hv = Hypervisor(release, abi_control=self.controlled and new)
        if self.trace is not None:
            label = {"scenario": self.name, "run": "controlled" if self.controlled else "uncontrolled",
                     "kernel": self.kernel_version,
                     "host": f"{release}{'+control' if hv.abi_control else ''}"}  # fmt: skip
            hv.start_trace(HypercallTrace(out=self.trace, label=label))
        default = None
        if self.controlled and pool:
            default = frozenset.intersection(*(legacy_policy(member).features for member in pool))
        ts = Toolstack(hv, legacy=not self.controlled, default_features=default,
                       state_dir=self.workdir / f"{release}-{id(hv)}")  # fmt: skip
        self.hosts.append(ts)
        return ts

    def log(self, text: str) -> None:
        self.steps.append(text)

    # --- the VM -------------------------------------------------------------------------------------------------
    def create(self, ts: Toolstack) -> None:
        self.ts = ts
        self.domid = ts.create(DomainConfig.from_xl(vm_config(self.name, self.config)), start=True)
        self.boot(disk=None)
        self.log(f"created on {ts.name}: {self._abi()}")

    def boot(self, disk: Path | None, *, heap_gfn: int = KERNEL_HEAP_GFN, handover: HandOver | None = None) -> None:
        assert self.ts is not None and self.domid is not None
        self.kernel = LinuxKernel.boot(self.ts.hv, self.domid, disk=disk, kernel=self.kernel_version,
                                       fifo_events=self.fifo_events, fifo_support=self.fifo_support,
                                       heap_gfn=heap_gfn, handover=handover)  # fmt: skip
        if self.kernel.running:
            self.fingerprint("boot")
        self._after_kernel_change()

    def fingerprint(self, label: str) -> None:
        """The ABI the domain can reach now, as the harness measures it (the guest never probes)."""
        assert self.ts is not None and self.domid is not None
        self.fingerprints.append((label, take_fingerprint(self.ts.hv, self.domid)))

    def _abi(self) -> str:
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        d = self.ts.hv.domain(self.domid)
        return f"kernel uses {self.kernel.state.abi}, Xen delivers {d.evtchn_abi}"

    def _after_kernel_change(self) -> None:
        """Connect backends to the kernel's channels, or clean up a crashed domain (on_crash = destroy)."""
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        for backend in self.backends:
            backend.close()
        self.backends = []
        if self.kernel.state.phase == "crashed":
            self.crashes.append(self.kernel.state.crash)
            self.log(f"crashed on {self.ts.name}: {self.kernel.state.crash}")
            self.ts.destroy(self.domid)
            return
        for name, port in sorted(self.kernel.channels().items()):
            self.backends.append(Backend.connect(self.ts.hv, name, self.domid, port))

    @property
    def alive(self) -> bool:
        return self.kernel is not None and self.kernel.running

    def exercise(self) -> None:
        """``rounds`` of: every backend notifies, every vCPU's timer fires, every vCPU gets an IPI; then each vCPU
        takes its upcall."""
        if not self.alive:
            return
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        hv, kernel = self.ts.hv, self.kernel
        vcpus = range(kernel.state.vcpus)
        for _ in range(self.rounds):
            hv.advance_clock(TICK_NS)
            for backend in self.backends:
                if backend.notify():
                    self.sent[backend.name] += 1
            for vcpu in vcpus:
                if hv.send_virq(self.domid, VIRQ_TIMER, vcpu):
                    self.sent[f"timer{vcpu}"] += 1
                if kernel.send_ipi(vcpu):
                    self.sent[f"resched{vcpu}"] += 1
            for vcpu in vcpus:
                kernel.run(vcpu)
        self.log(f"exercised on {self.ts.name}: {self.handled} of {sum(self.sent.values())} events handled so far")

    @property
    def handled(self) -> int:
        retired = sum(self.retired.get(name, 0) for name in self.sent)
        if self.kernel is None:
            return retired
        return retired + sum(self.kernel.state.handled.get(name, 0) for name in self.sent)

    def migrate(self, dest: Toolstack) -> None:
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        if not self.alive:
            return
        self.kernel.suspend()
        try:
            new = self.ts.migrate(self.domid, dest)
        except (AbiIncompatible, MigrationError) as exc:
            self.kernel.cancel_suspend()  # carry on in the same domain
            self.kernel.run(0)
            self.refusals.append(str(exc))
            self.log(f"migration to {dest.name} refused; still running on {self.ts.name}: {exc}")
            return
        self.ts, self.domid = dest, new
        self.fingerprint(f"arrived on {dest.name}")  # before the kernel resumes: what the new host offers it
        self.kernel = LinuxKernel.attach(dest.hv, new)
        self.kernel.resume()
        if self.kernel.state.phase == "running":
            self.log(f"migrated to {dest.name}: {self._abi()}")
        self._after_kernel_change()

    def hibernate(self) -> Path:
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        disk = self.ts.disk_path(self.name)
        self.kernel.hibernate(disk)
        self.ts.shutdown(self.domid)
        self.log(f"hibernated to its disk on {self.ts.name} and powered off")
        return disk

    def start_again(self, disk: Path) -> None:
        assert self.ts is not None
        self.domid = self.ts.start(self.name)
        self.boot(disk=disk)
        if self.alive:
            self.log(f"booted again on {self.ts.name} and resumed the image: {self._abi()}")

    def kexec(self) -> None:
        """The guest kexecs (``SCHEDOP_shutdown(SHUTDOWN_soft_reset)``), its host's toolstack acts on the shutdown as
        xl does, and where the domain goes on, the second kernel boots from its own memory."""
        assert self.kernel is not None and self.ts is not None and self.domid is not None
        if not self.alive:
            return
        handover = self.kernel.kexec()
        if self.kernel.state.phase == "crashed":
            self._after_kernel_change()
            return
        self.retired.update(self.kernel.state.handled)
        for backend in self.backends:
            backend.close()
        self.backends = []
        self.ts.hv.advance_clock(TICK_NS)  # xl notices the shutdown and acts: time passes
        handled = self.ts.handle_shutdown(self.domid)
        self.log(f"kexec on {self.ts.name}: xl's action {handled.action}: {handled.message}")
        if handled.domid is None:
            self.destroyed = f"the toolstack destroyed the VM on {self.ts.name}: {handled.message}"
            self.kernel = None
            return
        self.domid = handled.domid
        self.log(f"after the soft reset Xen delivers {self.ts.hv.domain(self.domid).evtchn_abi}")
        self.boot(disk=None, heap_gfn=KEXEC_HEAP_GFN, handover=handover)
        if self.alive:
            self.log(f"the second kernel booted: {self._abi()}")

    # --- the verdict ----------------------------------------------------------------------------------------------
    def result(self, scenario: Scenario) -> ScenarioResult:
        kernel = self.kernel
        prints = [fp for _label, fp in self.fingerprints]
        sent, handled = sum(self.sent.values()), self.handled
        lost = sent - handled
        corrupted = kernel.corrupted_frames() if kernel is not None else {}
        if self.crashes:
            outcome, detail = "crashed", self.crashes[-1]
        elif self.destroyed:
            outcome, detail = "destroyed", self.destroyed
        elif corrupted:
            assert kernel is not None and kernel.handover is not None
            outcome = "corrupted"
            frames = ", ".join(f"gfn {gfn:#x} ({role}: {_bytes(count)})"
                               for gfn, (role, count) in sorted(corrupted.items()))  # fmt: skip
            total = sum(count for _role, count in corrupted.values())
            handover = kernel.handover
            detail = (f"Xen wrote {_bytes(total)} into {handover.memory}, in frames the {handover.previous} "
                      f"registered: {frames}")  # fmt: skip
            if lost:
                detail += f"; {lost} of {sent} events never handled"
        elif kernel is not None and not all(kernel.state.online):
            outcome = "missing CPU"
            down = [cpu for cpu, online in enumerate(kernel.state.online) if not online]
            why = [f"{operation} {rc}" for operation, rc, reaction in kernel.state.errors
                   if any(reaction == f"CPU {cpu} not brought online" for cpu in down)]  # fmt: skip
            detail = f"CPU {', '.join(map(str, down))} never came online ({'; '.join(why) or 'no reason recorded'})"
            if lost:
                detail += f"; {lost} of {sent} events never handled"
        elif lost:
            outcome = "hung"
            detail = f"{lost} of {sent} events never handled"
            if self.ts is not None and self.domid in self.ts.hv.domains:
                detail += f"; {self._abi()}"
        elif self.refusals:
            outcome, detail = "refused", self.refusals[-1]
        else:
            assert kernel is not None
            outcome, detail = "fine", f"all {sent} events handled ({kernel.state.abi})"
        variant = scenario.variant
        return ScenarioResult(
            scenario=scenario.name,
            abi_hazard=scenario.abi_hazard,
            host="controlled" if self.controlled else "uncontrolled",
            kernel=f"Linux {self.kernel_version}" + (f" {variant}" if variant else ""),
            sent=sent,
            handled=handled,
            lost=lost,
            fingerprint_before=prints[0],
            fingerprint_after=prints[-1],
            fingerprint_changed=any(fp.differs_from(prints[0]) for fp in prints),
            outcome=outcome,
            detail=detail,
            steps=self.steps,
        )


# --- the scenarios ------------------------------------------------------------------------------------------------
def hibernate_across_upgrade(run: Run) -> None:
    ts = run.host("4.3", new=False)
    run.create(ts)
    run.exercise()
    disk = run.hibernate()
    ts.upgrade("4.14", abi_control=run.controlled)
    run.log(f"host upgraded in place to {ts.name}")
    run.start_again(disk)
    run.exercise()


def migrate_up(run: Run) -> None:
    run.create(run.host("4.3", new=False))
    run.exercise()
    run.migrate(run.host("4.14", new=True))
    run.exercise()
    disk = run.hibernate()
    run.start_again(disk)
    run.exercise()


def migrate_down(run: Run) -> None:
    run.create(run.host("4.14", new=True))
    run.exercise()
    run.migrate(run.host("4.3", new=False))
    run.exercise()


def phys_area_down(run: Run) -> None:
    pool = ("4.18", "4.17")
    run.create(run.host("4.18", new=True, pool=pool))
    assert run.kernel is not None
    run.log(f"the kernel registered its vCPU areas by {run.kernel.state.areas_by} address")
    run.exercise()
    run.migrate(run.host("4.17", new=False, pool=pool))
    run.exercise()


def upcall_down(run: Run) -> None:
    pool = ("4.17", "4.5")
    run.create(run.host("4.17", new=True, pool=pool))
    assert run.kernel is not None
    vectors = sum(run.kernel.state.upcall_vector)
    run.log(f"the kernel uses the per-vCPU upcall vector on {vectors} of {run.kernel.state.vcpus} vCPUs")
    run.exercise()
    run.migrate(run.host("4.5", new=False, pool=pool))
    run.exercise()


def kexec_on(release: str) -> Callable[[Run], None]:
    def flow(run: Run) -> None:
        run.create(run.host(release, new=True))
        run.exercise()
        run.kexec()
        run.exercise()

    flow.__name__ = f"kexec_on_{release.replace('.', '_')}"
    return flow


def _bytes(count: int) -> str:
    return f"{count} byte" if count == 1 else f"{count} bytes"


@dataclass(frozen=True)
class Scenario:
    name: str
    flow: Callable[[Run], None]
    variant: str  # how the kernel differs from the one asked for ("without FIFO"), or ""
    options: dict[str, bool] = field(default_factory=dict)
    summary: str = ""
    config: str = ""  # xl.cfg lines added to the VM's
    abi_hazard: bool = True  # False: what happens is Xen's or xl's doing, the same with or without ABI control


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hibernate-across-upgrade", hibernate_across_upgrade, "",
             summary="booted and hibernated on 4.3, host upgraded in place to 4.14, booted again"),
    Scenario("migrate-up", migrate_up, "", summary="migrated from 4.3 to 4.14, then hibernated there"),
    Scenario("migrate-down", migrate_down, "", summary="a FIFO guest on 4.14 migrated to 4.3"),
    Scenario("no-fifo-kernel", migrate_up, "without FIFO", {"fifo_support": False},
             summary="migrate-up with a kernel built without FIFO support"),
    Scenario("fifo-events-0", migrate_up, "xen.fifo_events=0", {"fifo_events": False},
             summary="migrate-up with xen.fifo_events=0 on the kernel command line"),
    Scenario("phys-area-down", phys_area_down, "",
             summary="booted on 4.18 (XENFEAT 18/19: vCPU areas by physical address), migrated to 4.17"),
    Scenario("upcall-down", upcall_down, "", config="max_grant_frames = 32\n",
             summary="booted on 4.17 (CPUID leaf 4 bit 6: the per-vCPU upcall vector), migrated to 4.5"),
    Scenario("kexec", kexec_on("4.17"), "", abi_hazard=False,
             summary="kexec on 4.17: soft reset, FIFO back to 2-level, the second kernel's init_control works"),
    Scenario("kexec-4.14", kexec_on("4.14"), "", abi_hazard=False,
             summary="kexec on 4.14, whose soft reset keeps the vCPU time areas (b80d4f8d2e is 4.17)"),
    Scenario("kexec-4.6", kexec_on("4.6"), "", abi_hazard=False,
             summary="kexec on 4.6, which has no soft reset (1a043f9dc7 is 4.7)"),
)  # fmt: skip
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


def run_scenario(name: str, controlled: bool, *, rounds: int = 50, trace: IO[str] | None = None,
                 kernel: str = DEFAULT_KERNEL) -> ScenarioResult:  # fmt: skip
    """Run one scenario on one kind of host with a guest of Linux ``kernel`` (:data:`xenabi.guest.kernels.KERNELS`);
    ``trace`` receives every host's hypercalls as JSON lines."""
    scenario = next((s for s in SCENARIOS if s.name == name), None)
    if scenario is None:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_NAMES)})")
    with tempfile.TemporaryDirectory(prefix="xenabi-scenario-") as workdir:
        run = Run(scenario.name, controlled, Path(workdir), rounds=rounds, trace=trace, kernel=kernel,
                  config=scenario.config, **scenario.options)  # fmt: skip
        try:
            scenario.flow(run)
            return run.result(scenario)
        finally:
            for ts in run.hosts:  # their domains' RAM goes back now, not when the collector next runs
                ts.hv.close()


def run_all(names: tuple[str, ...] = SCENARIO_NAMES, *, rounds: int = 50, trace: IO[str] | None = None,
            kernels: tuple[str, ...] = (DEFAULT_KERNEL,)) -> list[ScenarioResult]:  # fmt: skip
    """Every scenario of ``names`` on both kinds of host, with a guest of each of ``kernels``."""
    return [run_scenario(name, kind == "controlled", rounds=rounds, trace=trace, kernel=kernel) for name in names
            for kernel in kernels for kind in HOST_KINDS]  # fmt: skip


def controlled_runs_safe(results: list[ScenarioResult]) -> bool:
    """What the demo's exit status says: every controlled run of an ABI hazard is safe, and every scenario that is
    not one ends the same way controlled and uncontrolled (ABI control neither prevents nor causes it)."""
    others: dict[tuple[str, str], set[str]] = {}  # (scenario, kernel) -> its outcomes on both kinds of host
    for r in results:
        if not r.abi_hazard:
            others.setdefault((r.scenario, r.kernel), set()).add(r.outcome)
    hazards_safe = all(r.safe for r in results if r.host == "controlled" and r.abi_hazard)
    return hazards_safe and all(len(outcomes) == 1 for outcomes in others.values())
