"""A Linux-like guest kernel whose state lives in its domain's memory (``spec/evtchn.md`` §4.5, §5.7, §5.8, §7;
``spec/abi-control.md`` §1.2, §4; ``spec/linux-guests.md``).

Linux read: the event-channel files (events_base.c, events_2l.c, events_fifo.c), manage.c and arch/x86/xen's
enlighten.c, enlighten_hvm.c, suspend_hvm.c, smp_hvm.c and time.c, as v5.x and v6.x copies and patch mails show
them (the tree at a tag cannot be fetched here; the kernel table says which facts are which). What it does, as Linux
does:

- **The kernel's version** (:mod:`xenabi.guest.kernels`: Linux 5.10 or 6.1) decides where they differ; it is kept
  in the kernel's state, so a restored or resumed kernel is the same version.
- **Boot**: XENVER_get_features once; the vCPU areas; the boot CPU's vcpu_info placed
  (``xen_hvm_smp_prepare_boot_cpu`` → ``xen_vcpu_setup``: VCPUOP_register_vcpu_info for the CPU's own vcpu_info in
  the kernel's memory; refused, 5.10 falls back to shared_info slots for good and 6.1 panics). Then
  ``xen_init_IRQ``: with ``xen.fifo_events`` on and FIFO support built in, a control block and
  EVTCHNOP_init_control for the boot CPU; any negative result means 2-level (mask every port); then, on HVM, the
  callback: 6.1's per-vCPU vector when CPUID leaf 4 bit 6 says Xen offers it, with ``HVM_PARAM_CALLBACK_IRQ`` = 1,
  else ``HVM_PARAM_CALLBACK_IRQ`` = the vector callback 0xF3 (HVMOP_set_param). Then ``xen_time_init``:
  VCPUOP_stop_periodic_timer (refused: the older clockevent, which never stops a tick again). Then the boot CPU's
  bindings, as ``xen_setup_timer`` and ``xen_smp_intr_init`` make them: VIRQ_TIMER with EVTCHNOP_set_priority at the
  highest priority (-ENOSYS under 2-level, ignored), the RESCHEDULE, CALL_FUNCTION and CALL_FUNCTION_SINGLE IPIs,
  VIRQ_DEBUG (5.10 always, 6.1 under 2-level only). Each secondary CPU then comes up in CPU-hotplug order: its
  vcpu_info, its vector (6.1, when the boot CPU has one), its bindings (CPUHP_XEN_PREPARE), its control block
  (CPUHP_XEN_EVTCHN_PREPARE, ``xen_evtchn_cpu_prepare``), and once online its periodic tick stopped (``BUG()`` if
  Xen refuses); a CPU whose vcpu_info, vector or control block fails is never brought online, and its bindings are
  undone. Then the xenstore and console ports the toolstack put in the HVM params, and one frontend channel
  (allocated unbound for a dom0 backend). FIFO array pages come from the kernel's own heap and grow as ports need
  them; failing to add the first one panics.
- **Events**: the upcall loop and the 2-level or FIFO consumer of :mod:`xenabi.guest.evtchn_2l` (this vCPU's timer
  first, as ``evtchn_2l_handle_events`` does) / :mod:`xenabi.guest.evtchn_fifo`, reading each CPU's vcpu_info where
  the kernel placed it (not where Xen keeps it: where the two differ, events go unseen); each delivered event is
  counted against the binding that owns the port. A CPU that never came online takes no events.
- **Suspend and resume**, after a restore or migration, in ``xen_suspend``'s order: the vCPU areas,
  ``xen_vcpu_restore`` (per CPU VCPUOP_is_up, down, the vcpu_info placed again, up; ``BUG()`` where Linux has one),
  the callback again (6.1's per-vCPU vectors with ``BUG_ON``, or the vector callback), the grant-table version, then
  ``xen_irq_resume``: mask everything; for FIFO re-issue init_control on each online CPU's zeroed control block
  (failure is ``BUG()``: the domain crashes) and start the array again from no pages, reusing the old ones; exactly
  the IPIs and VIRQs bound before are bound again (``BUG()`` if one cannot be); then ``xen_timer_resume`` (every
  online CPU's tick stopped again, ``BUG()`` on failure), then the devices' ports. The timer's FIFO priority is not
  set again, as Linux does not. A cancelled suspend (:meth:`LinuxKernel.cancel_suspend`) sets the callback again
  and carries on with its ports.
- **Hibernation** (``spec/linux-guests.md`` §5): the kernel takes its secondary CPUs down
  (``hibernation_snapshot``: their IPIs and VIRQs unbound, a FIFO control block kept), writes its memory image to
  its disk and powers off. A later boot runs a *boot kernel* (an ordinary boot, which may switch the domain to
  FIFO), which finds the image, quiesces its devices (their channels stay bound), takes its own secondary CPUs down
  and loads the image over memory; then the *image kernel* thaws (:meth:`LinuxKernel.thaw`): no event-channel step
  (``xen_irq_resume`` runs only after a Xen save/restore), its own tables, ports and ABI, its CPUs back through CPU
  hotplug (no init_control for a CPU that has a control block, as ``evtchn_fifo_percpu_init`` does). Nothing tells
  Xen, which keeps the boot kernel's CPU 0 bindings, device ports and every frame it registered (FIFO control blocks
  and array pages, vCPU areas, vcpu_info), in frames that now hold the image's memory: the kernel records them
  (:class:`HandOver`) and :meth:`LinuxKernel.corrupted_frames` names those Xen wrote since, with byte counts. A
  2-level image after a FIFO boot kernel loses every event that way. A boot kernel placed where the image kernel
  was (the same build, no physical KASLR: the model's default, since its allocations are deterministic) registered
  the very frames the image uses for the same things, so a FIFO image after it keeps working; a boot kernel placed
  elsewhere (``heap_gfn``) corrupts and starves a FIFO image too.
- **kexec** (:meth:`LinuxKernel.kexec`, ``spec/linux-guests.md`` §6): ``xen_hvm_shutdown`` issues
  SCHEDOP_shutdown(SHUTDOWN_soft_reset), ``BUG()`` if refused; the toolstack acts on the shutdown
  (:meth:`~xenabi.toolstack.Toolstack.handle_shutdown`), and the second kernel is an ordinary :meth:`boot`, perhaps
  elsewhere in memory, given the first kernel's :class:`HandOver`.
- The kernel never probes which operations exist, as Linux does not: the scenarios' ABI fingerprint is taken by
  the harness (:mod:`xenabi.fingerprint`).

Not modelled: starting a secondary vCPU in Xen (HVM INIT-SIPI; Xen sees the secondaries down, so placing their
vcpu_info from CPU 0 is always allowed and ``xen_vcpu_restore`` finds them down after a restore, whose stream
carries no CPU records), the platform PCI device's INTx callback when the vector callback is refused, the PV-only
IRQ_WORK IPI and VIRQ_XENPMU, the vsyscall time area (Linux registers one, for CPU 0, when the TSC is stable; the
model registers a time area for every CPU), netfront's queues and xenbus reconnection, PV kexec.

Every piece of kernel state (ABI, control blocks, array pages, heap, bindings, counters, errors) is kept in two
pages of guest RAM at :data:`KERNEL_STATE_GFN` and reloaded by :meth:`LinuxKernel.attach`, so save, restore,
migration, hibernation and kexec carry it exactly as they carry a real kernel's memory. What taking events changes
(the counters, 2-level cursors and FIFO queue heads) is written after the rest on every delivery, and the rest only
when it changes. A hypercall that fails gets Xen's errno, and the kernel records what it did about it (``errors``);
nothing it does can make the hypervisor model raise. A call on a kernel that is not running (crashed, powered off,
handed over, destroyed) raises :class:`~xenabi.errors.KernelNotRunning`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xenabi.abi import errno
from xenabi.abi import evtchn as E
from xenabi.abi.cpuid import (
    XEN_CPUID_FIRST_LEAF,
    XEN_CPUID_LEAF_HVM,
    XEN_CPUID_LEAF_PV,
    XEN_HVM_CPUID_UPCALL_VECTOR,
)
from xenabi.abi.errno import errno_name
from xenabi.abi.gnttab import GnttabOp, SetVersion
from xenabi.abi.hvm import (
    HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_STORE_EVTCHN,
    EvtchnUpcallVector,
    HVMOP_get_param,
    HVMOP_set_evtchn_upcall_vector,
    HVMOP_set_param,
    HvmParam,
    hvm_callback_vector,
)
from xenabi.abi.sched import SchedOp, SchedShutdown, ShutdownReason
from xenabi.abi.vcpu import VCPU_INFO_SIZE, RegisterVcpuInfo, VcpuOp
from xenabi.abi.version import FeatureInfo, Xenfeat, XenVer
from xenabi.abi.xen import (
    DOMID_SELF,
    PAGE_SIZE,
    VIRQ_DEBUG,
    VIRQ_TIMER,
    HYPERVISOR_event_channel_op,
    HYPERVISOR_grant_table_op,
    HYPERVISOR_hvm_op,
    HYPERVISOR_sched_op,
    HYPERVISOR_vcpu_op,
    HYPERVISOR_xen_version,
)
from xenabi.errors import KernelNotRunning, NotModelled, XenError
from xenabi.guest.evtchn_2l import TwoLevelGuest
from xenabi.guest.evtchn_fifo import FifoGuest
from xenabi.guest.kernels import DEFAULT_KERNEL, get_kernel
from xenabi.guest.pages import FIRST_FREE_GFN, PageAllocator
from xenabi.guest.upcall import vcpu_info_slot
from xenabi.hypervisor import Hypervisor
from xenabi.hypervisor.domain import XEN_PAGES

KERNEL_STATE_GFN = FIRST_FREE_GFN
KERNEL_STATE_PAGES = 2
KERNEL_HEAP_GFN = KERNEL_STATE_GFN + KERNEL_STATE_PAGES
STATE_MAGIC = b"XLNX"
STATE_HEADER = struct.Struct("<4sII")  # magic, then the lengths of the stable part and the counters after it
IMAGE_MAGIC = b"XENABI-SWSUSP-1\n"
IMAGE_USED = b"XENABI-SWSUSP-0\n"  # the signature swsusp leaves once an image has been resumed from
IMAGE_HEADER = struct.Struct("<16sII")
LINUX_UPCALL_VECTOR = 0xF3  # HYPERVISOR_CALLBACK_VECTOR
MAX_ERRORS = 16
MIN_HEAP_PAGES = 64  # what a boot needs of its own memory at most: scratch, areas, control blocks, array pages
AREA_STRIDE = 64  # each vCPU's runstate area (48 bytes) in the areas page; time areas in its second half
TIME_AREAS = PAGE_SIZE // 2
TOOLSTACK_CHANNELS = ("xenstore", "console")
IPIS = ("resched", "callfunc", "callfuncsingle")  # XEN_RESCHEDULE, XEN_CALL_FUNCTION, XEN_CALL_FUNCTION_SINGLE


class KernelStateMissing(Exception):
    """No kernel state in the domain's memory (nothing booted there)."""


