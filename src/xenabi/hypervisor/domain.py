"""Domains, vCPUs and event channel objects of the hypervisor model.

``Chan`` mirrors ``struct evtchn`` (``spec/evtchn.md`` §2.1), ``Domain`` the per-domain event channel fields (§2.3,
§8) and the lifecycle of ``xen/common/domain.c`` (``DESIGN.md`` decision 4): a new domain starts paused by its
controller (count 1); pause and unpause are counted up to 255; creation is finished when the count first drops to 0.

Guest memory is one contiguous writable buffer per domain; gfn ``g`` is ``[g*4096, (g+1)*4096)``. It is an
anonymous private mapping (``mmap``), so it costs nothing until the guest (or a restore) touches a page: the kernel
hands out zero pages on first touch, exactly what a fresh domain's RAM must read as. Destroying the domain gives
the pages back at once (``MADV_DONTNEED``), whatever Python objects may still refer to the buffer. The model keeps
shared_info at the fixed :data:`SHARED_INFO_GFN` (in real Xen an HVM guest chooses the gfn and a PV guest is
told the frame), and the ``vcpu_info`` of vCPUs 32 and up (which a real guest places with
VCPUOP_register_vcpu_info) on the pages after it. Those pages belong to Xen, not to guest RAM: a guest cannot
hand them to init_control or expand_array.
"""

from __future__ import annotations

import contextlib
import mmap
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from xenabi.abi.domctl import CreateDomain, GuestType
from xenabi.abi.evtchn import EVTCHN_FIFO_PRIORITY_DEFAULT
from xenabi.abi.vcpu import Runstate
from xenabi.abi.xen import (
    NR_VIRQS,
    PAGE_SIZE,
    SHARED_INFO_EVTCHN_PENDING,
    VCPU_INFO_SIZE,
    XEN_LEGACY_MAX_VCPUS,
    evtchn_mask_offset,
    pending_sel_offset,
)
from xenabi.policy import AbiPolicy

if TYPE_CHECKING:
    from xenabi.hypervisor.evtchn_2l import PortOps
    from xenabi.hypervisor.evtchn_fifo import FifoDomain, FifoVcpu
    from xenabi.hypervisor.gnttab import GrantTable
    from xenabi.hypervisor.vcpu import VcpuAreas
    from xenabi.releases import Release

