"""xenabi: per-domain guest ABI feature control for Xen, as an executable model and toolkit.

Layers (lower never import higher): ``abi`` (numbers and layouts), ``policy`` (releases, AbiPolicy),
``hypervisor`` (the model), then the toolstack, guests, scenarios, fleet tools and the CLI.
See ``docs/design.md`` in the repository.
"""

__version__ = "0.1.0"