@dataclass(frozen=True)
class HandOver:
    """What a two-kernel hand-over left behind: the frames the kernel that went away had registered with Xen (gfn ->
    what each is to Xen) and their bytes at the moment the next kernel took over memory. A hibernation's boot kernel
    leaves its FIFO frames (the image's bytes are recorded right after it was loaded); a kexec leaves everything
    the first kernel registered, for the toolstack's soft reset to drop or not (bytes recorded at the shutdown)."""

    frames: dict[int, str]
    snapshot: dict[int, bytes]  # each frame's bytes when the next kernel took over memory
    previous: str = "boot kernel"  # the kernel that registered the frames
    memory: str = "the image's memory"  # whose memory the frames are now


# --- the state in guest memory ------------------------------------------------------------------------------------
@dataclass
class KernelState:
    kernel: str = DEFAULT_KERNEL  # the Linux version (xenabi.guest.kernels): where 5.10 and 6.x differ
    fifo_events: bool = True  # the xen.fifo_events boot parameter
    fifo_support: bool = True  # built with FIFO support (Linux 3.14 and later)
    vcpus: int = 1
    phase: str = "running"  # running | suspended | hibernating | kexec | crashed | off
    abi: str = "2l"
    control_blocks: dict[int, int] = field(default_factory=dict)  # vCPU -> gfn
    array_gfns: list[int] = field(default_factory=list)
    heap_next: int = KERNEL_HEAP_GFN
    heap_free: list[int] = field(default_factory=list)
    local_heads: list[list[int]] = field(default_factory=list)
    cursors: list[list[int]] = field(default_factory=list)
    bindings: dict[int, list[Any]] = field(default_factory=dict)  # port -> [name, vCPU]
    upcall_vector: list[bool] = field(default_factory=list)
    vector_callback: bool = False  # xen_have_vector_callback: HVM_PARAM_CALLBACK_IRQ holds the vector callback
    vcpu_info: list[int] = field(default_factory=list)  # where each CPU's vcpu_info is read (0: it has none)
    vcpu_info_gfns: list[int] = field(default_factory=list)  # the kernel's own per-CPU vcpu_info pages
    vcpu_info_placement: bool = True  # 5.10's xen_have_vcpu_info_placement (cleared by a refusal)
    vcpuop_timer: bool = False  # VCPUOP_stop_periodic_timer worked at boot: the vcpuop clockevent is in use
    online: list[bool] = field(default_factory=list)  # CPUs brought up (a failed bring-up leaves one down)
    frozen: list[int] = field(default_factory=list)  # secondary CPUs taken down for a hibernation, to bring back
    thaws: int = 0  # hibernation resumes (no event-channel step: see the module docstring)
    handled: dict[str, int] = field(default_factory=dict)
    spurious: int = 0
    errors: list[list[str]] = field(default_factory=list)  # [operation, errno, what the kernel did]
    crash: str = ""
    boots: int = 0
    resumes: int = 0
    # what the kernel learnt of Xen at boot and keeps (xen_setup_features, the grant table, the vCPU areas)
    xen_features: int = 0  # XENVER_get_features submap 0, read once at boot
    gnttab_param: int = 0  # the grant_table.version= boot parameter (0: Linux decides)
    gnttab_version: int = 0  # the grant-table layout in use (0: none chosen yet)
    scratch_gfn: int = 0  # a page for hypercall arguments
    areas_gfn: int = 0  # the runstate and time areas of every vCPU
    areas_by: str = ""  # "phys" (VCPUOP 14/15, XENFEAT 18/19) or "linear" (VCPUOP 5/13)

    def to_bytes(self, names: tuple[str, ...] | None = None) -> bytes:
        """The fields ``names`` (all of them by default) as one JSON object. Every field already holds plain JSON
        values, so they go to json as they are: asdict's recursive deep copy produced the same bytes at several times
        the cost."""
        return _ENCODE({name: getattr(self, name) for name in names or _STATE_FIELDS}).encode()

    @classmethod
    def from_bytes(cls, *parts: bytes) -> KernelState:
        """The state from one or more JSON objects of its fields (:meth:`to_bytes`)."""
        doc: dict[str, Any] = {}
        for part in parts:
            doc.update(json.loads(part))
        doc["control_blocks"] = {int(k): v for k, v in doc["control_blocks"].items()}
        doc["bindings"] = {int(k): v for k, v in doc["bindings"].items()}
        return cls(**doc)


