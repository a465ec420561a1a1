"""hypfs: Xen's hypervisor file system, with the per-domain ``abi-features`` tree of the hypfs proposal.

Semantics and bytes follow ``xen/common/hypfs.c`` (``spec/abi-control.md`` §7), in its order of checks:

1. XSM_PRIV: only a privileged domain may use hypfs at all; any other caller gets -EPERM, whatever it passes.
2. ``get_version`` wants every argument 0 (else -EINVAL) and answers ``XEN_HYPFS_VERSION`` (1).
3. The path: longer than 1024 bytes or empty -EINVAL; not readable -EFAULT; its only NUL must be its last byte
   -EINVAL.
4. Lookup: a path that is empty or does not start with ``/`` is -ENOENT in 4.14 and -EINVAL from 4.15 (the
   release table's ``hypfs_bad_path_rc``); a name that is not there, and a path through a leaf, -ENOENT (Xen 4.15
   added a -ENOTDIR callback, but the walk's type test runs first, so no release ever returns it).
5. Only then the command: read, write_contents, anything else -EOPNOTSUPP.

Read: a buffer shorter than the 12-byte direntry -EINVAL; shorter than direntry plus contents -ENOBUFS, with the
direntry already written so the caller learns the size it needs. Write: a node without a writer -EACCES; more
bytes than ``max_write_len`` -ENOSPC; then the leaf's writer: a bool leaf takes exactly its 1 byte (-EDOM
otherwise). In 4.14.0 the size check came first for every leaf, so a 2-byte bool write was -ENOSPC; from 4.14.1
(b4e41b1750) a bool leaf's writer decides, and it is -EDOM (``hypfs_bool_oversize_rc``).

The tree: ``/buildinfo/version/{extra,major,minor}`` (read-only) and, on hosts with ABI control, the RFC's
``/domain/<domid>/abi-features/<feature>``: one bool leaf per registry feature that the release implements and
that applies to the domain's guest type, named as in the registry. A leaf reads whether the domain has the
feature; writing it changes the domain's features until the controller first unpauses the domain (-EBUSY after),
exactly as the create flag would have. Static directories list entries in ``strcmp`` order, as ``add_entry``
keeps them; ``/domain`` lists domains by id, as Xen's id-based dynamic directories do.

hypfs exists from Xen 4.14 (``Release.hypfs``); the model also gives it to any host with ABI control, which needs
it for this tree.
Elsewhere the hypercall is unknown: -ENOSYS.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xenabi.abi import errno
from xenabi.abi.features import REGISTRY, AbiFeature
from xenabi.abi.hypfs import (
    DIRENTRY_NAME_OFF,
    DIRLISTENTRY_OFF_NEXT,
    XEN_HYPFS_MAX_PATHLEN,
    XEN_HYPFS_VERSION,
    HypfsDirentry,
    HypfsEncoding,
    HypfsOp,
    HypfsOpArgs,
    HypfsType,
    dirlistentry_size,
)
from xenabi.errors import XenError
from xenabi.hypervisor.guestmem import copy_from_guest, copy_to_guest

if TYPE_CHECKING:
    from xenabi.hypervisor.dispatch import Call
    from xenabi.hypervisor.domain import Domain
    from xenabi.hypervisor.hypervisor import Hypervisor

_UINT = struct.Struct("<I")

Writer = Callable[[bytes | None, int], int]
"""A leaf's writer: (the bytes, or None when they cannot be copied from the guest; their length) -> rc."""


@dataclass(frozen=True, slots=True)
class Leaf:
    type: HypfsType
    read: Callable[[], bytes]
    write: Writer | None = None
    max_size: int = 0
    encoding: HypfsEncoding = HypfsEncoding.PLAIN


