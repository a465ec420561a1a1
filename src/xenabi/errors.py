"""The one exception hierarchy of xenabi.

Return codes, not exceptions, are how the hypervisor model answers a guest: nothing a guest passes to a hypercall
raises. Exceptions are for the layers above (toolstack, CLI) and for invalid requests made by the *controller*
(creating a domain with bad flags, naming a release that does not exist)::

    XenabiError                     base of everything xenabi raises on purpose
    ├── XenError                    a hypervisor operation refused with an errno (create_domain, pause, ...)
    └── PolicyError                 an unknown release or feature, or a malformed policy document

Every exception carries structured fields besides its message, so callers never parse text.
"""

from __future__ import annotations

from xenabi.abi.errno import ERRNO_NAMES


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


def _errno_name(errno: int) -> str:
    return ERRNO_NAMES.get(errno, f"errno {errno}")
