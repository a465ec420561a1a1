"""The default XSM policy for event channels (``spec/evtchn.md`` §1, [dummy.h] ``xsm_default_action``).

XSM_HOOK always allows. XSM_TARGET allows a domain acting on itself, a device model acting on its target, and
the control domain; anything else gets -EPERM. XSM_PRIV (hypfs) allows only the control domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xenabi.hypervisor.domain import Domain


def xsm_target(src: Domain, target: Domain) -> bool:
    return src is target or src.target == target.domid or src.privileged


def xsm_priv(src: Domain) -> bool:
    return src.privileged
