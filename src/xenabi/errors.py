"""The one exception hierarchy of xenabi.

Return codes, not exceptions, are how the hypervisor model answers a guest: nothing a guest passes to a hypercall
raises. Exceptions are for the layers above (toolstack, CLI) and for invalid requests made by the *controller*
(creating a domain with bad flags, naming a release that does not exist)::

    XenabiError                     base of everything xenabi raises on purpose
    ├── XenError                    a hypervisor operation refused with an errno (create_domain, pause, ...)
    ├── PolicyError                 an unknown release or feature, or a malformed policy document
    ├── XlCfgError                  an xl.cfg that does not parse: line, column and what was expected
    ├── ConfigError                 a config that parses but means nothing valid: the key and the value
    ├── AbiIncompatible             a host refuses a VM's ABI policy (admission, decision 8): every reason
    ├── StreamError                 a save/migration stream a Xen receiver would reject: record, offset, expected
    ├── MigrationError              a save, restore or migration that did not complete, and where the VM is now
    ├── NotModelled                 a request the model deliberately does not cover (saving a PV domain)
    ├── GuestNotRunning             a hypercall issued for a domain whose vCPUs have never run
    ├── InventoryError              a fleet inventory row, file or name that is not valid: file, line and field
    ├── UnknownKernel               a guest kernel version the kernel table does not have: the known ones
    └── KernelNotRunning            a guest-kernel call on a kernel that crashed, powered off or handed over

Every exception carries structured fields besides its message, so callers never parse text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xenabi.abi.errno import ERRNO_NAMES

if TYPE_CHECKING:
    from xenabi.policy import Refusal


class XenabiError(Exception):
    """Base class of every error xenabi raises deliberately."""


class XenError(XenabiError):
    """A controller-level hypervisor operation failed with a Xen errno.

    ``errno`` is positive (``EINVAL``), as in Python's ``OSError``; ``rc`` is the negative value Xen returns.
    ``field`` names the argument that was refused, when one was.
    """

    def __init__(self, errno: int, message: str, *, field: str | None = None) -> None:
        self.errno = errno
        self.field = field
        self.message = message
        name = _errno_name(errno)
        super().__init__(f"{name}: {message}")

    @property
    def rc(self) -> int:
        return -self.errno


class PolicyError(XenabiError):
    """An unknown release or feature name, or a policy document that does not parse.

    ``name`` is the offending name or key, when there is one.
    """

    def __init__(self, message: str, *, name: str | None = None) -> None:
        self.name = name
        super().__init__(message)


class XlCfgError(XenabiError):
    """An xl.cfg syntax error. ``line`` and ``column`` are 1-based; ``source`` names the file when known."""

    def __init__(self, message: str, *, line: int, column: int, source: str = "<config>") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


class ConfigError(XenabiError):
    """A domain configuration that parses but is not valid. ``key`` and ``value`` name the offending entry (for a
    device, ``disk[1]`` and its ``field``); ``line`` and ``column`` are where it was written in an xl.cfg, when the
    config came from one."""

    def __init__(self, message: str, *, key: str, value: object = None, line: int | None = None,
                 column: int | None = None, field: str | None = None) -> None:  # fmt: skip
        self.message = message
        self.key = key
        self.value = value
        self.line = line
        self.column = column
        self.field = field
        where = "" if line is None else f"line {line}, column {column}: " if column is not None else f"line {line}: "
        name = f"{key} ({field})" if field else key
        super().__init__(f"{where}{name}: {message}")


class AbiIncompatible(XenabiError):
    """A host cannot give a VM its ABI policy without changing the VM's environment (``DESIGN.md`` decision 8).

    ``reasons`` lists every refusal, one :class:`~xenabi.policy.Refusal` per offending feature.
    """

    def __init__(self, reasons: tuple[Refusal, ...], *, host: str = "") -> None:
        self.reasons: tuple[Refusal, ...] = tuple(reasons)
        self.host = host
        head = f"host {host} refuses: " if host else "refused: "
        super().__init__(head + "; ".join(str(r) for r in self.reasons))


class StreamError(XenabiError):
    """A stream that Xen's C receivers would reject, or a write that could not complete.

    ``layer`` is ``xl``, ``libxl`` or ``libxc``; ``record`` names the record (or header) being read; ``offset`` is
    the byte offset of its start in the whole stream; ``expected`` says what the receiver wanted, when that is
    one thing.
    """

    def __init__(
        self,
        message: str,
        *,
        layer: str,
        record: str,
        offset: int,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.layer = layer
        self.record = record
        self.offset = offset
        self.expected = expected
        want = f" (expected {expected})" if expected else ""
        super().__init__(f"{layer} {record} at offset {offset}: {message}{want}")


class MigrationError(XenabiError):
    """A save, restore or migration that did not complete. ``source`` says what became of the source domain
    (``running``: resumed or never stopped; ``paused``: outcome unknown, left for the operator; ``none``: there is
    no source, as in a restore); ``cause`` is the underlying error, when there is one."""

    def __init__(self, message: str, *, source: str = "running", cause: BaseException | None = None) -> None:
        self.message = message
        self.source = source
        self.cause = cause
        super().__init__(message)


class NotModelled(XenabiError):
    """A request outside what the model covers, refused before anything changes."""


class GuestNotRunning(XenabiError):
    """A hypercall on behalf of a domain whose vCPUs have never run (created, never unpaused).

    No guest code can run in such a domain, so no hypercall can come from it; the model refuses the request
    instead of answering it, so that state a guest could only set by running (an event channel ABI, an upcall
    vector) cannot exist before the toolstack's last chance to change the domain's features (hypfs, decision 4).
    ``domid`` names the domain; ``vcpu``, when given, the calling vCPU that does not exist or is not up (guest
    code runs only on vCPUs that are up).
    """

    def __init__(self, domid: int, vcpu: int | None = None) -> None:
        self.domid = domid
        self.vcpu = vcpu
        if vcpu is not None:
            super().__init__(f"d{domid} has no vCPU {vcpu} that is up: no guest code runs there to make the call")
            return
        super().__init__(
            f"d{domid} has never run (created paused, not yet unpaused): no guest code can issue a hypercall there; "
            "unpause it first"
        )


class InventoryError(XenabiError):
    """A bad fleet inventory input. ``file``, ``line`` (1-based) and ``field`` say where, when known."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        where = ":".join(str(part) for part in (file, line) if part is not None)
        if where and field:
            where = f"{where} [{field}]"
        elif field:
            where = field
        super().__init__(f"{where}: {message}" if where else message)


def _errno_name(errno: int) -> str:
    return ERRNO_NAMES.get(errno, f"errno {errno}")


class UnknownKernel(XenabiError):
    """A guest kernel name that is not in :data:`xenabi.guest.kernels.KERNELS`; the message names the known ones."""


class KernelNotRunning(XenabiError):
    """A guest-kernel call on a kernel that is not running: it crashed (``crash`` says how), powered off, or handed
    over to another kernel (hibernation, kexec). Nothing was done."""

    def __init__(self, message: str, *, phase: str, crash: str = "") -> None:
        super().__init__(message)
        self.phase = phase
        self.crash = crash
