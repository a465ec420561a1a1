"""The 2-level event channel ABI on guest memory (``spec/evtchn.md`` §4, [2L.c]).

``evtchn_pending`` and ``evtchn_mask`` are W words of W bits in shared_info (W = 64, or 32 for a guest with a
32-bit shared_info), port p being bit ``p % W`` of word ``p / W``; on little-endian x86 that is bit ``p % 8`` of
byte ``p / 8``, which is how the model addresses them. ``evtchn_pending_sel`` in each vCPU's vcpu_info selects
the words. Also declares :class:`PortOps`, the interface both ABIs implement (Xen's ``struct evtchn_port_ops``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from xenabi.hypervisor.upcall import vcpu_mark_events_pending

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Chan, Domain


class PortOps(Protocol):
    """Per-ABI port operations (``struct evtchn_port_ops``). ``set_priority`` is None where the ABI has none."""

    name: str

    @property
    def set_priority(self) -> Callable[[Domain, Chan, int], None] | None: ...

    def max_evtchns(self, d: Domain) -> int: ...
    def init(self, d: Domain, chn: Chan) -> None: ...
    def set_pending(self, d: Domain, vcpu_id: int, chn: Chan) -> None: ...
    def clear_pending(self, d: Domain, chn: Chan) -> None: ...
    def unmask(self, d: Domain, chn: Chan) -> None: ...
    def is_pending(self, d: Domain, port: int) -> bool: ...
    def is_masked(self, d: Domain, port: int) -> bool: ...
    def is_busy(self, d: Domain, port: int) -> bool: ...


class TwoLevel:
    """``evtchn_port_ops_2l``."""

    name = "2l"
    set_priority: Callable[[Domain, Chan, int], None] | None = None  # the 2-level ABI has no priorities

    @staticmethod
    def max_evtchns(d: Domain) -> int:
        return 1 << (2 * d.limit_shift)

    @staticmethod
    def init(d: Domain, chn: Chan) -> None:
        return None

    @staticmethod
    def set_pending(d: Domain, vcpu_id: int, chn: Chan) -> None:
        """§4.2: test-and-set PENDING; on a new, unmasked edge set the selector bit and maybe upcall."""
        port = chn.port
        memory = d.memory
        byte = port >> 3
        bit = 1 << (port & 7)
        at = d.shinfo_pending + byte
        old = memory[at]
        if old & bit:
            return
        memory[at] = old | bit
        if memory[d.shinfo_mask + byte] & bit:
            return
        # _select_word, inlined: this is the hot path of every 2-level send.
        v = d.vcpus[vcpu_id]
        word = port >> d.word_shift
        at = v.info_offset + d.pending_sel + (word >> 3)
        bit = 1 << (word & 7)
        old = memory[at]
        if old & bit:
            return
        memory[at] = old | bit
        if not memory[v.info_offset] & 1:  # evtchn_upcall_pending already set: nothing to notify
            vcpu_mark_events_pending(v)

    @staticmethod
    def clear_pending(d: Domain, chn: Chan) -> None:
        port = chn.port
        memory = d.memory
        at = d.shinfo_pending + (port >> 3)
        memory[at] &= ~(1 << (port & 7)) & 0xFF

    @staticmethod
    def unmask(d: Domain, chn: Chan) -> None:
        """§4.3: acts only if the port *was* masked and is pending."""
        port = chn.port
        memory = d.memory
        byte = port >> 3
        bit = 1 << (port & 7)
        at = d.shinfo_mask + byte
        old = memory[at]
        if not old & bit:
            return
        memory[at] = old & ~bit
        if memory[d.shinfo_pending + byte] & bit:
            _select_word(d, chn.notify_vcpu_id, port)

    @staticmethod
    def is_pending(d: Domain, port: int) -> bool:
        if port >= 1 << (2 * d.word_shift):
            return False
        return bool(d.memory[d.shinfo_pending + (port >> 3)] & (1 << (port & 7)))

    @staticmethod
    def is_masked(d: Domain, port: int) -> bool:
        if port >= 1 << (2 * d.word_shift):
            return True
        return bool(d.memory[d.shinfo_mask + (port >> 3)] & (1 << (port & 7)))

    @staticmethod
    def is_busy(d: Domain, port: int) -> bool:
        return False


def _select_word(d: Domain, vcpu_id: int, port: int) -> None:
    """Test-and-set the selector bit for ``port``'s word on the vCPU; a new bit raises the upcall."""
    v = d.vcpus[vcpu_id]
    word = port >> d.word_shift
    at = v.info_offset + d.pending_sel + (word >> 3)
    bit = 1 << (word & 7)
    memory = d.memory
    old = memory[at]
    if old & bit:
        return
    memory[at] = old | bit
    vcpu_mark_events_pending(v)


TWO_LEVEL = TwoLevel()