@dataclass(frozen=True, slots=True)
class Directory:
    entries: Callable[[], list[tuple[str, Node]]]  # in listing order
    type: HypfsType = HypfsType.DIR
    encoding: HypfsEncoding = HypfsEncoding.PLAIN
    max_size: int = 0
    write: None = None

    def read(self) -> bytes:
        entries = self.entries()
        out = bytearray()
        for index, (name, node) in enumerate(entries):
            content_len = len(node.read())
            size = dirlistentry_size(name)
            head = HypfsDirentry(node.type, node.encoding, 0, content_len, node.max_size).pack()
            off_next = 0 if index == len(entries) - 1 else size
            item = bytearray(size)
            item[: len(head)] = head
            DIRLISTENTRY_OFF_NEXT.pack_into(item, len(head), off_next)
            name_bytes = name.encode()
            item[DIRENTRY_NAME_OFF : DIRENTRY_NAME_OFF + len(name_bytes)] = name_bytes
            out += item
        return bytes(out)

    def child(self, name: str) -> Node | None:
        for entry_name, node in self.entries():
            if entry_name == name:
                return node
        return None


Node = Leaf | Directory


def _static(entries: Mapping[str, Node]) -> Directory:
    ordered = sorted(entries.items(), key=lambda item: item[0].encode())
    return Directory(lambda: ordered)


