"""The FIFO event channel ABI on guest memory (``spec/evtchn.md`` §3.12-§3.14, §5, [FIFO.c]).

Per-vCPU control blocks (READY word, HEAD[16]) and the event array pages live in the guest's own RAM and are read
and written there, bit for bit; Xen's private per-queue state (the tails) and ``fifo_lastq`` live in the model.
Hypercalls are atomic, so the lock-retry and cmpxchg-retry paths of the real code reduce to their sequential
effect and BUSY is always clear between operations (§8).

Release behaviour: every modelled release (4.4-4.14) sets PENDING before dropping an event for a vCPU without a
control block; Xen 4.17 moved the drop first (§5.3 step 3). ``Release.fifo_no_control_block_sets_pending``
selects between the two. EVTCHNOP_expand_array before init_control answers what the release answers (§3.13).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi import evtchn as abi
from xenabi.abi.evtchn import (
    CONTROL_BLOCK_HEAD,
    CONTROL_BLOCK_SIZE,
    EVTCHN_FIFO_EVENT_WORDS_PER_PAGE,
    EVTCHN_FIFO_LINK_BITS,
    EVTCHN_FIFO_LINK_MASK,
    EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES,
    EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_NR_CHANNELS,
    EVTCHN_FIFO_PRIORITY_DEFAULT,
    EVTCHN_FIFO_PRIORITY_MIN,
)
from xenabi.abi.xen import PAGE_SIZE
from xenabi.hypervisor.upcall import vcpu_mark_events_pending

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Chan, Domain
    from xenabi.hypervisor.hypervisor import Hypervisor

PENDING = 1 << abi.EVTCHN_FIFO_PENDING
MASKED = 1 << abi.EVTCHN_FIFO_MASKED
LINKED = 1 << abi.EVTCHN_FIFO_LINKED
BUSY = 1 << abi.EVTCHN_FIFO_BUSY
_CLEAR_LINK = ~(BUSY | EVTCHN_FIFO_LINK_MASK) & 0xFFFFFFFF
_CLEAR_PENDING = ~PENDING & 0xFFFFFFFF
_CLEAR_MASKED = ~MASKED & 0xFFFFFFFF
_WORDS_PER_PAGE_SHIFT = 10
_MAX_OFFSET = PAGE_SIZE - CONTROL_BLOCK_SIZE  # 4024: the control block must not cross its page

EINVAL, ENOENT, ENOSPC, ENOSYS, EACCES = -errno.EINVAL, -errno.ENOENT, -errno.ENOSPC, -errno.ENOSYS, -errno.EACCES


class FifoVcpu:
    """Xen's per-vCPU FIFO state: the mapped control block (byte offset in guest RAM) and the 16 queue tails."""

    __slots__ = ("control_block", "tails")

    def __init__(self) -> None:
        self.control_block: int | None = None
        self.tails = [0] * EVTCHN_FIFO_MAX_QUEUES

    def head_word(self, priority: int) -> int:
        """Index, in 32-bit words of guest RAM, of ``control_block.head[priority]``."""
        assert self.control_block is not None
        return (self.control_block + CONTROL_BLOCK_HEAD) // 4 + priority


class FifoDomain:
    """The per-domain event array: page base word indices in guest RAM, appended in order."""

    __slots__ = ("array", "num_evtchns")

    def __init__(self) -> None:
        self.array: list[int] = []
        self.num_evtchns = 0