_STATE_FIELDS = tuple(f.name for f in fields(KernelState))
# What taking events changes, and nothing else does: written after the rest on every delivery (LinuxKernel.run),
# so that the rest is encoded only when something else changed.
_COUNTER_FIELDS = ("handled", "spurious", "cursors", "local_heads")
_STABLE_FIELDS = tuple(name for name in _STATE_FIELDS if name not in _COUNTER_FIELDS)
# The state holds plain JSON values and no cycles: skipping the encoder's cycle check is safe and a third faster.
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def read_state(hv: Hypervisor, domid: int) -> KernelState:
    d = hv.domain(domid)
    base = KERNEL_STATE_GFN * PAGE_SIZE
    magic, stable, counters = STATE_HEADER.unpack_from(d.memory, base)
    if magic != STATE_MAGIC or stable + counters > KERNEL_STATE_PAGES * PAGE_SIZE - STATE_HEADER.size:
        raise KernelStateMissing(f"d{domid}: no kernel state in memory")
    start = base + STATE_HEADER.size
    try:
        return KernelState.from_bytes(bytes(d.memory[start : start + stable]),
                                      bytes(d.memory[start + stable : start + stable + counters]))  # fmt: skip
    except (ValueError, TypeError, KeyError) as exc:
        raise KernelStateMissing(f"d{domid}: kernel state is corrupt ({exc})") from exc