SHARED_INFO_GFN = 1
VCPU_INFO_GFN = SHARED_INFO_GFN + 1  # vcpu_info of vCPUs >= 32, 64 to a page
MAX_VCPUS = 128
XEN_PAGES = range(SHARED_INFO_GFN, VCPU_INFO_GFN + (MAX_VCPUS - XEN_LEGACY_MAX_VCPUS) // 64)
MAX_PAUSE_COUNT = 255
INT_MAX = 0x7FFFFFFF


class ChanState(IntEnum):
    """``ECS_*`` (§2.2)."""

    FREE = 0
    RESERVED = 1
    UNBOUND = 2
    INTERDOMAIN = 3
    PIRQ = 4
    VIRQ = 5
    IPI = 6


FREE, RESERVED, UNBOUND, INTERDOMAIN, PIRQ, VIRQ, IPI = (int(s) for s in ChanState)


class Chan:
    """One event channel (``struct evtchn``). ``remote_domid`` is the UNBOUND remote or the INTERDOMAIN peer."""

    __slots__ = (
        "deliver",
        "lastq_priority",
        "lastq_vcpu",
        "notify_vcpu_id",
        "peer",
        "pending",
        "pirq",
        "port",
        "priority",
        "remote_domid",
        "remote_port",
        "state",
        "virq",
        "xen_consumer",
    )

    def __init__(self, port: int) -> None:
        self.port = port
        self.state = FREE
        self.xen_consumer = 0
        self.remote_domid = 0
        self.remote_port = 0
        # INTERDOMAIN: (remote domain, remote channel), derived from remote_domid/remote_port at bind time so that a
        # send need not look them up; cleared whenever the channel is freed or closed (close, reset, destroy)
        self.peer: tuple[Domain, Chan] | None = None
        # INTERDOMAIN sender side: the send specialised at first use for the peer's ABI and vCPU (the peer's
        # set_pending, or its Xen consumer, bound to its arguments); derived state, dropped whenever any of them can
        # change (the peer's bind_vcpu, its domain switching ABI, close, reset, destroy)
        self.deliver: Callable[[], None] | None = None
        self.pirq = 0
        self.virq = 0
        self.notify_vcpu_id = 0
        self.pending = False  # FIFO: pending while no event-array page covers the port
        self.priority = EVTCHN_FIFO_PRIORITY_DEFAULT
        self.lastq_vcpu = 0  # fifo_lastq starts as vCPU0, priority 0
        self.lastq_priority = 0

    @property
    def usable(self) -> bool:
        """``evtchn_usable``: no Xen consumer and a state above RESERVED."""
        return not self.xen_consumer and self.state > RESERVED

    def __repr__(self) -> str:
        return f"Chan(port={self.port}, state={ChanState(self.state).name})"


class UpcallVia(Enum):
    """How an upcall reached a vCPU: the domain-wide callback, or the vCPU's own HVM vector."""

    DOMAIN_CALLBACK = "callback"
    VCPU_VECTOR = "vector"


@dataclass(frozen=True, slots=True)
class Upcall:
    via: UpcallVia
    vector: int | None = None


UPCALL_LOG_LENGTH = 256
PV_PERIODIC_PERIOD_NS = 10_000_000  # a PV vCPU starts with a 10 ms periodic tick (pv_vcpu_initialise); HVM with none


def shared_info_vcpu_info(vcpu_id: int) -> int:
    """The guest address of ``vcpu_info[vcpu_id]`` in shared_info (vCPUs 0-31)."""
    return SHARED_INFO_GFN * PAGE_SIZE + vcpu_id * VCPU_INFO_SIZE


class Vcpu:
    __slots__ = (
        "areas",
        "domain",
        "fifo",
        "info_offset",
        "initialised",
        "periodic_period_ns",
        "runstate",
        "runstate_time",
        "state_entry_time",
        "up",
        "upcall_count",
        "upcall_vector",
        "upcalls",
        "vcpu_id",
        "virq_to_evtchn",
    )

    def __init__(self, domain: Domain, vcpu_id: int) -> None:
        self.domain = domain
        self.vcpu_id = vcpu_id
        self.info_offset = self.default_info_offset
        self.virq_to_evtchn = [0] * NR_VIRQS
        self.upcall_vector = 0  # HVMOP_set_evtchn_upcall_vector; 0 = use the domain's callback
        self.upcall_count = 0
        self.upcalls: deque[Upcall] = deque(maxlen=UPCALL_LOG_LENGTH)
        self.fifo: FifoVcpu | None = None
        # vcpu_op's state (xenabi.hypervisor.vcpu): vCPU 0 is up from creation, the others once brought up
        self.up = vcpu_id == 0
        self.initialised = self.up  # has had a context (is_initialised): vCPU 0 from the build, others once up
        self.periodic_period_ns = 0 if domain.is_hvm else PV_PERIODIC_PERIOD_NS
        self.runstate = Runstate.offline
        self.state_entry_time = 0
        self.runstate_time = [0, 0, 0, 0]  # ns spent in each Runstate
        self.areas: VcpuAreas | None = None  # registered areas; None until the first registration (the fast path)

    @property
    def default_info_offset(self) -> int:
        """Where the vCPU's vcpu_info is until the guest places it, and where unmap_vcpu_info puts it back (a soft
        reset): its slot in shared_info, or for vCPUs from 32 the model's vcpu_info pages."""
        vcpu_id = self.vcpu_id
        if vcpu_id < XEN_LEGACY_MAX_VCPUS:
            return shared_info_vcpu_info(vcpu_id)
        return VCPU_INFO_GFN * PAGE_SIZE + (vcpu_id - XEN_LEGACY_MAX_VCPUS) * VCPU_INFO_SIZE

    def __repr__(self) -> str:
        return f"Vcpu(d{self.domain.domid}v{self.vcpu_id})"


# Not reserving swap for the whole mapping: the host's own memory accounting (Hypervisor.free_memory_mb) decides
# what fits, and the kernel's overcommit heuristic would otherwise refuse a large but untouched domain.
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform.startswith("linux") else 0)
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14; Python 3.11's mmap does not name it