class Fifo:
    """``evtchn_port_ops_fifo``."""

    name = "fifo"

    def __init__(self, no_control_block_sets_pending: bool) -> None:
        self.no_control_block_sets_pending = no_control_block_sets_pending

    @staticmethod
    def max_evtchns(d: Domain) -> int:
        return EVTCHN_FIFO_NR_CHANNELS

    @staticmethod
    def init(d: Domain, chn: Chan) -> None:
        """``evtchn_fifo_init`` on every bind: back to the default priority (a still-LINKED word only warns)."""
        chn.priority = EVTCHN_FIFO_PRIORITY_DEFAULT

    def set_pending(self, d: Domain, vcpu_id: int, chn: Chan) -> None:
        """§5.3."""
        port = chn.port
        fifo = d.fifo
        assert fifo is not None
        if port >= fifo.num_evtchns:
            chn.pending = True  # no event word yet: re-raised when expand_array covers the port
            return
        v = d.vcpus[vcpu_id]
        fv = v.fifo
        assert fv is not None
        if fv.control_block is None and not self.no_control_block_sets_pending:
            return  # Xen >= 4.17: dropped entirely
        words = d.memory32
        at = fifo.array[port >> _WORDS_PER_PAGE_SHIFT] + (port & (EVTCHN_FIFO_EVENT_WORDS_PER_PAGE - 1))
        word = words[at] | PENDING
        words[at] = word
        if word & (MASKED | LINKED):
            return
        if fv.control_block is None:
            return  # dropped, PENDING left set (Xen < 4.17)
        words[at] = word | LINKED
        priority = chn.priority
        old_tails = d.vcpus[chn.lastq_vcpu].fifo.tails  # type: ignore[union-attr]
        if old_tails[chn.lastq_priority] == port:
            old_tails[chn.lastq_priority] = 0  # the stale tail: the guest consumed it, that queue is empty
        chn.lastq_vcpu = vcpu_id
        chn.lastq_priority = priority
        tails = fv.tails
        tail = tails[priority]
        linked = False
        if tail:
            tail_at = fifo.array[tail >> _WORDS_PER_PAGE_SHIFT] + (tail & (EVTCHN_FIFO_EVENT_WORDS_PER_PAGE - 1))
            tail_word = words[tail_at]
            if tail_word & LINKED:  # still on the queue: append through its LINK
                words[tail_at] = (tail_word & _CLEAR_LINK) | port
                linked = True
        if not linked:
            words[fv.head_word(priority)] = port
        tails[priority] = port
        if not linked:  # a new head: READY, and an upcall on a newly set READY bit
            ready_at = fv.control_block >> 2
            ready = words[ready_at]
            bit = 1 << priority
            if not ready & bit:
                words[ready_at] = ready | bit
                if not d.memory[v.info_offset] & 1:  # evtchn_upcall_pending already set: nothing to notify
                    vcpu_mark_events_pending(v)

    @staticmethod
    def clear_pending(d: Domain, chn: Chan) -> None:
        """§5.6: PENDING only; the word stays linked and the guest skips it."""
        at = _word_index(d, chn.port)
        if at is not None:
            d.memory32[at] &= _CLEAR_PENDING

    def unmask(self, d: Domain, chn: Chan) -> None:
        """§5.5: clear MASKED, and relink if PENDING; it does not matter whether it was masked."""
        at = _word_index(d, chn.port)
        if at is None:
            return
        words = d.memory32
        word = words[at] & _CLEAR_MASKED
        words[at] = word
        if word & PENDING:
            self.set_pending(d, chn.notify_vcpu_id, chn)

    @staticmethod
    def is_pending(d: Domain, port: int) -> bool:
        at = _word_index(d, port)
        return at is not None and bool(d.memory32[at] & PENDING)

    @staticmethod
    def is_masked(d: Domain, port: int) -> bool:
        at = _word_index(d, port)
        return at is None or bool(d.memory32[at] & MASKED)

    @staticmethod
    def is_busy(d: Domain, port: int) -> bool:
        """§5.6: still LINKED, so a closed port cannot be reallocated until the guest unlinks it."""
        at = _word_index(d, port)
        return at is not None and bool(d.memory32[at] & LINKED)

    @staticmethod
    def set_priority(d: Domain, chn: Chan, priority: int) -> None:
        chn.priority = priority


def _word_index(d: Domain, port: int) -> int | None:
    fifo = d.fifo
    if fifo is None or port >= fifo.num_evtchns:
        return None
    return fifo.array[port >> _WORDS_PER_PAGE_SHIFT] + (port & (EVTCHN_FIFO_EVENT_WORDS_PER_PAGE - 1))


