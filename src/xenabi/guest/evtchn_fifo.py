"""The guest side of the FIFO ABI, as Linux's ``events_fifo.c`` does it (``spec/evtchn.md`` §5.7).

Set-up: a zeroed control block page per vCPU handed to EVTCHNOP_init_control (offset 0); event array pages added
on demand, each filled with MASKED before EVTCHNOP_expand_array. Consumption: exchange READY with 0, take the
highest-priority ready queue, consume one event (follow HEAD from Xen when the local head is 0; clear LINKED and
LINK; deliver if PENDING and not MASKED, acking by clearing PENDING), then merge READY again so that a newly
readied higher priority preempts. Unmask as modern Linux: nothing if not masked; the EVTCHNOP_unmask hypercall if
pending; otherwise clear MASKED (never while BUSY; between atomic hypercalls BUSY is always clear).
"""

from __future__ import annotations

from collections.abc import Callable

from xenabi.abi import evtchn as E
from xenabi.abi.xen import PAGE_SIZE, HYPERVISOR_event_channel_op
from xenabi.guest.pages import PageAllocator
from xenabi.guest.upcall import do_upcall, vcpu_info_slot
from xenabi.hypervisor import Hypervisor

PENDING = 1 << E.EVTCHN_FIFO_PENDING
MASKED = 1 << E.EVTCHN_FIFO_MASKED
LINKED = 1 << E.EVTCHN_FIFO_LINKED
BUSY = 1 << E.EVTCHN_FIFO_BUSY
WORDS_PER_PAGE = E.EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
_UNLINK = ~(LINKED | E.EVTCHN_FIFO_LINK_MASK) & 0xFFFFFFFF


class FifoGuest:
    """One domain's FIFO state as the guest keeps it: its control blocks, array pages and local heads."""

    def __init__(self, hv: Hypervisor, domid: int, pages: PageAllocator | None = None) -> None:
        self.hv = hv
        self.domid = domid
        self.d = hv.domain(domid)
        self.pages = pages or PageAllocator(self.d)
        self.control_block: dict[int, int] = {}  # vCPU -> byte offset of its control block
        self.array_gfns: list[int] = []
        self.local_head = [[0] * E.EVTCHN_FIFO_MAX_QUEUES for _ in range(self.d.max_vcpus)]
        # where the kernel reads each vCPU's vcpu_info (its shared_info slot until the kernel places it)
        self.vcpu_info = [vcpu_info_slot(vcpu) for vcpu in range(self.d.max_vcpus)]

    def _op(self, cmd: int, arg: object) -> int:
        return self.hv.hypercall(self.domid, HYPERVISOR_event_channel_op, cmd, arg)

    # --- set-up -------------------------------------------------------------------------------------------
    def init_control(self, vcpu: int) -> int:
        """``evtchn_fifo_alloc_control_block`` + init_control; returns the hypercall's rc."""
        gfn = self.pages.alloc()
        arg = E.InitControl(control_gfn=gfn, offset=0, vcpu=vcpu)
        rc = self._op(E.EVTCHNOP_init_control, arg)
        if rc:
            self.pages.free(gfn)
            return rc
        self.control_block[vcpu] = gfn * PAGE_SIZE
        self.local_head[vcpu] = [0] * E.EVTCHN_FIFO_MAX_QUEUES
        return 0

    def setup_port(self, port: int) -> int:
        """``evtchn_fifo_setup``: grow the array until ``port`` has a word (pages pre-filled with MASKED)."""
        if port >= E.EVTCHN_FIFO_NR_CHANNELS:
            return -22
        while len(self.array_gfns) <= port // WORDS_PER_PAGE:
            gfn = self.pages.alloc()
            base = gfn * PAGE_SIZE // 4
            self.d.memory32[base : base + WORDS_PER_PAGE] = memoryview(MASKED_PAGE).cast("I")
            rc = self._op(E.EVTCHNOP_expand_array, E.ExpandArray(array_gfn=gfn))
            if rc:
                self.pages.free(gfn)
                return rc
            self.array_gfns.append(gfn)
        return 0

    # --- event words ------------------------------------------------------------------------------------------
    def word_index(self, port: int) -> int:
        return self.array_gfns[port // WORDS_PER_PAGE] * (PAGE_SIZE // 4) + port % WORDS_PER_PAGE

    def word(self, port: int) -> int:
        return self.d.memory32[self.word_index(port)]

    def mask(self, port: int) -> None:
        self.d.memory32[self.word_index(port)] |= MASKED

    def unmask(self, port: int) -> int:
        words = self.d.memory32
        at = self.word_index(port)
        word = words[at]
        if not word & MASKED:
            return 0
        if word & PENDING:
            return self._op(E.EVTCHNOP_unmask, E.Unmask(port))
        assert not word & BUSY
        words[at] = word & ~MASKED
        return 0

    def rebind(self, port: int, vcpu: int) -> int:
        """Linux ``xen_rebind_evtchn_to_cpu``: mask, EVTCHNOP_bind_vcpu, unmask if it was unmasked."""
        was_masked = bool(self.word(port) & MASKED)
        self.mask(port)
        rc = self._op(E.EVTCHNOP_bind_vcpu, E.BindVcpu(port, vcpu))
        if not was_masked:
            self.unmask(port)
        return rc

    # --- consumption ------------------------------------------------------------------------------------------
    def upcall(self, vcpu: int, deliver: Callable[[int], None]) -> int:
        """The upcall loop on ``vcpu`` with this ABI's event handling; returns events delivered."""
        return do_upcall(self.d, self.vcpu_info[vcpu], vcpu, self.handle_events, deliver)

    def handle_events(self, vcpu: int, deliver: Callable[[int], None]) -> int:
        cb = self.control_block.get(vcpu)
        if cb is None:
            return 0
        words = self.d.memory32
        ready_at = cb // 4
        ready = words[ready_at]
        words[ready_at] = 0
        handled = 0
        while ready:
            priority = (ready & -ready).bit_length() - 1
            ready, delivered = self._consume_one(vcpu, cb, priority, ready, deliver)
            handled += delivered
            ready |= words[ready_at]
            words[ready_at] = 0
        return handled

    def _consume_one(
        self, vcpu: int, cb: int, priority: int, ready: int, deliver: Callable[[int], None]
    ) -> tuple[int, int]:
        words = self.d.memory32
        heads = self.local_head[vcpu]
        port = heads[priority]
        if port == 0:
            port = words[(cb + E.CONTROL_BLOCK_HEAD) // 4 + priority]
        at = self.word_index(port)
        old = words[at]
        words[at] = old & _UNLINK
        following = old & E.EVTCHN_FIFO_LINK_MASK
        if following == 0:
            ready &= ~(1 << priority)
        delivered = 0
        word = words[at]
        if word & PENDING and not word & MASKED:
            words[at] = word & ~PENDING  # ack
            deliver(port)
            delivered = 1
        heads[priority] = following
        return ready, delivered


MASKED_PAGE = MASKED.to_bytes(4, "little") * WORDS_PER_PAGE
