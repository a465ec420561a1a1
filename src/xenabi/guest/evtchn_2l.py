"""The guest side of the 2-level ABI, as Linux's ``events_2l.c`` does it (``spec/evtchn.md`` §4.5).

Upcall loop: clear ``evtchn_upcall_pending``, handle events, repeat while it was set again. Handling first serves
this vCPU's VIRQ_TIMER port if it is active ("timer interrupt has highest priority", ``evtchn_2l_handle_events``;
issue 21), then takes the selector with an exchange, scans words round-robin from a per-vCPU cursor (the starting
word twice: its upper part first, then whole), takes ``pending & ~mask`` restricted to the ports this vCPU owns,
acks each event by clearing PENDING, then delivers it. Masking is local; unmasking follows Linux (a hypercall for a
port owned by another vCPU or for a pending HVM port, local emulation for a pending PV port).
"""

from __future__ import annotations

from collections.abc import Callable

from xenabi.abi.evtchn import BindVcpu, EVTCHNOP_bind_vcpu, EVTCHNOP_unmask, Unmask
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.guest.upcall import do_upcall, vcpu_info_slot
from xenabi.hypervisor import Hypervisor


class TwoLevelGuest:
    """One domain's 2-level event handling: per-vCPU cursors and port ownership (``cpu_evtchn_mask``)."""

    def __init__(self, hv: Hypervisor, domid: int) -> None:
        self.hv = hv
        self.domid = domid
        self.d = hv.domain(domid)
        self.cursor = [(0, 0)] * self.d.max_vcpus
        self.owner: dict[int, int] = {}  # port -> vCPU it is bound to in the guest; default vCPU0 (change via own())
        self._owned: dict[tuple[int, int], int] = {}  # (vCPU, word) -> the word's bits that vCPU owns, as needed
        self.timer_port: dict[int, int] = {}  # vCPU -> its VIRQ_TIMER port, served before the selector scan
        self._words: memoryview | None = None
        self._words_bits = 0
        # where the kernel reads each vCPU's vcpu_info (its shared_info slot until the kernel places it)
        self.vcpu_info = [vcpu_info_slot(vcpu) for vcpu in range(self.d.max_vcpus)]

    # --- bit access -------------------------------------------------------------------------------------
    def _bit(self, base: int, port: int) -> bool:
        return bool(self.d.memory[base + (port >> 3)] & (1 << (port & 7)))

    def _set(self, base: int, port: int, value: bool) -> bool:
        at = base + (port >> 3)
        bit = 1 << (port & 7)
        old = self.d.memory[at]
        self.d.memory[at] = (old | bit) if value else (old & ~bit)
        return bool(old & bit)

    def is_pending(self, port: int) -> bool:
        return self._bit(self.d.shinfo_pending, port)

    def is_masked(self, port: int) -> bool:
        return self._bit(self.d.shinfo_mask, port)

    def mask(self, port: int) -> None:
        self._set(self.d.shinfo_mask, port, True)

    def mask_all(self) -> None:
        d = self.d
        size = d.word_bits * d.word_bits // 8
        d.memory[d.shinfo_mask : d.shinfo_mask + size] = b"\xff" * size

    def unmask(self, port: int, vcpu: int = 0) -> int:
        """Linux ``evtchn_2l_unmask``; returns the hypercall's rc, or 0 when none was needed."""
        d = self.d
        if self.owner.get(port, 0) != vcpu:
            return self._unmask_hypercall(port)
        self._set(d.shinfo_mask, port, False)
        if not self.is_pending(port):
            return 0
        if d.is_hvm:
            self._set(d.shinfo_mask, port, True)  # Xen's unmask acts only on a masked port
            return self._unmask_hypercall(port)
        word = port >> d.word_shift
        info = self.vcpu_info[vcpu]
        if not self._set(info + d.pending_sel, word, True):
            d.memory[info] |= 1
        return 0

    # --- ownership (cpu_evtchn_mask) ------------------------------------------------------------------------------
    def own(self, port: int, vcpu: int | None) -> None:
        """Bind ``port`` to ``vcpu`` in the guest (None: forget it, so it defaults to vCPU 0 again)."""
        if vcpu is None:
            self.owner.pop(port, None)
        else:
            self.owner[port] = vcpu
        self._owned.clear()

    def set_owners(self, owner: dict[int, int]) -> None:
        self.owner = owner
        self._owned.clear()

    def _owned_bits(self, vcpu: int, word_idx: int) -> int:
        """The bits of one word whose ports ``vcpu`` owns: worked out once per word until ownership changes."""
        key = (vcpu, word_idx)
        bits = self._owned.get(key)
        if bits is None:
            base, owner = word_idx * self.d.word_bits, self.owner
            bits = sum(1 << bit for bit in range(self.d.word_bits) if owner.get(base + bit, 0) == vcpu)
            self._owned[key] = bits
        return bits

    def rebind(self, port: int, vcpu: int) -> int:
        """Linux ``xen_rebind_evtchn_to_cpu``: mask, EVTCHNOP_bind_vcpu, move ownership, unmask if it was unmasked
        (the unmask re-raises a pending event on the new vCPU)."""
        was_masked = self.is_masked(port)
        self.mask(port)
        rc = self.hv.hypercall(self.domid, HYPERVISOR_event_channel_op, EVTCHNOP_bind_vcpu, BindVcpu(port, vcpu))
        if rc == 0:
            self.own(port, vcpu)
        if not was_masked:
            self.unmask(port)
        return rc

    def _unmask_hypercall(self, port: int) -> int:
        return self.hv.hypercall(self.domid, HYPERVISOR_event_channel_op, EVTCHNOP_unmask, Unmask(port))

    # --- consumption ----------------------------------------------------------------------------------------
    def upcall(self, vcpu: int, deliver: Callable[[int], None]) -> int:
        """The upcall loop on ``vcpu`` with this ABI's event handling; returns events delivered."""
        return do_upcall(self.d, self.vcpu_info[vcpu], vcpu, self.handle_events, deliver)

    def _word_view(self) -> memoryview:
        """Guest memory as xen_ulong_t words (64- or 32-bit, as the domain's width is now): the selector, pending
        and mask words are read and written whole, as Linux's ``xchg`` and ``active_evtchns`` do."""
        bits = self.d.word_bits
        if self._words is None or self._words_bits != bits:
            self._words = memoryview(self.d.memory).cast("Q" if bits == 64 else "I")
            self._words_bits = bits
        return self._words

    def handle_events(self, vcpu: int, deliver: Callable[[int], None]) -> int:
        d = self.d
        bits = d.word_bits
        full = (1 << bits) - 1
        words_view = self._word_view()
        nbytes = bits // 8
        handled = 0
        timer = self.timer_port.get(vcpu)
        if timer is not None:  # the timer first, if it is active on this vCPU; the selector is left alone
            word, bit = divmod(timer, bits)
            if self._active_bits(vcpu, word, words_view) >> bit & 1:
                words_view[d.shinfo_pending // nbytes + word] &= ~(1 << bit)
                deliver(timer)
                handled = 1
        sel = (self.vcpu_info[vcpu] + d.pending_sel) // nbytes
        pending_words = words_view[sel]
        words_view[sel] = 0  # xchg(&vcpu_info->evtchn_pending_sel, 0)
        pending_base = d.shinfo_pending // nbytes
        start_word, start_bit = self.cursor[vcpu]
        word_idx, first_pass = start_word, True
        while pending_words:
            words = pending_words & (full << word_idx) & full
            if not words:
                word_idx = 0
                continue
            word_idx = (words & -words).bit_length() - 1
            active = self._active_bits(vcpu, word_idx, words_view)
            bit_idx = 0
            if word_idx == start_word and first_pass:
                bit_idx = start_bit
            rescan_start = word_idx == start_word and first_pass and start_bit != 0
            first_pass = first_pass and word_idx != start_word
            while True:
                candidates = active & (full << bit_idx) & full
                if not candidates:
                    break
                bit_idx = (candidates & -candidates).bit_length() - 1
                port = word_idx * bits + bit_idx
                words_view[pending_base + word_idx] &= ~(1 << bit_idx)  # the edge IRQ handler acks first
                deliver(port)
                handled += 1
                active &= ~(1 << bit_idx)
                bit_idx = (bit_idx + 1) % bits
                self.cursor[vcpu] = (word_idx if bit_idx else (word_idx + 1) % bits, bit_idx)
                if bit_idx == 0:
                    break
            if not rescan_start:
                pending_words &= ~(1 << word_idx)
            word_idx = (word_idx + 1) % bits
        return handled

    def _active_bits(self, vcpu: int, word_idx: int, words_view: memoryview) -> int:
        d = self.d
        nbytes = d.word_bits // 8
        active = words_view[d.shinfo_pending // nbytes + word_idx] & ~words_view[d.shinfo_mask // nbytes + word_idx]
        if self.owner:
            return active & self._owned_bits(vcpu, word_idx) if active else 0
        return active if vcpu == 0 else 0
