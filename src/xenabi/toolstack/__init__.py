"""The toolstack: xl.cfg grammar, ``DomainConfig`` (libxl-style JSON) and ``Toolstack`` (create and pin).

``DESIGN.md`` "Public API": ``Toolstack(hv)``, ``DomainConfig.from_xl(text)``, ``ts.create(cfg)``.
"""

from xenabi.toolstack.config import DomainConfig
from xenabi.toolstack.toolstack import Toolstack

__all__ = ["DomainConfig", "Toolstack"]