def allocate_ram(nbytes: int) -> mmap.mmap:
    """Guest RAM: zero-filled, private, and backed by memory only where it has been written. Raises ``MemoryError``
    when the machine cannot even map it (the hypervisor turns that into -ENOMEM)."""
    try:
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | MAP_NORESERVE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, OverflowError, ValueError) as exc:
        raise MemoryError(f"cannot map {nbytes} bytes of guest RAM: {exc}") from exc


class Lifecycle(Enum):
    CREATED = "created"  # paused by the controller since creation, never run
    RUNNING = "running"
    PAUSED = "paused"
    SHUT_DOWN = "shut down"  # SCHEDOP_shutdown or domain_crash: the vCPUs stop until the toolstack acts
    DYING = "dying"


@dataclass(frozen=True, slots=True)
class Gating:
    """What the feature registry hides from a domain (``xenabi.abi.features``): the keys of every hidden row."""

    entry: frozenset[tuple[int, int]]
    late: frozenset[tuple[int, ...]]
    exposed: frozenset[str]


class Domain:
    """A domain: its configuration, policy, memory, vCPUs and event channel state."""

    def __init__(
        self,
        domid: int,
        config: CreateDomain,
        policy: AbiPolicy,
        gating: Gating,
        memory_mb: int,
        *,
        release: Release,
        privileged: bool = False,
        nr_pirqs: int = 0,
    ) -> None:
        self.domid = domid
        self.release = release  # the host's: the release-table fields the event channel code reads
        self.config = config
        self.guest_type: GuestType = config.guest_type
        self.is_hvm = config.is_hvm  # is_hvm_domain(): HVM and PVH
        self.policy = policy
        self.set_gating(gating)
        self.privileged = privileged
        self.handle = config.handle  # 16 bytes, checked at creation
        self.target: int | None = None  # XEN_DOMCTL_set_target: the domain this one is device model for
        self.memory_mb = memory_mb
        self.memory = allocate_ram(memory_mb << 20)
        self.memory32 = memoryview(self.memory).cast("I")  # FIFO event words and control blocks
        self.nr_pages = len(self.memory) // PAGE_SIZE
        self.max_vcpus = config.max_vcpus
        self.vcpus = [Vcpu(self, i) for i in range(config.max_vcpus)]
        self.controller_pause_count = 1
        self.creation_finished = False
        self.is_dying = False
        self.shutdown_reason: str | None = None  # a SHUTDOWN_* name ("poweroff", "soft_reset"...) or "code N"
        # The 2-level port limit: it follows the guest's width when that is latched later (Xen 4.3 and from
        # XSA-342) or stays what it was at creation (4.4.0-4.14.0): Release.twolevel_limit_follows_width.
        self.limit_shift = 6
        self.set_word_bits(64)
        # event channels (§2.3); evtchn_init (§2.4) fills these in
        self.max_evtchn_port = min(config.max_evtchn_port & 0xFFFFFFFF, INT_MAX)
        self.chans: list[Chan] = []
        self.valid_evtchns = 0
        self.active_evtchns = 0
        self.xen_evtchns = 0
        self.next_evtchn = 0
        self.free_hint = 0  # every port below it is not FREE
        self.port_ops: PortOps
        self.fifo: FifoDomain | None = None
        self.nr_pirqs = nr_pirqs
        self.pirq_to_port: dict[int, int] = {}
        self.permitted_pirqs: set[int] | None = None if privileged else set()  # None: every pirq
        # What the toolstack hands the guest (spec/evtchn.md §7): HVM params for HVM containers, and for PV the
        # start_info fields, which the model keeps in the same table under the HVM param numbers.
        self.hvm_params: dict[int, int] = {}
        self.grant_table: GrantTable  # set by the hypervisor once the domain is built (xenabi.hypervisor.gnttab)
        # State saved and restored as opaque blobs (spec/streams.md §3): X86_TSC_INFO and the device model's.
        self.tsc_info: tuple[int, int, int, int] | None = None  # mode, khz, nsec, incarnation
        self.emulator_context: bytes | None = None
        self.emulator_xenstore: dict[str, str] = {}

    def set_gating(self, gating: Gating) -> None:
        self.hidden_ops = gating.entry  # answered -ENOSYS at hypercall entry
        self.hidden_late = gating.late  # asked by a handler after its first check (AbiFeature.late/value_gates)
        self.exposed_features = gating.exposed  # the registry features this domain can use

    # --- 2-level layout --------------------------------------------------------------------------------
    def set_word_bits(self, bits: int) -> None:
        """Latch the guest's xen_ulong_t width (``has_32bit_shinfo``): 64 or 32 bits, 4096 or 1024 channels."""
        if bits not in (32, 64):
            raise ValueError("word_bits must be 32 or 64")
        self.word_bits = bits
        self.word_shift = bits.bit_length() - 1
        if self.release.twolevel_limit_follows_width:
            self.limit_shift = self.word_shift
        base = SHARED_INFO_GFN * PAGE_SIZE
        self.shinfo_pending = base + SHARED_INFO_EVTCHN_PENDING
        self.shinfo_mask = base + evtchn_mask_offset(bits)
        self.pending_sel = pending_sel_offset(bits)

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def lifecycle(self) -> Lifecycle:
        if self.is_dying:
            return Lifecycle.DYING
        if self.shutdown_reason is not None:
            return Lifecycle.SHUT_DOWN
        if self.controller_pause_count == 0:
            return Lifecycle.RUNNING
        return Lifecycle.PAUSED if self.creation_finished else Lifecycle.CREATED

    @property
    def evtchn_abi(self) -> str:
        """``'2l'`` or ``'fifo'``: the port ops in force."""
        return self.port_ops.name

    def populate_memory(self, start: int, length: int) -> None:
        """Fault the pages of [start, start + length) in at once (``MADV_POPULATE_WRITE``, Linux 5.14+), just before
        a restore writes them: one call instead of a fault per page. Only pages that are arriving are populated, so
        a stream that claims much RAM and sends little costs only what it sends. Where the kernel lacks the call,
        pages fault in as they are written: the same memory, only slower."""
        with contextlib.suppress(OSError, ValueError):
            self.memory.madvise(MADV_POPULATE_WRITE, start, length)

    def forget_deliverers(self) -> None:
        """The domain changed ABI: every send specialised for one of its channels (``Chan.deliver``) is stale."""
        for chn in self.chans:
            if chn.peer is not None:
                chn.peer[1].deliver = None

    def release_memory(self) -> None:
        """Give the RAM back to the host now (the domain is being destroyed): the mapping stays valid for any
        lingering reference, reading as zeros, but holds no memory."""
        if self.memory:
            self.memory.madvise(mmap.MADV_DONTNEED)

    def is_guest_ram(self, gfn: int) -> bool:
        """Whether ``gfn`` is a RAM page the guest owns (and so can map for FIFO); Xen's pages are not."""
        return 0 <= gfn < self.nr_pages and gfn not in XEN_PAGES

    def page(self, gfn: int) -> memoryview:
        return memoryview(self.memory)[gfn * PAGE_SIZE : (gfn + 1) * PAGE_SIZE]

    def __repr__(self) -> str:
        return f"Domain(d{self.domid}, {self.guest_type.value}, {self.evtchn_abi})"