# --- sub-ops 11-13 -----------------------------------------------------------------------------------------
def init_control(hv: Hypervisor, cur: Domain, arg: abi.InitControl) -> int:
    """§3.12. The first call switches the whole domain to FIFO; a failure leaves it exactly as it was."""
    vcpu_id, offset, gfn = arg.vcpu, arg.offset, arg.control_gfn
    if not 0 <= vcpu_id < cur.max_vcpus:
        return ENOENT
    if not 0 <= offset <= _MAX_OFFSET:
        return EINVAL
    if offset & 7:
        return EINVAL
    if cur.fifo is None:
        if not cur.is_guest_ram(gfn):
            return EINVAL  # map_control_block failed: all FIFO state is torn down, the domain stays 2-level
        prev_evtchns = cur.port_ops.max_evtchns(cur)
        cur.fifo = FifoDomain()
        for v in cur.vcpus:
            v.fifo = FifoVcpu()
        cur.vcpus[vcpu_id].fifo.control_block = gfn * PAGE_SIZE + offset  # type: ignore[union-attr]
        was_pending = cur.port_ops.is_pending
        ports = range(1, min(prev_evtchns, cur.valid_evtchns))
        pending = [port for port in ports if was_pending(cur, port)]
        cur.port_ops = hv.fifo_ops
        cur.forget_deliverers()  # sends specialised for the 2-level ABI
        _setup_ports(cur, ports, pending)
    else:
        fv = cur.vcpus[vcpu_id].fifo
        assert fv is not None
        if fv.control_block is not None or not cur.is_guest_ram(gfn):
            return EINVAL
        fv.control_block = gfn * PAGE_SIZE + offset
    arg.link_bits = EVTCHN_FIFO_LINK_BITS
    return 0


def _setup_ports(d: Domain, ports: range, pending: list[int]) -> None:
    """``setup_ports``: 2-level pending bits become ``chn.pending``; every valid port gets the default priority."""
    chans = d.chans
    for port in pending:
        chans[port].pending = True
    for port in ports:
        chans[port].priority = EVTCHN_FIFO_PRIORITY_DEFAULT


def expand_array(hv: Hypervisor, cur: Domain, arg: abi.ExpandArray) -> int:
    """§3.13: append one page; re-raise remembered events of the ports it covers."""
    fifo = cur.fifo
    if fifo is None:
        return hv.release.expand_array_uninit_rc
    slot = fifo.num_evtchns // EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    if slot >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES:
        return ENOSPC
    gfn = arg.array_gfn
    if not cur.is_guest_ram(gfn):
        return EINVAL
    fifo.array.append(gfn * PAGE_SIZE // 4)
    fifo.num_evtchns += EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    first = slot * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    set_pending = cur.port_ops.set_pending
    for port in range(first, min(fifo.num_evtchns, cur.valid_evtchns)):
        chn = cur.chans[port]
        if chn.pending:  # bypasses the usable check, as Xen's add_page_to_event_array does
            set_pending(cur, chn.notify_vcpu_id, chn)
    return 0


def set_priority(hv: Hypervisor, cur: Domain, arg: abi.SetPriority) -> int:
    """§3.14: the new priority applies at the next link."""
    port, priority = arg.port, arg.priority
    if not 0 <= port < cur.valid_evtchns:
        return EINVAL
    setter = cur.port_ops.set_priority
    if setter is None:
        return ENOSYS
    chn = cur.chans[port]
    if not chn.usable and hv.release.unusable_ports_inert:  # XSA-343; before it any valid port takes a priority
        return EACCES
    if not 0 <= priority <= EVTCHN_FIFO_PRIORITY_MIN:
        return EINVAL
    setter(cur, chn, priority)
    return 0


def fifo_destroy(d: Domain) -> None:
    """§5.9: unmap every control block and array page; the caller switches the port ops back to 2-level.

    ``chn.pending`` is left as it is: Xen never clears it (the §3.12 quirk).
    """
    d.fifo = None
    for v in d.vcpus:
        v.fifo = None


SUBOPS: dict[int, Callable[..., int]] = {
    abi.EVTCHNOP_init_control: init_control,
    abi.EVTCHNOP_expand_array: expand_array,
    abi.EVTCHNOP_set_priority: set_priority,
}
