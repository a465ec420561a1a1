"""Where a restored VM's ABI policy and limits come from (``DESIGN.md`` decision 7; issues 18 and 19).

A stream that carries a pinned policy is restored with exactly that policy. One without (written by a toolstack
without ABI control, or one that passed through real ``xl restore`` and ``xl save``: real libxl drops the series'
``xen_abi_features_pinned`` key, as it drops every key it does not know) is given the legacy policy of the release
that wrote it, which is the environment its guest really had on that host, and the report says so: "no pinned
policy: inferred from Xen X.Y". Kept apart from :mod:`xenabi.toolstack.saverestore` so that ``xenabi stream
verify`` can say it without loading a hypervisor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from xenabi.abi.features import REGISTRY
from xenabi.errors import StreamError
from xenabi.policy import features_of_version, get_release, legacy_limits

if TYPE_CHECKING:
    from xenabi.toolstack.config import DomainConfig
    from xenabi.toolstack.streams.reader import StreamInfo


def arrival_features(info: StreamInfo, source_gnttab_max_version: int | None = None) -> tuple[frozenset[str], str]:
    """Decision 7: the pinned policy, or the legacy policy of the source release; and where it came from, for the
    report. Grant v2 on a legacy stream: a 4.16+ stream's libxl JSON says whether its guest was allowed it
    (``max_grant_version``); before 4.16 the source host's boot option decided, which the stream cannot say, so
    the release default (v2 allowed) holds unless the operator says the source host had gnttab=max-ver:1."""
    cfg = info.config
    assert cfg is not None
    if cfg.pinned_features is not None:
        return cfg.pinned_features, "pinned policy from the stream"
    if info.xen_version[0] == 0:
        raise StreamError(
            "a legacy-converted stream does not say which Xen wrote it, so its ABI policy cannot be inferred; "
            "restore it with a config that pins xen_abi_features",
            layer="libxc",
            record="domain header",
            offset=info.domain_header_offset,
        )
    source = get_release("{}.{}".format(*info.xen_version))
    features = features_of_version(info.xen_version, cfg.guest_type) - cfg.knob_hidden
    basis = f"no pinned policy: inferred from Xen {source.line}"
    if cfg.knob_hidden:
        basis += f", whose libxl JSON hides {', '.join(sorted(cfg.knob_hidden))}"
    elif source.gnttab_grant_opts:
        basis += " (its libxl JSON sets no grant limit: the release default)"
    elif hidden := REGISTRY.boot_hidden({"gnttab_max_version": source_gnttab_max_version or 0}):
        features -= hidden
        basis += (f", with the operator's gnttab=max-ver:{source_gnttab_max_version} for the source host "
                  f"(no {', '.join(sorted(hidden))})")  # fmt: skip
    else:
        basis += " (the release default; the source host's gnttab=max-ver was not given)"
    return features, basis


def arrival_config(info: StreamInfo) -> DomainConfig:
    """The config a restore works from: a stream without a pinned policy gets the grant limits its source
    release's toolstack gave a VM whose config named none (decision 7 for limits)."""
    cfg = info.config
    assert cfg is not None
    if cfg.pinned_features is not None or info.xen_version[0] == 0:
        return cfg
    grant, maptrack = legacy_limits("{}.{}".format(*info.xen_version))
    return replace(
        cfg,
        max_grant_frames=grant if cfg.max_grant_frames is None else cfg.max_grant_frames,
        max_maptrack_frames=maptrack if cfg.max_maptrack_frames is None else cfg.max_maptrack_frames,
    )
