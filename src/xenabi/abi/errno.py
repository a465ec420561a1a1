"""Xen's errno values (``xen/include/public/errno.h``), which match Linux's; ``spec/evtchn.md`` §0.

Hypercalls return them negated. ``ERESTART`` is internal to Xen (it becomes a hypercall continuation) and is never
returned to a guest.
"""

EPERM = 1
ENOENT = 2
ESRCH = 3
ENXIO = 6
ENODEV = 19  # Linux's, for what a guest kernel reports (Xen does not return it here)
EAGAIN = 11
ENOMEM = 12
EACCES = 13
E2BIG = 7
EFAULT = 14
EBUSY = 16
EEXIST = 17
ENOTDIR = 20
EINVAL = 22
ENOBUFS = 105
ENOSPC = 28
EDOM = 33
ERANGE = 34
ENOSYS = 38
EUSERS = 87
EOPNOTSUPP = 95
ERESTART = 85

ERRNO_NAMES: dict[int, str] = {
    value: name for name, value in dict(globals()).items() if name.isupper() and isinstance(value, int)
}
"""errno -> symbolic name, for messages and tables."""


def errno_name(rc: int) -> str:
    """``-38`` -> ``"-ENOSYS"``, ``0`` -> ``"0"``: how a return code reads in tables and test ids."""
    if rc == 0:
        return "0"
    name = ERRNO_NAMES.get(abs(rc), str(abs(rc)))
    return f"-{name}" if rc < 0 else name
