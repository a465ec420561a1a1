"""The toolstack: xl.cfg grammar, ``DomainConfig`` (libxl-style JSON) and ``Toolstack`` (create and pin).

``DESIGN.md`` "Public API": ``Toolstack(hv)``, ``DomainConfig.from_xl(text)``, ``ts.create(cfg)``. The two names
are loaded on first use (PEP 562), so that reading a config or a stream does not import the hypervisor model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xenabi.toolstack.config import DomainConfig
    from xenabi.toolstack.toolstack import Toolstack

__all__ = ["DomainConfig", "Toolstack"]


def __getattr__(name: str) -> Any:
    if name == "DomainConfig":
        from xenabi.toolstack.config import DomainConfig

        return DomainConfig
    if name == "Toolstack":
        from xenabi.toolstack.toolstack import Toolstack

        return Toolstack
    raise AttributeError(f"module 'xenabi.toolstack' has no attribute {name!r}")
