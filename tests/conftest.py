"""Shared helpers: a host, guests of each type, and one-line hypercalls by sub-op name."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from xenabi.abi import evtchn as E
from xenabi.abi.domctl import CreateDomain
from xenabi.abi.features import REGISTRY
from xenabi.abi.xen import HYPERVISOR_event_channel_op
from xenabi.hypervisor import Hypervisor

settings.register_profile("ci", max_examples=200, deadline=None)
settings.load_profile("ci")


def features_flags(*names: str) -> int:
    """The series' create flags (bits 7, 8): where a host of 4.4-4.15 with ABI control puts them."""
    flags = 0
    for name in names:
        flags |= REGISTRY[name].cdf_flag
    return flags


def create_with(hv: Hypervisor, kind: str, features: Iterable[str], **limits: Any) -> CreateDomain:
    """The create struct for exactly ``features`` on a controlled host: the series' flags where this host's
    release puts them, and every feature in the abi_features mask."""
    flags = mask = 0
    for name in features:
        mask |= REGISTRY[name].mask_flag
        if name in hv.feature_cdf_bits:
            flags |= 1 << hv.feature_cdf_bits[name]
    return CreateDomain.for_type(kind, features=flags, abi_features=mask, **limits)


def new_domu(
    hv: Hypervisor, kind: str = "hvm", *features: str, memory_mb: int = 8, start: bool = True, **limits: Any
) -> int:
    """A domU of ``kind``; on a controlled host it gets ``features`` (default: every applicable one). Started
    (unpaused) unless ``start`` is false, since only a domain that has run can issue hypercalls."""
    if hv.abi_control:
        if not features:
            features = tuple(sorted(hv.release.applicable_features(CreateDomain.for_type(kind).guest_type)
                                    & hv.features))  # fmt: skip
        create = create_with(hv, kind, features, **limits)
    else:
        create = CreateDomain.for_type(kind, **limits)
    domid = hv.create_domain(create, memory_mb=memory_mb)
    if start:
        hv.unpause(domid)
    return domid


def ev(hv: Hypervisor, caller: int, op: str, **fields: Any) -> tuple[int, Any]:
    """Issue EVTCHNOP_<op> from ``caller``; returns (rc, the argument struct)."""
    cmd = E.EvtchnOp[op]
    arg = E.ARG_STRUCTS[cmd](**fields)
    return hv.hypercall(caller, HYPERVISOR_event_channel_op, cmd, arg), arg


def port_of(hv: Hypervisor, caller: int, op: str, **fields: Any) -> int:
    """Issue a binding sub-op that must succeed and return the port it allocated."""
    rc, arg = ev(hv, caller, op, **fields)
    assert rc == 0, f"{op}{fields} -> {rc}"
    return arg.local_port if op == "bind_interdomain" else arg.port


def interdomain(hv: Hypervisor, a: int, b: int) -> tuple[int, int]:
    """An interdomain channel between a and b: (port in a, port in b)."""
    pa = port_of(hv, a, "alloc_unbound", dom=a, remote_dom=b)
    pb = port_of(hv, b, "bind_interdomain", remote_dom=a, remote_port=pa)
    return pa, pb


@pytest.fixture
def hv() -> Hypervisor:
    return Hypervisor("4.14", abi_control=True)


def write(tmp_path: Path, name: str, text: str) -> Path:
    """A file ``name`` in ``tmp_path`` holding ``text`` (inventories, configs)."""
    path = tmp_path / name
    path.write_text(text)
    return path
