"""``sched_op`` (hypercall 29): the sub-op numbers, ``struct sched_shutdown`` and the shutdown reasons
(``xen/include/public/sched.h``; ``spec/linux-guests.md`` §6).

``SHUTDOWN_soft_reset`` (5) is in the header from Xen 4.7 (1a043f9dc7), but ``SCHEDOP_shutdown`` never checked the
reason: every release stores whatever byte the guest passes as the domain's shutdown code, and it is the toolstack
that knows the code or not (xl before 4.7 destroys a domain that shuts down with 5, as with any code it does not
know).
"""

from __future__ import annotations

from enum import IntEnum

from xenabi.abi.cstruct import CStruct, cstruct


class SchedOp(IntEnum):
    yield_ = 0
    block = 1
    shutdown = 2
    poll = 3
    remote_shutdown = 4
    shutdown_code = 5
    watchdog = 6
    pin_override = 7


class ShutdownReason(IntEnum):
    poweroff = 0
    reboot = 1
    suspend = 2
    crash = 3
    watchdog = 4
    soft_reset = 5  # 4.7 (1a043f9dc7)


def shutdown_reason_name(code: int) -> str:
    """The name the model keeps for a shutdown code: the header's, or ``code N`` for one no header names."""
    try:
        return ShutdownReason(code).name
    except ValueError:
        return f"code {code}"


@cstruct("Q")
class SchedOpArg(CStruct):
    """The model's form of the hypercall's argument: the guest address of the sub-op's struct."""

    addr: int = 0


@cstruct("I")
class SchedShutdown(CStruct):
    """``struct sched_shutdown``: one ``unsigned int reason`` (a ``SHUTDOWN_*`` code)."""

    reason: int = 0
