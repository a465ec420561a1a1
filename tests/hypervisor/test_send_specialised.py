"""The interdomain send is specialised for its peer at first use (``Chan.deliver``, issue 13): derived state that
must follow every change to what it was made from. Each test sends once (so the specialised send exists), changes
one input, and checks that the next event goes where Xen would put it."""

from __future__ import annotations

from xenabi.guest.evtchn_fifo import PENDING, FifoGuest
from xenabi.hypervisor import Hypervisor

from ..conftest import ev, interdomain, new_domu, port_of


def acked(hv: Hypervisor, domid: int) -> None:
    """The guest takes its upcalls: clear evtchn_upcall_pending and the 2-level pending state on every vCPU."""
    d = hv.domain(domid)
    for v in d.vcpus:
        d.memory[v.info_offset] = 0
        d.memory[v.info_offset + d.pending_sel : v.info_offset + d.pending_sel + 8] = bytes(8)
    d.memory[d.shinfo_pending : d.shinfo_pending + 512] = bytes(512)


def test_the_peers_bind_vcpu_moves_the_next_send() -> None:
    hv = Hypervisor("4.14")
    a, b = new_domu(hv), new_domu(hv, max_vcpus=2)
    pa, pb = interdomain(hv, a, b)
    acked(hv, b)
    before = [v.upcall_count for v in hv.domain(b).vcpus]
    assert ev(hv, a, "send", port=pa)[0] == 0
    assert [v.upcall_count for v in hv.domain(b).vcpus] == [before[0] + 1, before[1]]
    acked(hv, b)
    assert ev(hv, b, "bind_vcpu", port=pb, vcpu=1)[0] == 0
    assert ev(hv, a, "send", port=pa)[0] == 0
    assert [v.upcall_count for v in hv.domain(b).vcpus] == [before[0] + 1, before[1] + 1]


def test_the_peer_switching_to_fifo_moves_the_next_send() -> None:
    hv = Hypervisor("4.14")
    a, b = new_domu(hv), new_domu(hv)
    pa, pb = interdomain(hv, a, b)
    acked(hv, b)
    assert ev(hv, a, "send", port=pa)[0] == 0  # specialised for the 2-level ABI
    guest = FifoGuest(hv, b)
    assert guest.init_control(0) == 0 and guest.setup_port(pb) == 0
    guest.d.memory32[guest.word_index(pb)] = 0  # unmasked, nothing pending
    assert ev(hv, a, "send", port=pa)[0] == 0
    assert guest.word(pb) & PENDING  # the FIFO event word, not the 2-level bitmap


def test_the_peer_going_back_to_two_level_moves_the_next_send() -> None:
    hv = Hypervisor("4.14")
    a, b = new_domu(hv), new_domu(hv)
    guest = FifoGuest(hv, b)
    assert guest.init_control(0) == 0
    pa, _pb = interdomain(hv, a, b)
    assert ev(hv, a, "send", port=pa)[0] == 0  # specialised for FIFO
    hv.pause(b)
    assert ev(hv, 0, "reset", dom=b)[0] == 0  # back to 2-level; every port closed
    hv.unpause(b)
    assert hv.domain(b).evtchn_abi == "2l"
    assert ev(hv, a, "send", port=pa)[0] == 0  # a's port is UNBOUND now: dropped, not sent to the old peer
    pa2, pb2 = interdomain(hv, a, b)
    d = hv.domain(b)
    acked(hv, b)
    assert ev(hv, a, "send", port=pa2)[0] == 0
    assert d.port_ops.is_pending(d, pb2)


def test_a_closed_peer_takes_nothing_and_a_new_peer_takes_the_next_send() -> None:
    hv = Hypervisor("4.14")
    a, b, c = new_domu(hv), new_domu(hv), new_domu(hv)
    pa, pb = interdomain(hv, a, b)
    acked(hv, b)
    assert ev(hv, a, "send", port=pa)[0] == 0
    assert ev(hv, b, "close", port=pb)[0] == 0
    acked(hv, b)
    reached_b = hv.domain(b).vcpus[0].upcall_count
    assert ev(hv, a, "send", port=pa)[0] == 0  # UNBOUND now: dropped
    assert hv.domain(b).vcpus[0].upcall_count == reached_b
    assert ev(hv, a, "close", port=pa)[0] == 0
    pa2, pc = interdomain(hv, a, c)
    assert pa2 == pa  # the same port number, freed and reused: its old specialised send must be gone
    acked(hv, c)
    assert ev(hv, a, "send", port=pa2)[0] == 0
    dc = hv.domain(c)
    assert dc.port_ops.is_pending(dc, pc) and hv.domain(b).vcpus[0].upcall_count == reached_b


def test_a_xen_consumer_peer_is_notified() -> None:
    hv = Hypervisor("4.14")
    a = new_domu(hv)
    calls: list[tuple[int, int]] = []
    xen = hv.alloc_xen_event_channel(a, 0, 0, lambda domid, port: calls.append((domid, port)))
    p0 = port_of(hv, 0, "bind_interdomain", remote_dom=a, remote_port=xen)
    for _ in range(2):
        assert ev(hv, 0, "send", port=p0)[0] == 0
    assert calls == [(a, xen), (a, xen)]


def test_a_port_closed_by_its_sender_and_reused_sends_to_its_new_peer() -> None:
    hv = Hypervisor("4.14")
    a, b, c = new_domu(hv), new_domu(hv), new_domu(hv)
    pa, _pb = interdomain(hv, a, b)
    assert ev(hv, a, "send", port=pa)[0] == 0  # specialised for b
    assert ev(hv, a, "close", port=pa)[0] == 0
    acked(hv, b)
    reached_b = hv.domain(b).vcpus[0].upcall_count
    pa2, pc = interdomain(hv, a, c)
    assert pa2 == pa
    acked(hv, c)
    assert ev(hv, a, "send", port=pa2)[0] == 0
    dc = hv.domain(c)
    assert dc.port_ops.is_pending(dc, pc) and hv.domain(b).vcpus[0].upcall_count == reached_b
