"""C-layout argument structs: a dataclass whose fields map one to one onto a ``struct`` format.

``@cstruct("HHI", out=("port",))`` turns a class of annotated fields into a slotted dataclass with ``LAYOUT``
(little-endian, the platform's), ``FIELDS``, ``OUT`` (the fields the hypervisor writes back) and ``copy_in_check``,
which raises ``struct.error`` unless every field is an integer that fits its C type: what a typed hypercall
checks before dispatch, since a Python caller can put anything in a field (a float, a string, a negative number
in an unsigned field) and Xen's copy-in only ever sees C integers. Padding is spelled
as ordinary ``_pad`` fields, so that a round trip keeps every byte the guest passed, as Xen's copy-in and
copy-back of a whole struct does.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar, cast, dataclass_transform


class CStruct:
    """Base of every argument struct; see :func:`cstruct`."""

    LAYOUT: ClassVar[struct.Struct]
    FIELDS: ClassVar[tuple[str, ...]]
    OUT: ClassVar[tuple[str, ...]] = ()
    copy_in_check: ClassVar[Callable[[Any], object]]

    @classmethod
    def size(cls) -> int:
        return cls.LAYOUT.size

    def pack(self) -> bytes:
        return self.LAYOUT.pack(*(getattr(self, name) for name in self.FIELDS))

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode the first ``size()`` bytes of ``data``; raises ``struct.error`` when it is shorter."""
        return cls(*cls.LAYOUT.unpack_from(data))


StructT = TypeVar("StructT", bound=type[Any])


@dataclass_transform()
def cstruct(fmt: str, *, out: tuple[str, ...] = ()) -> Callable[[StructT], StructT]:
    """Class decorator: a slotted dataclass laid out as ``"<" + fmt``, one format item per field. Declared as a
    dataclass transform, so type checkers see each struct's fields and constructor."""

    def wrap(declared: StructT) -> StructT:
        cls = cast(StructT, dataclass(slots=True)(declared))
        layout = struct.Struct("<" + fmt)
        names = tuple(f.name for f in fields(cls))
        items = len(layout.unpack(bytes(layout.size)))
        if items != len(names):
            raise TypeError(f"{cls.__name__}: format {fmt!r} has {items} items for {len(names)} fields")
        unknown = set(out) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__}: OUT names unknown fields {sorted(unknown)}")
        cls.LAYOUT = layout
        cls.FIELDS = names
        cls.OUT = out
        cls.copy_in_check = staticmethod(_copy_in_check(layout, names))
        return cls

    return wrap


def _copy_in_check(layout: struct.Struct, names: tuple[str, ...]) -> Callable[[Any], object]:
    """Packing is the cheapest complete check that every field fits its format item (about 0.15 us for one field):
    a getter made once per class, and no generator on the hot path."""
    pack = layout.pack
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda arg: pack(one(arg))
    many = operator.attrgetter(*names)
    return lambda arg: pack(*many(arg))
