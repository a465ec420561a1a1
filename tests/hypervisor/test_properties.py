"""Property tests across the event channel model.

- spec/evtchn.md §2-§3 (issue 2): random sub-ops from dom0 and two domUs keep the model's invariants.
- DESIGN.md decision 2: a gated operation changes nothing, for any arguments.
- §4.5/§5.7: random interleavings of sends, masks, unmasks, priorities, re-binds, closes and guest consumption
  never lose or duplicate an event sent to a bound port (both ABIs).
- §5.9: a FIFO domain reset back to 2-level behaves exactly like a fresh 2-level domain.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.hvm import EvtchnUpcallVector, HVMOP_set_evtchn_upcall_vector
from xenabi.abi.xen import DOMID_SELF, HYPERVISOR_event_channel_op, HYPERVISOR_hvm_op
from xenabi.guest.evtchn_2l import TwoLevelGuest
from xenabi.guest.evtchn_fifo import FifoGuest
from xenabi.hypervisor import ChanState, Hypervisor

from ..conftest import ev, new_domu

u32 = st.integers(0, 2**32 - 1)
small = st.integers(0, 70)


class EventChannelMachine(RuleBasedStateMachine):
    """Drives random sub-ops from dom0 and two domUs; checks §2-§3 invariants after every step."""

    @initialize()
    def boot(self) -> None:
        self.hv = Hypervisor("4.14", abi_control=True)
        self.doms = [0, new_domu(self.hv, max_vcpus=2), new_domu(self.hv, "pv", max_vcpus=2)]
        self.sent: dict[int, set[int]] = {domid: set() for domid in self.doms}  # ports that may be pending

    def _call(self, caller: int, op: str, **fields: int) -> tuple[int, object]:
        rc, arg = ev(self.hv, caller, op, **fields)
        assert isinstance(rc, int) and rc <= 0
        return rc, arg

    dom = st.sampled_from([0, 1, 2])

    @rule(caller=dom, dest=dom, remote=dom)
    def alloc_unbound(self, caller: int, dest: int, remote: int) -> None:
        self._call(self.doms[caller], "alloc_unbound", dom=self.doms[dest], remote_dom=self.doms[remote])

    @rule(caller=dom, remote=dom, port=small)
    def bind_interdomain(self, caller: int, remote: int, port: int) -> None:
        rc, arg = self._call(self.doms[caller], "bind_interdomain", remote_dom=self.doms[remote], remote_port=port)
        if rc == 0:
            self.sent[self.doms[caller]].add(arg.local_port)

    @rule(caller=dom, virq=st.integers(0, 30), vcpu=st.integers(0, 2))
    def bind_virq(self, caller: int, virq: int, vcpu: int) -> None:
        self._call(self.doms[caller], "bind_virq", virq=virq, vcpu=vcpu)

    @rule(caller=dom, vcpu=st.integers(0, 2))
    def bind_ipi(self, caller: int, vcpu: int) -> None:
        self._call(self.doms[caller], "bind_ipi", vcpu=vcpu)

    @rule(caller=dom, port=small)
    def close(self, caller: int, port: int) -> None:
        self._call(self.doms[caller], "close", port=port)

    @rule(caller=dom, port=small)
    def send(self, caller: int, port: int) -> None:
        domid = self.doms[caller]
        d = self.hv.domain(domid)
        if port < d.valid_evtchns:
            chn = d.chans[port]
            if chn.state == ChanState.INTERDOMAIN:
                self.sent[chn.remote_domid].add(chn.remote_port)
            elif chn.state == ChanState.IPI:
                self.sent[domid].add(port)
        self._call(domid, "send", port=port)

    @rule(caller=dom, port=small, vcpu=st.integers(0, 2))
    def bind_vcpu(self, caller: int, port: int, vcpu: int) -> None:
        self._call(self.doms[caller], "bind_vcpu", port=port, vcpu=vcpu)

    @rule(caller=dom, port=small)
    def unmask(self, caller: int, port: int) -> None:
        self._call(self.doms[caller], "unmask", port=port)

    @rule(caller=dom, dest=dom)
    def status(self, caller: int, dest: int) -> None:
        self._call(self.doms[caller], "status", dom=self.doms[dest], port=1)

    @rule(caller=dom)
    def reset(self, caller: int) -> None:
        self._call(self.doms[caller], "reset", dom=DOMID_SELF)

    @rule(caller=dom, cmd=st.integers(0, 20), data=st.binary(max_size=32))
    def garbage(self, caller: int, cmd: int, data: bytes) -> None:
        rc, out = self.hv.hypercall_raw(self.doms[caller], HYPERVISOR_event_channel_op, cmd, data)
        assert rc <= 0 and len(out) == len(data)
        if rc == 0 and cmd in (E.EVTCHNOP_bind_interdomain, E.EVTCHNOP_send, E.EVTCHNOP_bind_ipi, E.EVTCHNOP_unmask):
            self.sent[self.doms[caller]] = set(range(4096))  # raw calls may have made anything pending

    @invariant()
    def model_is_consistent(self) -> None:
        for domid in self.doms:
            d = self.hv.domain(domid)
            assert d.chans[0].state == ChanState.RESERVED
            assert d.valid_evtchns % 64 == 0 and len(d.chans) == d.valid_evtchns
            in_use = [c for c in d.chans[1:] if c.state != ChanState.FREE]
            assert d.active_evtchns == len(in_use)
            for chn in in_use:
                if chn.state == ChanState.INTERDOMAIN:
                    peer = self.hv.domain(chn.remote_domid).chans[chn.remote_port]
                    assert peer.state == ChanState.INTERDOMAIN
                    assert (peer.remote_domid, peer.remote_port) == (domid, chn.port)
            for port in range(1, d.valid_evtchns):
                if d.port_ops.is_pending(d, port):
                    assert port in self.sent[domid]


TestEventChannelMachine = EventChannelMachine.TestCase


# --- gating: hidden means nothing changes ------------------------------------------------------------------------
GATED = [(HYPERVISOR_event_channel_op, c) for c in (11, 12, 13)] + [(HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector)]


def _snapshot(hv: Hypervisor, domid: int) -> tuple:
    d = hv.domain(domid)
    chans = [(c.state, c.remote_domid, c.remote_port, c.notify_vcpu_id, c.priority, c.pending) for c in d.chans]
    return bytes(d.memory), chans, d.evtchn_abi, d.active_evtchns, [v.upcall_vector for v in d.vcpus]


@given(gate=st.sampled_from(GATED), data=st.binary(max_size=40), fields=st.tuples(u32, u32, u32))
def test_gated_operations_change_nothing(gate: tuple[int, int], data: bytes, fields: tuple[int, int, int]) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    domid = hv.create_domain(CreateDomain.for_type("hvm"), memory_mb=4)  # no feature flags: every gate closed
    hv.unpause(domid)
    ev(hv, domid, "bind_ipi", vcpu=0)
    before = _snapshot(hv, domid)
    op, cmd = gate
    assert hv.hypercall_raw(domid, op, cmd, data) == (-38, data)
    struct = E.ARG_STRUCTS[cmd] if op == HYPERVISOR_event_channel_op else EvtchnUpcallVector
    arg = struct.unpack(b"".join(f.to_bytes(4, "little") for f in fields).ljust(struct.size(), b"\x5a"))
    assert hv.hypercall(domid, op, cmd, arg) == -38
    assert _snapshot(hv, domid) == before


# --- no event lost or duplicated (both ABIs) ---------------------------------------------------------------------
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 5)),
        st.tuples(st.just("mask"), st.integers(0, 5)),
        st.tuples(st.just("unmask"), st.integers(0, 5)),
        st.tuples(st.just("priority"), st.integers(0, 5), st.integers(0, 15)),
        st.tuples(st.just("rebind"), st.integers(0, 5), st.integers(0, 1)),
        st.tuples(st.just("reopen"), st.integers(0, 5)),
        st.tuples(st.just("consume"), st.integers(0, 1)),
    ),
    max_size=60,
)


class Harness:
    """dom0 backends sending to six channels of a 2-vCPU guest, with the outstanding-event bookkeeping."""

    def __init__(self, abi: str) -> None:
        self.hv = Hypervisor("4.14", abi_control=True)
        self.domid = new_domu(self.hv, max_vcpus=2)
        if abi == "fifo":
            self.guest: FifoGuest | TwoLevelGuest = FifoGuest(self.hv, self.domid)
            for vcpu in (0, 1):
                assert self.guest.init_control(vcpu) == 0
        else:
            self.guest = TwoLevelGuest(self.hv, self.domid)
        self.abi = abi
        self.outstanding: dict[int, bool] = {}
        self.backend: list[int] = []  # dom0 port of channel i
        self.frontend: list[int] = []  # guest port of channel i
        for _ in range(6):
            gport = ev(self.hv, self.domid, "alloc_unbound", dom=self.domid, remote_dom=0)[1].port
            self._prepare(gport)
            rc, arg = ev(self.hv, 0, "bind_interdomain", remote_dom=self.domid, remote_port=gport)
            assert rc == 0
            self.backend.append(arg.local_port)
            self.frontend.append(gport)
            assert self.guest.unmask(gport) == 0

    def _prepare(self, port: int) -> None:
        if self.abi == "fifo":
            assert self.guest.setup_port(port) == 0
        else:
            self.guest.mask(port)  # Linux binds with the port masked, then unmasks it
        self.outstanding[port] = False

    def deliver(self, port: int) -> None:
        assert self.outstanding.get(port), f"port {port} delivered without an outstanding event"
        self.outstanding[port] = False

    def run(self, action: tuple) -> None:
        kind, i, *rest = action
        hv, domid, guest = self.hv, self.domid, self.guest
        if kind == "send":
            assert ev(hv, 0, "send", port=self.backend[i])[0] == 0
            self.outstanding[self.frontend[i]] = True
        elif kind == "mask":
            guest.mask(self.frontend[i])
        elif kind == "unmask":
            assert guest.unmask(self.frontend[i]) == 0
        elif kind == "priority" and self.abi == "fifo":
            assert ev(hv, domid, "set_priority", port=self.frontend[i], priority=rest[0])[0] == 0
        elif kind == "rebind":
            assert guest.rebind(self.frontend[i], rest[0]) == 0
        elif kind == "reopen":  # the frontend closes and binds again to the backend's port
            old = self.frontend[i]
            assert ev(hv, domid, "close", port=old)[0] == 0
            self.outstanding[old] = False
            if isinstance(guest, TwoLevelGuest):
                guest.own(old, None)
            rc, arg = ev(hv, domid, "bind_interdomain", remote_dom=0, remote_port=self.backend[i])
            assert rc == 0
            new = arg.local_port
            self.frontend[i] = new
            self._prepare(new)
            self.outstanding[new] = True  # bind_interdomain sets the local port pending
            assert guest.unmask(new) == 0
        elif kind == "consume":
            guest.upcall(i, self.deliver)

    def drain(self) -> None:
        for port in self.frontend:
            self.guest.unmask(port)
        for _ in range(10):
            if not sum(self.guest.upcall(vcpu, self.deliver) for vcpu in (0, 1)):
                break


@given(abi=st.sampled_from(["2l", "fifo"]), actions=ACTIONS)
def test_no_event_lost_or_duplicated(abi: str, actions: list[tuple]) -> None:
    harness = Harness(abi)
    for action in actions:
        harness.run(action)
    harness.drain()
    lost = [port for port in harness.frontend if harness.outstanding[port]]
    assert not lost, f"events lost on ports {lost}"


# --- reset back to 2-level is a fresh 2-level domain ------------------------------------------------------------
def _two_level_trace(hv: Hypervisor, domid: int, sends: list[int]) -> tuple:
    guest = TwoLevelGuest(hv, domid)
    ports = [ev(hv, domid, "bind_ipi", vcpu=0)[1].port for _ in range(8)]
    for i in sends:
        ev(hv, domid, "send", port=ports[i])
    got: list[int] = []
    guest.upcall(0, got.append)
    d = hv.domain(domid)
    return ports, got, d.evtchn_abi, d.port_ops.max_evtchns(d), d.vcpus[0].upcall_count


@given(sends=st.lists(st.integers(0, 7), max_size=20))
def test_fifo_domain_reset_behaves_like_a_fresh_2l_domain(sends: list[int]) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    fresh = new_domu(hv)
    used = new_domu(hv)
    guest = FifoGuest(hv, used)
    assert guest.init_control(0) == 0
    for _ in range(5):
        port = ev(hv, used, "bind_ipi", vcpu=0)[1].port
        guest.setup_port(port)
        guest.unmask(port)
        ev(hv, used, "send", port=port)
    assert ev(hv, used, "reset", dom=DOMID_SELF)[0] == 0
    hv.domain(used).vcpus[0].upcall_count = 0
    hv.domain(used).memory[hv.domain(used).vcpus[0].info_offset] = 0
    assert _two_level_trace(hv, used, sends) == _two_level_trace(hv, fresh, sends)


# --- arguments that are not C integers (struct API) change nothing ---------------------------------------------
junk = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.binary(max_size=3)
)


@given(cmd=st.sampled_from(list(E.EvtchnOp)), data=st.data())
def test_struct_api_with_junk_fields_never_raises_nor_leaks(cmd: E.EvtchnOp, data: st.DataObject) -> None:
    hv = Hypervisor("4.14", abi_control=True)
    domid = new_domu(hv)
    ev(hv, domid, "alloc_unbound", dom=domid, remote_dom=0)
    struct = E.ARG_STRUCTS[cmd]
    arg = struct(*(data.draw(junk) for _ in struct.FIELDS))
    rc = hv.hypercall(domid, HYPERVISOR_event_channel_op, cmd, arg)
    assert isinstance(rc, int) and rc <= 0
    for d in hv.domains.values():
        assert d.active_evtchns == sum(1 for c in d.chans[1:] if c.state != ChanState.FREE)
