"""What xl does when a domain shuts down (``handle_domain_death``, tools/xl/xl_vmcontrol.c at RELEASE-4.17.0;
xl_cmdimpl.c at RELEASE-4.6.0 and 4.7.0): ``Toolstack.handle_shutdown``."""

from __future__ import annotations

import pytest

from xenabi.abi.hvm import HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_STORE_EVTCHN
from xenabi.errors import NotModelled, XenError
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack


def vm(release: str, body: str = "") -> tuple[Toolstack, int]:
    ts = Toolstack(Hypervisor(release))
    cfg = DomainConfig.from_xl(f'name = "vm"\ntype = "hvm"\nmemory = 8\nvcpus = 2\n{body}')
    return ts, ts.create(cfg, start=True)


def test_soft_reset_keeps_the_domain_and_makes_fresh_toolstack_ports() -> None:
    """xl 4.7+: ``on_soft_reset`` defaults to soft-reset; libxl pauses, resets and builds the domain again over
    the same memory, with new xenstore and console ports (``libxl__build_pre``)."""
    ts, domid = vm("4.17")
    d = ts.hv.domain(domid)
    d.memory[0x9000:0x9004] = b"kept"
    ts.hv.shutdown_domain(domid, "soft_reset")
    handled = ts.handle_shutdown(domid)
    assert (handled.action, handled.domid) == ("soft_reset", domid)
    assert handled.message == "Action for shutdown reason code 5 is soft-reset"
    assert ts.hv.domain(domid) is d and bytes(d.memory[0x9000:0x9004]) == b"kept"
    assert d.shutdown_reason is None and d.controller_pause_count == 0 and d.lifecycle.value == "running"
    store, console = d.hvm_params[HVM_PARAM_STORE_EVTCHN], d.hvm_params[HVM_PARAM_CONSOLE_EVTCHN]
    assert d.chans[store].remote_domid == 0 and d.chans[console].remote_domid == 0


def test_xl_before_4_7_destroys_a_domain_with_reason_code_5() -> None:
    """xl 4.6 knows reasons 0-4 only: ``Unknown shutdown reason code 5. Destroying domain.``"""
    ts, domid = vm("4.6")
    ts.hv.shutdown_domain(domid, "soft_reset")
    handled = ts.handle_shutdown(domid)
    assert (handled.action, handled.domid) == ("destroy", None)
    assert handled.message == "Unknown shutdown reason code 5. Destroying domain."
    assert domid not in ts.hv.domains and "vm" in ts.stored


def test_an_unnamed_code_is_destroyed_in_every_release() -> None:
    ts, domid = vm("4.19")
    ts.hv.shutdown_domain(domid, "code 9")
    assert ts.handle_shutdown(domid).message == "Unknown shutdown reason code 9. Destroying domain."


@pytest.mark.parametrize(("body", "reason", "action"), [
    ("", "poweroff", "destroy"),
    ("", "crash", "destroy"),
    ('on_soft_reset = "destroy"\n', "soft_reset", "destroy"),
    ('on_crash = "preserve"\n', "crash", "preserve"),
    ("", "reboot", "restart"),
])  # fmt: skip
def test_the_vms_action_for_the_reason(body: str, reason: str, action: str) -> None:
    ts, domid = vm("4.17", body)
    ts.hv.shutdown_domain(domid, reason)
    handled = ts.handle_shutdown(domid)
    assert handled.action == action
    if action == "destroy":
        assert handled.domid is None and domid not in ts.hv.domains
        assert handled.message.endswith(f"Domain {domid} needs to be cleaned up: destroying the domain")
    elif action == "preserve":
        assert handled.domid == domid and ts.hv.domain(domid).shutdown_reason == "crash"
    else:  # restart: a fresh domain from the stored config
        assert handled.domid not in (None, domid) and domid not in ts.hv.domains
        assert ts.config(handled.domid).name == "vm"


def test_a_refused_soft_reset_destroys_the_domain() -> None:
    """A PV domain cannot be soft-reset (``arch_domain_soft_reset``: -EINVAL); the re-creation fails."""
    ts = Toolstack(Hypervisor("4.17"))
    domid = ts.create(DomainConfig.from_xl('name = "pv"\ntype = "pv"\nmemory = 8\n'), start=True)
    ts.hv.shutdown_domain(domid, "soft_reset")
    handled = ts.handle_shutdown(domid)
    assert handled.domid is None and "EINVAL" in handled.message and domid not in ts.hv.domains


def test_suspend_is_left_to_the_save_and_a_running_domain_is_an_error() -> None:
    ts, domid = vm("4.17")
    with pytest.raises(XenError, match="has not shut down"):
        ts.handle_shutdown(domid)
    ts.hv.shutdown_domain(domid, "suspend")
    handled = ts.handle_shutdown(domid)
    assert (handled.action, handled.domid, handled.message) == ("none", domid, "Domain has suspended.")


def test_coredump_actions_are_not_modelled_and_change_nothing() -> None:
    ts, domid = vm("4.17", 'on_crash = "coredump-destroy"\n')
    ts.hv.shutdown_domain(domid, "crash")
    with pytest.raises(NotModelled, match="coredump_destroy"):
        ts.handle_shutdown(domid)
    assert domid in ts.hv.domains