# --- the kernel -------------------------------------------------------------------------------------------------
class LinuxKernel:
    """The kernel running in one domain. Build it with :meth:`boot` (a fresh boot, perhaps resuming a hibernation
    image) or :meth:`attach` (the kernel already in the domain's memory, after a restore)."""

    def __init__(self, hv: Hypervisor, domid: int, state: KernelState) -> None:
        self.hv = hv
        self.domid = domid
        self.d = hv.domain(domid)
        self.state = state
        self.version = get_kernel(state.kernel)
        self.handover: HandOver | None = None  # set on the image kernel after a hibernation hand-over
        self._stable = state.to_bytes(_STABLE_FIELDS)  # the state but its counters, as last written
        self.on_event: Callable[[str], None] | None = None  # sees each delivered event's binding (not persisted)
        self._load_ops()

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def boot(
        cls,
        hv: Hypervisor,
        domid: int,
        *,
        fifo_events: bool = True,
        fifo_support: bool = True,
        gnttab_version: int = 0,
        disk: Path | None = None,
        kernel: str = DEFAULT_KERNEL,
        heap_gfn: int = KERNEL_HEAP_GFN,
        handover: HandOver | None = None,
    ) -> LinuxKernel:
        """Boot a kernel; if ``disk`` holds a hibernation image, hand over to the kernel in it and return that.
        ``gnttab_version`` is the ``grant_table.version=`` parameter (0: Linux's own choice); ``kernel`` the
        Linux version (:data:`xenabi.guest.kernels.KERNELS`; :class:`~xenabi.errors.UnknownKernel` otherwise).
        ``heap_gfn`` is the first frame of the kernel's own memory (a kexec'd kernel is loaded elsewhere than the
        first: a kdump kernel lives in the ``crashkernel=`` region); ``handover`` what :meth:`kexec` left."""
        version = get_kernel(kernel)
        d = hv.domain(domid)
        if not isinstance(heap_gfn, int) or not KERNEL_HEAP_GFN <= heap_gfn < d.nr_pages - MIN_HEAP_PAGES:
            raise XenError(errno.EINVAL, f"heap_gfn must be a frame from {KERNEL_HEAP_GFN:#x} with room for "
                           f"{MIN_HEAP_PAGES} pages below {d.nr_pages:#x}: {heap_gfn!r}", field="heap_gfn")  # fmt: skip
        state = KernelState(kernel=version.name, fifo_events=fifo_events, fifo_support=fifo_support,
                            vcpus=d.max_vcpus, gnttab_param=gnttab_version, heap_next=heap_gfn)  # fmt: skip
        booted = cls(hv, domid, state)
        booted.handover = handover
        for step in (booted._setup_features, booted._setup_vcpu_areas, booted._smp_prepare_boot_cpu,
                     booted._xen_init_irq, booted._bring_up_cpus, booted._bind_devices,
                     booted._gnttab_request_version):  # fmt: skip
            step()
            if booted.state.phase == "crashed":
                break
        booted.state.boots += 1
        booted._save()
        if disk is not None and image_on(disk):
            return booted._resume_from_image(disk)
        return booted

    @classmethod
    def attach(cls, hv: Hypervisor, domid: int) -> LinuxKernel:
        return cls(hv, domid, read_state(hv, domid))

    # --- state ----------------------------------------------------------------------------------------------
    def _load_ops(self) -> None:
        s = self.state
        self.pages = PageAllocator(self.d, first_gfn=s.heap_next)
        self.pages.freed = list(s.heap_free)
        if s.abi == "fifo":
            fifo = FifoGuest(self.hv, self.domid, self.pages)
            fifo.control_block = {vcpu: gfn * PAGE_SIZE for vcpu, gfn in s.control_blocks.items()}
            fifo.array_gfns = list(s.array_gfns)
            if s.local_heads:
                fifo.local_head = [list(heads) for heads in s.local_heads]
            fifo.vcpu_info = s.vcpu_info
            self.ops: FifoGuest | TwoLevelGuest = fifo
        else:
            two = TwoLevelGuest(self.hv, self.domid)
            if s.cursors:
                two.cursor = [(w, b) for w, b in s.cursors]
            two.set_owners({port: vcpu for port, (_name, vcpu) in s.bindings.items()})
            two.timer_port = {vcpu: port for port, (name, vcpu) in s.bindings.items() if name == f"timer{vcpu}"}
            two.vcpu_info = s.vcpu_info
            self.ops = two

    def _save(self) -> None:
        """Write the whole state to guest memory (after anything but taking events)."""
        s = self.state
        s.heap_next, s.heap_free = self.pages.next_gfn, list(self.pages.freed)
        if isinstance(self.ops, FifoGuest):
            s.control_blocks = {vcpu: offset // PAGE_SIZE for vcpu, offset in self.ops.control_block.items()}
            s.array_gfns = list(self.ops.array_gfns)
        s.errors = s.errors[-MAX_ERRORS:]
        self._stable = s.to_bytes(_STABLE_FIELDS)
        self._save_counters()

    def _save_counters(self) -> None:
        """Write what taking events changes (the counters, the 2-level cursors, the FIFO queue heads) after the
        stable part, which stays as the last :meth:`_save` wrote it."""
        s = self.state
        if isinstance(self.ops, FifoGuest):
            s.local_heads = [list(heads) for heads in self.ops.local_head]
        else:
            s.cursors = [list(c) for c in self.ops.cursor]
        stable, counters = self._stable, s.to_bytes(_COUNTER_FIELDS)
        room = KERNEL_STATE_PAGES * PAGE_SIZE - STATE_HEADER.size
        if len(stable) + len(counters) > room:
            raise RuntimeError(f"kernel state of {len(stable) + len(counters)} bytes does not fit {room}")
        base = KERNEL_STATE_GFN * PAGE_SIZE
        header = STATE_HEADER.pack(STATE_MAGIC, len(stable), len(counters))
        self.d.memory[base : base + STATE_HEADER.size + len(stable) + len(counters)] = header + stable + counters

    def _error(self, operation: str, rc: int, reaction: str) -> None:
        self.state.errors.append([operation, errno_name(rc), reaction])

    # --- hypercalls -------------------------------------------------------------------------------------------
    def _evtchn(self, cmd: int, arg: object) -> int:
        return self.hv.hypercall(self.domid, HYPERVISOR_event_channel_op, cmd, arg)

    def _param(self, index: int) -> int:
        if not self.d.is_hvm:
            return self.d.hvm_params.get(index, 0)  # PV: start_info
        arg = HvmParam(domid=DOMID_SELF, index=index)
        rc = self.hv.hypercall(self.domid, HYPERVISOR_hvm_op, HVMOP_get_param, arg)
        return arg.value if rc == 0 else 0

    # --- boot ---------------------------------------------------------------------------------------------------
    def _scratch(self, data: bytes) -> int:
        """Put a hypercall argument in the kernel's scratch page; returns its guest address."""
        addr = self.state.scratch_gfn * PAGE_SIZE
        self.d.memory[addr : addr + len(data)] = data
        return addr

    def _raw(self, op: int, cmd: int, data: bytes, **registers: int) -> tuple[int, bytes]:
        """Issue a hypercall whose argument is a guest handle: ``data`` goes to the scratch page; returns the rc
        and the scratch bytes afterwards."""
        addr = self._scratch(data)
        rc, _ = self.hv.hypercall_raw(self.domid, op, cmd, addr.to_bytes(8, "little"), **registers)
        return rc, bytes(self.d.memory[addr : addr + len(data)])

    def _setup_features(self) -> None:
        """``xen_setup_features``: submap 0 of XENVER_get_features, read once and cached (``xen_features[]``)."""
        s = self.state
        s.scratch_gfn = self.pages.alloc()
        rc, out = self._raw(HYPERVISOR_xen_version, XenVer.get_features, FeatureInfo(0, 0).pack())
        s.xen_features = FeatureInfo.unpack(out).submap if rc == 0 else 0

    def xen_feature(self, bit: int) -> bool:
        return bool(self.state.xen_features >> bit & 1)

    def _setup_vcpu_areas(self) -> None:
        """Register each vCPU's runstate and time areas: by guest-physical address where the cached XENFEAT bits 18
        and 19 say Xen offers it (VCPUOP 14, 15), else by linear address (VCPUOP 5, 13). At boot and on every
        resume, from the bits read at boot; a failure is BUG(), as Linux's ``xen_setup_runstate_info`` does."""
        s = self.state
        if not s.areas_gfn:
            s.areas_gfn = self.pages.alloc()
        phys = self.xen_feature(Xenfeat.runstate_phys_area) and self.xen_feature(Xenfeat.vcpu_time_phys_area)
        s.areas_by = "phys" if phys else "linear"
        ops = ((VcpuOp.register_runstate_phys_area, VcpuOp.register_vcpu_time_phys_area) if phys else
               (VcpuOp.register_runstate_memory_area, VcpuOp.register_vcpu_time_memory_area))  # fmt: skip
        base = s.areas_gfn * PAGE_SIZE
        for vcpu in range(s.vcpus):
            for cmd, addr in zip(ops, (base + vcpu * AREA_STRIDE, base + TIME_AREAS + vcpu * AREA_STRIDE), strict=True):
                rc, _ = self._raw(HYPERVISOR_vcpu_op, cmd, addr.to_bytes(8, "little"), vcpuid=vcpu)
                if rc:
                    name = f"VCPUOP_{VcpuOp(cmd).name}"
                    self._error(name, rc, "BUG() in xen_setup_runstate_info")
                    self.crash(f"BUG: {name} failed for vCPU {vcpu} ({errno_name(rc)})")
                    return

    def _gnttab_need_v2(self) -> bool:
        """``gnttab_need_v2``: a PV guest asks for v2 when Xen's machine addresses are wider than v1's 32-bit frame
        numbers reach (CPUID leaf 5 ebx above 32 + 12 bits); an HVM guest when its own memory needs more than 32
        bits of frame number (never, at the model's sizes)."""
        if self.d.is_hvm:
            return self.d.nr_pages >> 32 != 0
        top = self.hv.cpuid(self.domid, XEN_CPUID_FIRST_LEAF)[0]
        if top < XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_PV:
            return False  # the information is not there: v1
        width = self.hv.cpuid(self.domid, XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_PV)[1] & 0xFF
        return width > 32 + 12

    def _gnttab_request_version(self) -> None:
        """``gnttab_request_version``, at boot and on resume: v2 if needed (or asked on the command line), else v1.
        A kernel that used v2 and is refused it panics: its grant references would mean something else."""
        s = self.state
        want = 2 if self._gnttab_need_v2() else 1
        if s.gnttab_param in (1, 2):
            want = s.gnttab_param
        rc, out = self._raw(HYPERVISOR_grant_table_op, GnttabOp.set_version, SetVersion(want).pack(), count=1)
        if rc == 0 and SetVersion.unpack(out).version == 2:
            s.gnttab_version = 2
        elif s.gnttab_version == 2:
            self._error("GNTTABOP_set_version", rc, "panic: v2 in use, only v1 available")
            self.crash(f"panic: we need grant tables version 2, but only version 1 is available ({errno_name(rc)})")
        else:
            if rc and want == 2:
                self._error("GNTTABOP_set_version", rc, "grant tables version 1")
            s.gnttab_version = 1

    def _xen_init_irq(self) -> None:
        """``xen_init_IRQ``: the boot CPU's control block only (the others come with their CPUs); any negative
        answer means 2-level."""
        s = self.state
        if s.fifo_support and s.fifo_events:
            fifo = FifoGuest(self.hv, self.domid, self.pages)
            fifo.vcpu_info = s.vcpu_info
            rc = fifo.init_control(0)
            if rc == 0:
                s.abi = "fifo"
                self.ops = fifo
                self._setup_callback()
                return
            self._error("EVTCHNOP_init_control", rc, "fall back to the 2-level ABI")
        s.abi = "2l"
        self.ops = TwoLevelGuest(self.hv, self.domid)
        self.ops.vcpu_info = s.vcpu_info
        self.ops.mask_all()
        self._setup_callback()

    def _upcall_vector_offered(self) -> bool:
        """CPUID leaf 0x40000x04 EAX bit 6 (``XEN_HVM_CPUID_UPCALL_VECTOR``): how 6.x learns the vector exists."""
        top = self.hv.cpuid(self.domid, XEN_CPUID_FIRST_LEAF)[0]
        if top < XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_HVM:
            return False
        eax = self.hv.cpuid(self.domid, XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_HVM)[0]
        return bool(eax & XEN_HVM_CPUID_UPCALL_VECTOR)

    def _setup_callback(self) -> None:
        """The end of ``xen_init_IRQ`` on HVM: how Xen is to raise the event upcall. 6.x first tries the per-vCPU
        vector (``xen_init_setup_upcall_vector``: only with the vector callback, XENFEAT ``hvm_callback_vector``,
        and when CPUID says Xen offers it); with it, ``HVM_PARAM_CALLBACK_IRQ`` = 1 ("trick toolstack to think we
        are enlightened"), whose refusal drops back to the domain-wide vector although vCPU 0's own vector stays
        set in Xen. Otherwise (and on 5.10) ``xen_setup_callback_vector``: the vector callback 0xF3 where XENFEAT
        says Xen has it; a refusal clears ``xen_have_vector_callback``, no BUG (the PCI-INTx callback of the
        platform device that would follow is not modelled). The other CPUs set their vectors as they come up
        (:meth:`_bring_up_cpu`; ``xen_cpu_up_prepare_hvm``), and all again on resume (``xen_hvm_post_suspend``)."""
        s = self.state
        s.upcall_vector = [False] * s.vcpus
        if not self.d.is_hvm:
            return
        s.vector_callback = self.xen_feature(Xenfeat.hvm_callback_vector)
        if s.vector_callback and self.version.upcall_vector and self._upcall_vector_offered():
            rc = self._set_upcall_vector(0)
            if rc == 0:
                return
            self._error("HVMOP_set_evtchn_upcall_vector", rc, "the domain-wide callback on every vCPU")
        self._setup_callback_vector()

    def _setup_callback_vector(self) -> None:
        """``xen_setup_callback_vector``."""
        s = self.state
        if not s.vector_callback:
            return
        rc = self._set_param(HVM_PARAM_CALLBACK_IRQ, hvm_callback_vector(LINUX_UPCALL_VECTOR))
        if rc:
            self._error("HVMOP_set_param", rc, "xen_have_vector_callback cleared")
            s.vector_callback = False

    def _set_param(self, index: int, value: int) -> int:
        return self.hv.hypercall(self.domid, HYPERVISOR_hvm_op, HVMOP_set_param,
                                 HvmParam(domid=DOMID_SELF, index=index, value=value))  # fmt: skip

    def _set_upcall_vector(self, vcpu: int) -> int:
        """``xen_set_upcall_vector``: the vCPU's own vector, and for CPU 0 ``HVM_PARAM_CALLBACK_IRQ`` = 1; at boot a
        refused param means no per-vCPU vectors after all (the domain-wide callback for every CPU)."""
        arg = EvtchnUpcallVector(vcpu=vcpu, vector=LINUX_UPCALL_VECTOR)
        rc = self.hv.hypercall(self.domid, HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, arg)
        if rc == 0 and vcpu == 0:
            rc = self._set_param(HVM_PARAM_CALLBACK_IRQ, 1)
            if rc:
                self._error("HVMOP_set_param", rc, "the domain-wide vector callback, vCPU 0's vector still set")
        self.state.upcall_vector[vcpu] = rc == 0
        return rc

    # --- vcpu_info (xen_vcpu_setup) ------------------------------------------------------------------------------
    def _own_vcpu_info(self, cpu: int) -> int:
        """The CPU's per-CPU vcpu_info (``xen_vcpu_info``), 64 to a page so that none crosses one."""
        page, slot = divmod(cpu, PAGE_SIZE // VCPU_INFO_SIZE)
        return self.state.vcpu_info_gfns[page] * PAGE_SIZE + slot * VCPU_INFO_SIZE

    def _smp_prepare_boot_cpu(self) -> None:
        """``xen_hvm_smp_prepare_boot_cpu``: every CPU starts on its shared_info slot; the boot CPU's vcpu_info is
        placed now (before ``xen_init_IRQ``), the others' as they come up."""
        s = self.state
        s.vcpu_info[:] = [vcpu_info_slot(cpu) for cpu in range(s.vcpus)]
        per_page = PAGE_SIZE // VCPU_INFO_SIZE
        s.vcpu_info_gfns = [self.pages.alloc() for _ in range(-(-s.vcpus // per_page))]
        self._vcpu_setup(0)

    def _vcpu_setup(self, cpu: int) -> bool:
        """``xen_vcpu_setup``: VCPUOP_register_vcpu_info for the CPU's own vcpu_info, unless (HVM) it is already
        there. Refused: 6.x panics; 5.10 stops placing vcpu_info at all and uses the CPU's shared_info slot, and a
        CPU without one (32 or more) cannot come up (-ENODEV: False)."""
        s = self.state
        own = self._own_vcpu_info(cpu)
        if self.d.is_hvm and s.vcpu_info[cpu] == own:
            return True
        if s.vcpu_info_placement:
            gfn, offset = divmod(own, PAGE_SIZE)
            rc, _ = self._raw(HYPERVISOR_vcpu_op, VcpuOp.register_vcpu_info, RegisterVcpuInfo(gfn, offset).pack(),
                              vcpuid=cpu)  # fmt: skip
            if rc == 0:
                s.vcpu_info[cpu] = own
                return True
            if self.version.vcpu_info_failure_panics:
                self._error("VCPUOP_register_vcpu_info", rc, "panic")
                self.crash(f"panic: register_vcpu_info failed: cpu={cpu} err={rc}")
                return False
            self._error("VCPUOP_register_vcpu_info", rc, "no vcpu_info placement: shared_info slots from now on")
            s.vcpu_info_placement = False
        s.vcpu_info[cpu] = vcpu_info_slot(cpu)
        return s.vcpu_info[cpu] != 0

    def _bring_up_cpus(self) -> None:
        """The boot CPU's bindings, then each secondary CPU in CPU-hotplug order: its upcall vector (6.x, when the
        boot CPU has one), its IPIs and timer (CPUHP_XEN_PREPARE), then its FIFO control block
        (CPUHP_XEN_EVTCHN_PREPARE, ``xen_evtchn_cpu_prepare``). A CPU whose vector or control block fails is never
        brought online: its bindings are undone and it takes no events."""
        s = self.state
        s.online = [False] * s.vcpus
        self._time_init()
        self._bind_cpu(0)
        s.online[0] = True
        for vcpu in range(1, s.vcpus):
            self._bring_up_cpu(vcpu)
            if s.phase == "crashed":
                return

    def _time_init(self) -> None:
        """``xen_time_init`` on the boot CPU: VCPUOP_stop_periodic_timer; if Xen takes it, the vcpuop clockevent
        (every CPU stops its tick as it comes up, and again on resume, BUG() on failure); if not, the older
        ``set_timer_op`` clockevent, which never stops a periodic tick."""
        rc = self._stop_periodic_timer(0)
        self.state.vcpuop_timer = rc == 0
        if rc:
            self._error("VCPUOP_stop_periodic_timer", rc, "the set_timer_op clockevent")

    def _stop_periodic_timer(self, cpu: int) -> int:
        return self.hv.hypercall_raw(self.domid, HYPERVISOR_vcpu_op, VcpuOp.stop_periodic_timer, bytes(8),
                                     vcpuid=cpu)[0]  # fmt: skip

    def _bring_up_cpu(self, vcpu: int) -> bool:
        """CPU hotplug for one secondary CPU (at boot, and again after a hibernation): its upcall vector (6.x), its
        bindings, then its FIFO control block; ``evtchn_fifo_percpu_init`` registers one only for a CPU that has
        none yet, so a CPU coming back online keeps the one it had, whatever Xen now thinks."""
        s = self.state
        if not self._vcpu_setup(vcpu):
            if s.phase != "crashed":
                self._error("xen_vcpu_setup", -errno.ENODEV, f"CPU {vcpu} not brought online")
            return False
        if s.upcall_vector[0]:
            rc = self._set_upcall_vector(vcpu)
            if rc:
                self._error("HVMOP_set_evtchn_upcall_vector", rc, f"CPU {vcpu} not brought online")
                return False
        self._bind_cpu(vcpu)
        if isinstance(self.ops, FifoGuest) and vcpu not in self.ops.control_block:
            rc = self.ops.init_control(vcpu)
            if rc:
                self._error("EVTCHNOP_init_control", rc, f"CPU {vcpu} not brought online")
                self._unbind_cpu(vcpu)
                return False
        s.online[vcpu] = True
        if s.vcpuop_timer:  # the new CPU's clockevent goes one-shot: its periodic tick stops, BUG() if it cannot
            rc = self._stop_periodic_timer(vcpu)
            if rc:
                self._error("VCPUOP_stop_periodic_timer", rc, "BUG() in xen_vcpuop_set_oneshot")
                self.crash(f"BUG: VCPUOP_stop_periodic_timer failed for CPU {vcpu} ({errno_name(rc)})")
        return True

    def _take_down_secondaries(self) -> list[int]:
        """``disable_nonboot_cpus`` (``freeze_secondary_cpus``): every secondary CPU goes offline, its IPIs and
        VIRQs unbound; a FIFO control block stays registered in Xen (nothing unregisters one) and allocated in the
        kernel. Returns the CPUs it took down."""
        s = self.state
        down = [vcpu for vcpu in range(1, s.vcpus) if s.online and s.online[vcpu]]
        for vcpu in down:
            self._unbind_cpu(vcpu)
            s.online[vcpu] = False
        return down

    def _bind_cpu(self, vcpu: int) -> None:
        """One CPU's bindings, as ``xen_smp_intr_init`` and ``xen_setup_timer`` make them: the RESCHEDULE,
        CALL_FUNCTION and CALL_FUNCTION_SINGLE IPIs, VIRQ_DEBUG (5.10 always; 6.x only under 2-level), VIRQ_TIMER
        at the highest FIFO priority (``xen_set_irq_priority``: -ENOSYS under 2-level, ignored). The timer comes
        first: ``xen_setup_timer`` runs before ``xen_smp_intr_init`` (``xen_time_init`` precedes the boot CPU's IPIs,
        and ``xen_cpu_up_prepare_hvm`` sets up a secondary CPU's timer first)."""
        if self._bind_virq(VIRQ_TIMER, vcpu, f"timer{vcpu}") == 0:
            port = self.port_of(f"timer{vcpu}")
            assert port is not None
            self._evtchn(E.EVTCHNOP_set_priority, E.SetPriority(port, E.EVTCHN_FIFO_PRIORITY_MAX))
        for ipi in IPIS:
            self._bind_ipi(vcpu, f"{ipi}{vcpu}")
        if self.state.abi == "2l" or self.version.virq_debug_with_fifo:
            self._bind_virq(VIRQ_DEBUG, vcpu, f"debug{vcpu}")

    def _rebind_cpu(self, vcpu: int, before: set[str]) -> int:
        """``xen_irq_resume``'s ``restore_cpu_virqs`` then ``restore_cpu_ipis``: exactly the CPU's VIRQs (in VIRQ
        order) and IPIs bound before, bound again; no priority is set again (the timer's FIFO priority is lost, a
        real Linux quirk). 0, or the errno of the first bind Xen refused."""
        virqs = ((VIRQ_TIMER, f"timer{vcpu}"), (VIRQ_DEBUG, f"debug{vcpu}"))
        for virq, name in virqs:
            if name in before:
                rc = self._bind_virq(virq, vcpu, name)
                if rc:
                    return rc
        for ipi in IPIS:
            if f"{ipi}{vcpu}" in before:
                rc = self._bind_ipi(vcpu, f"{ipi}{vcpu}")
                if rc:
                    return rc
        return 0

    def _unbind_cpu(self, vcpu: int) -> None:
        """``xen_smp_intr_free`` and the timer's teardown: the CPU's IPIs and VIRQs are closed."""
        for name in (*IPIS, "debug", "timer"):
            if self.port_of(f"{name}{vcpu}") is not None:
                self._unbind(f"{name}{vcpu}")

    def _bind_devices(self) -> None:
        """The toolstack's xenstore and console ports, and the network frontend's channel."""
        for name, param in (("xenstore", HVM_PARAM_STORE_EVTCHN), ("console", HVM_PARAM_CONSOLE_EVTCHN)):
            port = self._param(param)
            if port:
                self._attach_port(port, name, 0)
        arg = E.AllocUnbound(dom=DOMID_SELF, remote_dom=0)
        rc = self._evtchn(E.EVTCHNOP_alloc_unbound, arg)
        if rc:
            self._error("EVTCHNOP_alloc_unbound", rc, "no network frontend")
        else:
            self._attach_port(arg.port, "net", 0)

    # --- bindings (public so that tests and scenarios can make the kernel misbehave) -------------------------------
    def bind_virq(self, virq: int, vcpu: int, name: str) -> int:
        """Bind ``virq`` on ``vcpu`` under ``name`` (a driver's ``bind_virq_to_irqhandler``); Xen's answer is
        recorded and returned."""
        self._require_running("bind a VIRQ")
        return self._bind_virq(virq, vcpu, name)

    def bind_ipi(self, vcpu: int, name: str) -> int:
        self._require_running("bind an IPI")
        return self._bind_ipi(vcpu, name)

    def _bind_virq(self, virq: int, vcpu: int, name: str) -> int:
        arg = E.BindVirq(virq=virq, vcpu=vcpu)
        rc = self._evtchn(E.EVTCHNOP_bind_virq, arg)
        if rc:
            self._error("EVTCHNOP_bind_virq", rc, f"{name} not bound")
            return rc
        return self._attach_port(arg.port, name, vcpu)

    def _bind_ipi(self, vcpu: int, name: str) -> int:
        arg = E.BindIpi(vcpu=vcpu)
        rc = self._evtchn(E.EVTCHNOP_bind_ipi, arg)
        if rc:
            self._error("EVTCHNOP_bind_ipi", rc, f"{name} not bound")
            return rc
        return self._attach_port(arg.port, name, vcpu)

    def _attach_port(self, port: int, name: str, vcpu: int) -> int:
        """``xen_irq_info_setup`` + unmask: give the port an event word (FIFO), record it, unmask it."""
        if isinstance(self.ops, FifoGuest):
            first = not self.ops.array_gfns
            rc = self.ops.setup_port(port)
            if rc and first:  # evtchn_fifo_setup: without its first array page the kernel cannot go on
                self._error("EVTCHNOP_expand_array", rc, "panic")
                self.crash(f"panic: cannot add the first event array page ({errno_name(rc)})")
                return rc
            if rc:
                self._error("EVTCHNOP_expand_array", rc, f"{name} unusable; port {port} closed")
                self._evtchn(E.EVTCHNOP_close, E.Close(port))
                return rc
        else:
            self.ops.own(port, vcpu)
            if name == f"timer{vcpu}":
                self.ops.timer_port[vcpu] = port
        self.state.bindings[port] = [name, vcpu]
        self.state.handled.setdefault(name, 0)
        rc = self.ops.unmask(port) if isinstance(self.ops, FifoGuest) else self.ops.unmask(port, vcpu)
        if rc:
            self._error("EVTCHNOP_unmask", rc, f"{name} left masked")
        self._save()
        return 0

    def unbind(self, name: str) -> int:
        """``unbind_from_irq``: close the port bound under ``name`` (Xen's answer is recorded, not raised)."""
        self._require_running("unbind a port")
        return self._unbind(name)

    def _unbind(self, name: str) -> int:
        for port, (bound, vcpu) in list(self.state.bindings.items()):
            if bound == name:
                rc = self._evtchn(E.EVTCHNOP_close, E.Close(port))
                if rc:
                    self._error("EVTCHNOP_close", rc, f"{name}: port {port} forgotten anyway")
                del self.state.bindings[port]
                if isinstance(self.ops, TwoLevelGuest):
                    self.ops.own(port, None)
                    if self.ops.timer_port.get(vcpu) == port:
                        del self.ops.timer_port[vcpu]
                self._save()
                return rc
        return -errno.ENOENT

    def unmask_port(self, port: int) -> int:
        """Unmask a port the kernel may not own (a buggy driver); Xen's answer is recorded."""
        self._require_running("unmask a port")
        if isinstance(self.ops, FifoGuest):
            if port >= len(self.ops.array_gfns) * E.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE:
                rc = self._evtchn(E.EVTCHNOP_unmask, E.Unmask(port))
            else:
                rc = self.ops.unmask(port)
        else:
            self.ops.mask(port)  # make sure the unmask takes the hypercall path, as for a pending HVM port
            rc = self._evtchn(E.EVTCHNOP_unmask, E.Unmask(port))
        if rc:
            self._error("EVTCHNOP_unmask", rc, f"port {port} ignored")
        self._save()
        return rc

    def expand_array(self) -> int:
        """Ask for one more event array page (a driver that wants more ports); Xen's answer is recorded."""
        self._require_running("expand the event array")
        if not isinstance(self.ops, FifoGuest):
            return -errno.EINVAL
        rc = self.ops.setup_port(len(self.ops.array_gfns) * E.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE)
        if rc:
            self._error("EVTCHNOP_expand_array", rc, "no more ports")
        self._save()
        return rc

    def port_of(self, name: str) -> int | None:
        for port, (bound, _vcpu) in self.state.bindings.items():
            if bound == name:
                return port
        return None

    def channels(self) -> dict[str, int]:
        """The ports dom0 backends connect to: the toolstack's channels and the frontend's."""
        return {name: port for port, (name, _v) in self.state.bindings.items() if name in (*TOOLSTACK_CHANNELS, "net")}

    # --- running -----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state.phase == "running" and self.domid in self.hv.domains and self.d.shutdown_reason is None

    def _require_running(self, action: str) -> None:
        """A call that needs a live kernel, on one that is not: :class:`~xenabi.errors.KernelNotRunning`."""
        s = self.state
        if s.phase == "running" and self.domid in self.hv.domains:
            return
        why = {"crashed": f"crashed ({s.crash})", "off": "has powered off", "hibernating": "is hibernating",
               "kexec": "has kexec'd into another kernel", "suspended": "is suspended"}.get(s.phase, s.phase)
        if s.phase == "running":
            why = "has no domain any more (it was destroyed)"
        raise KernelNotRunning(f"cannot {action}: the {self.version} kernel of d{self.domid} {why}", phase=s.phase,
                               crash=s.crash)  # fmt: skip

    def send_ipi(self, vcpu: int) -> bool:
        """Send ``vcpu`` a RESCHEDULE IPI; False if it has none (it never came online)."""
        self._require_running("send an IPI")
        port = self.port_of(f"resched{vcpu}")
        if port is None or self.d.shutdown_reason is not None:
            return False
        return self._evtchn(E.EVTCHNOP_send, E.Send(port)) == 0

    def run(self, vcpu: int) -> int:
        """Let ``vcpu`` take its upcall: every pending event is handled and counted (a CPU that never came online
        takes none, nor does a domain that has shut down)."""
        self._require_running("run")
        if self.d.shutdown_reason is not None or (self.state.online and not self.state.online[vcpu]):
            return 0
        handled = self.state.handled
        bindings = self.state.bindings

        def deliver(port: int) -> None:
            binding = bindings.get(port)
            if binding is None:
                self.state.spurious += 1
                return
            handled[binding[0]] = handled.get(binding[0], 0) + 1
            if self.on_event is not None:
                self.on_event(binding[0])

        count = self.ops.upcall(vcpu, deliver)
        if count:  # nothing delivered, nothing changed: the counters, cursors and queue heads move only with events
            self._save_counters()
        return count

    # --- suspend, resume, crash -----------------------------------------------------------------------------------
    def suspend(self) -> None:
        """``xen_suspend``, before the toolstack saves or migrates the domain."""
        self._require_running("suspend")
        self.state.phase = "suspended"
        self._save()

    def cancel_suspend(self) -> None:
        """The suspend was cancelled (the toolstack did not save or move the domain; ``HYPERVISOR_suspend`` returned
        1): ``xen_hvm_post_suspend`` with ``suspend_cancelled`` sets the callback again (6.x's per-vCPU vectors with
        ``BUG_ON``, or the vector callback) and ``gnttab_resume`` runs, but there is no ``xen_irq_resume``: the
        kernel carries on in the same domain with its ports."""
        if self.state.phase != "suspended" or self.domid not in self.hv.domains:
            self._require_running("cancel a suspend")
            raise KernelNotRunning(f"cannot cancel a suspend: the {self.version} kernel of d{self.domid} is "
                                   "running, not suspended", phase=self.state.phase)  # fmt: skip
        self.state.phase = "running"
        self._post_suspend_callback()
        if self.state.phase != "crashed":
            self._gnttab_request_version()
        self._save()

    def resume(self) -> None:
        """The resume path after a save/restore or migration, in the domain the kernel now runs in, in
        ``xen_suspend``'s order: ``xen_hvm_post_suspend`` (the vCPU areas again from the XENFEAT bits cached at
        boot, then :meth:`_vcpu_restore`, then the callback: 6.x's per-vCPU vectors on every online CPU with
        ``BUG_ON``, else the vector callback), the grant-table version (``gnttab_resume``), then ``xen_irq_resume``:
        FIFO re-initialised on each online CPU (``BUG()`` on failure) and exactly the IPIs and VIRQs bound before
        re-bound (``BUG()`` if one fails), then ``xen_timer_resume`` (with the vcpuop clockevent,
        VCPUOP_stop_periodic_timer on every online CPU, ``BUG()`` on failure), then the devices' ports."""
        s = self.state
        if s.phase != "suspended" or self.domid not in self.hv.domains:
            self._require_running("resume")  # a crashed, handed-over or destroyed kernel: the error says which
            raise KernelNotRunning(f"cannot resume: the {self.version} kernel of d{self.domid} is running, not "
                                   "suspended", phase=s.phase)  # fmt: skip
        for step in (self._setup_vcpu_areas, self._vcpu_restore, self._post_suspend_callback):
            step()
            if s.phase == "crashed":
                return
        self._gnttab_request_version()
        if s.phase == "crashed":
            return
        if isinstance(self.ops, TwoLevelGuest):
            self.ops.mask_all()
        else:
            for port in s.bindings:
                if port < self._words():
                    self.ops.mask(port)
            for vcpu, offset in sorted(self.ops.control_block.items()):
                self.d.memory[offset : offset + PAGE_SIZE] = bytes(PAGE_SIZE)
                arg = E.InitControl(control_gfn=offset // PAGE_SIZE, offset=0, vcpu=vcpu)
                rc = self._evtchn(E.EVTCHNOP_init_control, arg)
                if rc:
                    self._error("EVTCHNOP_init_control", rc, "BUG() in evtchn_fifo_resume")
                    self.crash(f"BUG: EVTCHNOP_init_control failed on resume ({errno_name(rc)})")
                    return
            self.pages.freed.extend(reversed(self.ops.array_gfns))  # reused first, in their old order
            self.ops.array_gfns = []
            self.ops.local_head = [[0] * E.EVTCHN_FIFO_MAX_QUEUES for _ in range(s.vcpus)]
        before = {name for name, _vcpu in s.bindings.values() if name not in (*TOOLSTACK_CHANNELS, "net")}
        s.bindings = {}
        if isinstance(self.ops, TwoLevelGuest):
            self.ops.set_owners({})
            self.ops.timer_port = {}
        for vcpu in range(s.vcpus):
            lost = self._rebind_cpu(vcpu, before)
            if lost:
                self._error("rebind", lost, "BUG() in xen_irq_resume")
                self.crash(f"BUG: a VIRQ or IPI of CPU {vcpu} could not be bound again on resume ({errno_name(lost)})")
                return
        self._timer_resume()
        if s.phase == "crashed":
            return
        self._bind_devices()
        s.phase = "running"
        s.resumes += 1
        self._save()

    def _vcpu_restore(self) -> None:
        """``xen_vcpu_restore``: per CPU, VCPUOP_is_up; another CPU that is up goes down (``BUG()`` if it will not);
        its vcpu_info starts again from its shared_info slot and is placed again (:meth:`_vcpu_setup`: 6.x panics on
        a refusal, 5.10 says the system will hang, uses the slot and leaves the CPU down); then it comes back up
        (``BUG()`` if it will not). Before 4.7 an HVM guest's VCPUOP_is_up is -ENOSYS, which reads as down."""
        s = self.state
        for cpu in range(s.vcpus):
            other = cpu != 0
            is_up = self._vcpu_op(VcpuOp.is_up, cpu) > 0
            if other and is_up and self._vcpu_op(VcpuOp.down, cpu):
                self.crash(f"BUG: VCPUOP_down failed for CPU {cpu} in xen_vcpu_restore")
                return
            s.vcpu_info[cpu] = vcpu_info_slot(cpu)
            placed = self._vcpu_setup(cpu)
            if s.phase == "crashed":
                return
            if not placed:
                self._error("xen_vcpu_setup_restore", -errno.ENODEV, f"CPU {cpu}: the system will hang")
            elif other and is_up and self._vcpu_op(VcpuOp.up, cpu):
                self.crash(f"BUG: VCPUOP_up failed for CPU {cpu} in xen_vcpu_restore")
                return

    def _vcpu_op(self, cmd: int, cpu: int) -> int:
        return self.hv.hypercall_raw(self.domid, HYPERVISOR_vcpu_op, cmd, bytes(8), vcpuid=cpu)[0]

    def _post_suspend_callback(self) -> None:
        """The callback again (``xen_hvm_post_suspend``): 6.x with per-vCPU vectors sets each online CPU's,
        ``BUG_ON`` on failure; otherwise the vector callback, whose refusal only clears the flag."""
        s = self.state
        if not (s.upcall_vector and s.upcall_vector[0]):
            self._setup_callback_vector()
            return
        self._on_each_online_cpu(self._set_upcall_vector, "HVMOP_set_evtchn_upcall_vector", "BUG_ON in "
                                 "xen_hvm_post_suspend")  # fmt: skip

    def _timer_resume(self) -> None:
        """``xen_timer_resume``: with the vcpuop clockevent, every online CPU's periodic tick is stopped again."""
        if self.state.vcpuop_timer:
            self._on_each_online_cpu(self._stop_periodic_timer, "VCPUOP_stop_periodic_timer", "BUG() in "
                                     "xen_timer_resume")  # fmt: skip

    def _on_each_online_cpu(self, call: Callable[[int], int], operation: str, reaction: str) -> None:
        """``call`` for each online CPU in turn; the first refusal crashes the kernel (``reaction`` says where)."""
        for cpu, online in enumerate(self.state.online):
            if online:
                rc = call(cpu)
                if rc:
                    self._error(operation, rc, reaction)
                    self.crash(f"BUG: {operation} failed for vCPU {cpu} ({errno_name(rc)})")
                    return

    def _words(self) -> int:
        assert isinstance(self.ops, FifoGuest)
        return len(self.ops.array_gfns) * E.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE

    def crash(self, reason: str) -> None:
        self.state.phase = "crashed"
        self.state.crash = reason
        self._save()
        self.hv.shutdown_domain(self.domid, "crash")

    # --- hibernation ----------------------------------------------------------------------------------------------
    def hibernate(self, disk: Path) -> None:
        """``hibernate()``: the secondary CPUs go offline first (``hibernation_snapshot``), then the memory image
        (this kernel's state included) is written to ``disk`` and the domain powers off."""
        self._require_running("hibernate")
        self.state.frozen = self._take_down_secondaries()
        self.state.phase = "hibernating"
        self._save()
        runs = self._ram_runs()
        with open(disk, "wb") as out:
            out.write(IMAGE_HEADER.pack(IMAGE_MAGIC, sum(count for _start, count in runs), 0))
            memory = memoryview(self.d.memory)
            for start, count in runs:  # one write per contiguous run of RAM, straight from guest memory
                out.write(memory[start * PAGE_SIZE : (start + count) * PAGE_SIZE])
        self.state.phase = "off"
        self.hv.shutdown_domain(self.domid, "poweroff")

    def _ram_runs(self) -> list[tuple[int, int]]:
        """The guest's RAM as (first gfn, count) runs: everything but Xen's pages (one contiguous range)."""
        nr_pages = self.d.nr_pages
        before = (0, min(XEN_PAGES.start, nr_pages))
        after = (XEN_PAGES.stop, nr_pages - XEN_PAGES.stop)
        return [(start, count) for start, count in (before, after) if count > 0]

    def _resume_from_image(self, disk: Path) -> LinuxKernel:
        """``software_resume`` in the boot kernel: devices quiesced (their channels stay bound), the secondary CPUs
        taken offline, the image loaded over memory, and a jump into it (:meth:`thaw`). Nothing tells Xen: the boot
        kernel's CPU 0 bindings, device ports and every FIFO control block and event array page stay registered, in
        frames that now hold the image's data (:attr:`handover`)."""
        with open(disk, "rb") as source:
            _magic, nr_pages, _reserved = IMAGE_HEADER.unpack(source.read(IMAGE_HEADER.size))
            runs = self._ram_runs()
            if nr_pages != sum(count for _start, count in runs):
                self._error("software_resume", -errno.EINVAL, "image does not match this memory size; booted fresh")
                self._save()
                return self
            self._take_down_secondaries()
            registered = self._xen_frames()  # what Xen keeps of the boot kernel
            memory = memoryview(self.d.memory)
            for start, count in runs:  # one read per contiguous run
                view = memory[start * PAGE_SIZE : (start + count) * PAGE_SIZE]
                got = 0
                while got < len(view):
                    n = source.readinto(view[got:])
                    if not n:
                        raise OSError(f"hibernation image {disk} ends early")
                    got += n
        with open(disk, "r+b") as out:
            out.write(IMAGE_USED)
        image = LinuxKernel.attach(self.hv, self.domid)
        image.handover = HandOver(registered, {gfn: bytes(self.d.memory[gfn * PAGE_SIZE : (gfn + 1) * PAGE_SIZE])
                                               for gfn in registered})  # fmt: skip
        image.thaw()
        return image

    # --- kexec ----------------------------------------------------------------------------------------------------
    def kexec(self) -> HandOver:
        """``kernel_kexec``, the same in 5.10 and 6.1 (``spec/linux-guests.md`` §6): ``machine_shutdown`` is
        ``xen_hvm_shutdown``, which stops the other CPUs (not CPU hotplug: their bindings stay) and, a kexec being in
        progress, calls ``xen_reboot(SHUTDOWN_soft_reset)``: SCHEDOP_shutdown, ``BUG()`` if Xen refuses. The domain
        has then shut down; what follows is the toolstack's (:meth:`Toolstack.handle_shutdown
        <xenabi.toolstack.Toolstack.handle_shutdown>`), and the second kernel is an ordinary :meth:`boot` on what
        that left, given the returned :class:`HandOver`: every frame this kernel registered with Xen and its bytes
        now, so that :meth:`corrupted_frames` can name what Xen writes there later. PV kexec is not modelled."""
        self._require_running("kexec")
        if not self.d.is_hvm:
            raise NotModelled("kexec of a PV guest (Linux's PV kexec path)")
        s = self.state
        rc, _ = self._raw(HYPERVISOR_sched_op, SchedOp.shutdown, SchedShutdown(ShutdownReason.soft_reset).pack())
        if rc:
            self._error("SCHEDOP_shutdown", rc, "BUG() in xen_reboot")
            self.crash(f"BUG: SCHEDOP_shutdown(SHUTDOWN_soft_reset) failed ({errno_name(rc)})")
            return HandOver({}, {})
        s.phase = "kexec"
        self._save()
        frames = self._xen_frames()
        memory = self.d.memory
        return HandOver(frames, {gfn: bytes(memory[gfn * PAGE_SIZE : (gfn + 1) * PAGE_SIZE]) for gfn in frames},
                        previous="first kernel", memory="memory the first kernel left (a kdump kernel's dump)")

    def _xen_frames(self) -> dict[int, str]:
        """Every frame this kernel gave Xen to write into: its FIFO frames, the page of its vCPU areas and its
        vcpu_info pages."""
        s = self.state
        frames = self._fifo_frames()
        if s.areas_gfn:
            frames[s.areas_gfn] = "runstate and time areas"
        for page, gfn in enumerate(s.vcpu_info_gfns):
            if any(info // PAGE_SIZE == gfn for info in s.vcpu_info):
                frames[gfn] = f"vcpu_info page {page}"
        return frames

    def _fifo_frames(self) -> dict[int, str]:
        """The frames this kernel registered with Xen for FIFO, by gfn: what each is to Xen."""
        if not isinstance(self.ops, FifoGuest):
            return {}
        blocks = self.ops.control_block.items()
        frames = {offset // PAGE_SIZE: f"control block of vCPU {vcpu}" for vcpu, offset in blocks}
        frames |= {gfn: f"event array page {index}" for index, gfn in enumerate(self.ops.array_gfns)}
        return frames

    def thaw(self) -> None:
        """The image kernel after the jump: there is no event-channel step on hibernation resume (Linux's
        ``xen_irq_resume`` runs only after a Xen save/restore), so it keeps its own tables, ports and ABI; the
        secondary CPUs it took down before the snapshot come back through CPU hotplug."""
        s = self.state
        s.phase = "running"
        s.thaws += 1
        for vcpu in s.frozen:
            self._bring_up_cpu(vcpu)
        s.frozen = []
        self._save()

    def corrupted_frames(self) -> dict[int, tuple[str, int]]:
        """After a hand-over (hibernation or kexec): the frames the previous kernel had registered with Xen whose
        bytes changed since this kernel took over memory, with what each was to Xen and how many bytes differ. A
        frame this kernel itself registered in the same role is not counted (Xen's writes there are its own)."""
        if self.handover is None:
            return {}
        own = self._xen_frames()
        out = {}
        for gfn, role in self.handover.frames.items():
            if own.get(gfn) == role:
                continue
            now = self.d.memory[gfn * PAGE_SIZE : (gfn + 1) * PAGE_SIZE]
            changed = sum(1 for a, b in zip(now, self.handover.snapshot[gfn], strict=True) if a != b)
            if changed:
                out[gfn] = (role, changed)
        return out


def image_on(disk: Path) -> bool:
    """Whether ``disk`` holds a hibernation image not yet resumed from."""
    try:
        with open(disk, "rb") as source:
            return source.read(len(IMAGE_MAGIC)) == IMAGE_MAGIC
    except FileNotFoundError:
        return False