class Hypfs:
    """The hypfs of one host. ``read``/``write``/``get_version`` are the public API; ``hypercall`` is the
    guest-memory entry used by the dispatcher."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.present = hv.release.hypfs or hv.abi_control
        major, minor = hv.release.version
        version = _static(
            {
                "major": Leaf(HypfsType.UINT, lambda: _UINT.pack(major)),
                "minor": Leaf(HypfsType.UINT, lambda: _UINT.pack(minor)),
                "extra": Leaf(HypfsType.STRING, lambda: b".0\0"),
            }
        )
        top: dict[str, Node] = {"buildinfo": _static({"version": version})}
        if hv.abi_control:
            top["domain"] = Directory(self._domains)
        self.root = _static(top)

    # --- the tree ----------------------------------------------------------------------------------------
    def _domains(self) -> list[tuple[str, Node]]:
        return [(str(domid), self._domain_dir(self.hv.domains[domid])) for domid in sorted(self.hv.domains)]

    def _domain_dir(self, d: Domain) -> Directory:
        features = {
            row.name: self._feature_leaf(d, row)
            for row in REGISTRY
            if row.name in self.hv.features and row.applies_to(d.guest_type)  # implemented, not hidden at boot
        }
        return _static({"abi-features": _static(features)})

    def _feature_leaf(self, d: Domain, row: AbiFeature) -> Leaf:
        def read() -> bytes:
            return b"\1" if row.name in d.policy.features else b"\0"

        def write(data: bytes | None, length: int) -> int:
            if d.creation_finished:
                return -errno.EBUSY
            if length != 1:
                return -errno.EDOM
            if data is None:
                return -errno.EFAULT
            features = set(d.policy.features)
            if data[0]:
                features.add(row.name)
            else:
                features.discard(row.name)
            try:
                self.hv.set_domain_features(d, frozenset(features))
            except XenError as exc:  # the creation checks refuse it (grant_opts hides the feature): nothing changes
                return -exc.errno
            return 0

        return Leaf(HypfsType.BOOL, read, write, max_size=1)

    def lookup(self, path: str) -> Node | int:
        """``hypfs_get_entry``: the node, or the release's code for a bad path, or -ENOENT."""
        if not path.startswith("/"):
            return self.hv.release.hypfs_bad_path_rc
        node: Node = self.root
        rest = path[1:]
        while True:
            if not isinstance(node, Directory):
                return -errno.ENOENT  # a path through a leaf
            if not rest:
                return node
            name, _, rest_after = rest.partition("/")
            child = node.child(name)
            if child is None:
                return -errno.ENOENT
            if "/" not in rest:
                return child
            node, rest = child, rest_after

    # --- the operation, after the caller and its arguments are known ------------------------------------------
    def _access(self, caller: int) -> Domain | int:
        cur = self.hv.domains.get(caller)
        if cur is None:
            return -errno.ESRCH
        if not self.present:
            return -errno.ENOSYS
        if not cur.privileged:
            return -errno.EPERM
        return cur

    def _path(self, raw: bytes) -> str | int:
        if not raw or len(raw) > XEN_HYPFS_MAX_PATHLEN:
            return -errno.EINVAL
        if raw.find(b"\0") != len(raw) - 1:
            return -errno.EINVAL
        try:
            return raw[:-1].decode()
        except UnicodeDecodeError:
            return -errno.ENOENT  # no node has such a name

    def _op(self, cmd: int, raw_path: bytes, buf_len: int, data: bytes | None) -> tuple[int, bytes]:
        """Steps 3-5 of the module docstring; ``data`` is None when the write buffer cannot be copied in."""
        path = self._path(raw_path)
        if isinstance(path, int):
            return path, b""
        node = self.lookup(path)
        if isinstance(node, int):
            return node, b""
        if cmd == HypfsOp.read:
            return _read(node, buf_len)
        if cmd == HypfsOp.write_contents:
            if node.write is None:
                return -errno.EACCES, b""
            if buf_len > node.max_size:
                bool_decides = node.type is HypfsType.BOOL and self.hv.release.hypfs_bool_oversize_rc == -errno.EDOM
                if not bool_decides:
                    return -errno.ENOSPC, b""
            return node.write(data, buf_len), b""
        return -errno.EOPNOTSUPP, b""

    # --- public API ----------------------------------------------------------------------------------------
    def get_version(self, caller: int) -> int:
        cur = self._access(caller)
        return cur if isinstance(cur, int) else XEN_HYPFS_VERSION

    def read(self, caller: int, path: str | bytes, buf_len: int | None = None) -> tuple[int, bytes]:
        """XEN_HYPFS_OP_read: ``(rc, bytes written to the buffer)``: the direntry and, if it fits, the contents.
        ``buf_len`` None means a buffer large enough. A ``str`` path gets its terminating NUL added."""
        cur = self._access(caller)
        if isinstance(cur, int):
            return cur, b""
        return self._op(HypfsOp.read, _raw_path(path), sys.maxsize if buf_len is None else buf_len, None)

    def write(self, caller: int, path: str | bytes, data: bytes) -> int:
        """XEN_HYPFS_OP_write_contents."""
        cur = self._access(caller)
        if isinstance(cur, int):
            return cur
        return self._op(HypfsOp.write_contents, _raw_path(path), len(data), bytes(data))[0]

    def hypercall(self, hv: Hypervisor, cur: Domain, arg: HypfsOpArgs, cmd: int) -> int:
        """The guest-memory form: path and buffer are addresses in the caller's RAM (copy faults: -EFAULT).
        Presence and XSM_PRIV were checked by the dispatcher's pre-check (:func:`hypfs_precheck`)."""
        if cmd == HypfsOp.get_version:
            if arg.path_addr or arg.path_len or arg.buf_addr or arg.buf_len:
                return -errno.EINVAL
            return XEN_HYPFS_VERSION
        if not arg.path_len or arg.path_len > XEN_HYPFS_MAX_PATHLEN:
            return -errno.EINVAL
        raw_path = copy_from_guest(cur, arg.path_addr, arg.path_len)
        if raw_path is None:
            return -errno.EFAULT
        data = None
        if cmd == HypfsOp.write_contents:
            data = copy_from_guest(cur, arg.buf_addr, arg.buf_len)  # a leaf's writer reports the fault, if any
        rc, out = self._op(cmd, raw_path, arg.buf_len, data)
        if out and not copy_to_guest(cur, arg.buf_addr, out):
            return -errno.EFAULT
        return rc


def hypfs_precheck(hv: Hypervisor, cur: Domain) -> int:
    """Before anything is read: a host without hypfs does not know the hypercall; XSM_PRIV comes first."""
    if not hv.hypfs.present:
        return -errno.ENOSYS
    return 0 if cur.privileged else -errno.EPERM


def hypfs_op(hv: Hypervisor, cur: Domain, arg: HypfsOpArgs, cmd: int, call: Call) -> int:
    return hv.hypfs.hypercall(hv, cur, arg, cmd)


def _read(node: Node, buf_len: int) -> tuple[int, bytes]:
    if buf_len < HypfsDirentry.size():
        return -errno.EINVAL, b""
    contents = node.read()
    head = HypfsDirentry(node.type, node.encoding, 0, len(contents), node.max_size).pack()
    if buf_len < len(head) + len(contents):
        return -errno.ENOBUFS, head
    return 0, head + contents


def _raw_path(path: str | bytes) -> bytes:
    return path.encode() + b"\0" if isinstance(path, str) else bytes(path)
