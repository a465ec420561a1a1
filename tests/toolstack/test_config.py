"""DomainConfig: xl keys, v5 ``xen_abi_features`` semantics (``spec/abi-control.md`` §1.4-§1.5) and libxl JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.abi.domctl import GuestType, XEN_DOMCTL_CDF_evtchn_fifo, XEN_DOMCTL_CDF_evtchn_upcall
from xenabi.errors import ConfigError, XlCfgError
from xenabi.hypervisor import Hypervisor
from xenabi.policy import get_release
from xenabi.toolstack import DomainConfig, xlkeys

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "xl"
# Xen's own example files, beside the repository where the project's shared folder is: read if present
needs_xen_examples = pytest.mark.skipif(not SHARED.is_dir(), reason="Xen's example xl.cfg files (../shared) absent")


def xl(body: str, kind: str = "hvm") -> DomainConfig:
    return DomainConfig.from_xl(f'name = "vm"\ntype = "{kind}"\n{body}\n')


@needs_xen_examples
def test_hvm_example_fields() -> None:
    cfg = DomainConfig.from_xl((SHARED / "xlexample.hvm").read_text())
    assert (cfg.name, cfg.guest_type, cfg.memory_mb, cfg.vcpus) == ("example.hvm", GuestType.HVM, 128, 2)
    assert cfg.max_event_channels == 1023 and cfg.abi_features is None and cfg.pinned_features is None
    assert cfg.xl_settings == {}  # issue 19: every key of the example reaches a libxl field
    disk = {"pdev_path": "/dev/vg/guest-volume", "vdev": "xvda", "format": "raw", "readwrite": 1}
    assert cfg.libxl["disks"] == [disk] and cfg.libxl["nics"] == [{"devid": 0}]
    assert cfg.libxl["b_info"]["type.hvm"]["sdl"] == {"enable": "True"}


@needs_xen_examples
def test_pv_example_defaults_to_pv() -> None:
    cfg = DomainConfig.from_xl((SHARED / "xlexample.pvlinux").read_text())
    assert cfg.guest_type is GuestType.PV and cfg.kernel == "/boot/vmlinuz" and cfg.cmdline == "root=/dev/xvda1"


def test_builder_hvm_means_hvm() -> None:
    assert DomainConfig.from_xl('name = "x"\nbuilder = "hvm"').guest_type is GuestType.HVM


def test_limits_are_read() -> None:
    cfg = xl("max_event_channels = 4095\nmax_grant_frames = 32\nmax_maptrack_frames = 0x100\nmaxvcpus = 4")
    assert (cfg.max_event_channels, cfg.max_grant_frames, cfg.max_maptrack_frames) == (4095, 32, 256)
    hv = Hypervisor("4.14")
    create = cfg.create_domain(frozenset(), feature_bits=hv.feature_cdf_bits, abi_control=True, release=hv.release)
    assert (create.max_evtchn_port, create.max_grant_frames, create.max_maptrack_frames) == (4095, 32, 256)
    assert create.max_vcpus == 4


@pytest.mark.parametrize(
    ("body", "key", "line"),
    [
        ('type = "hvm"\ntype = "kvm"', "type", 4),
        ("memory = 0", "memory", 3),
        ("memory = 'lots'", "memory", 3),
        ("memory = [1]", "memory", 3),
        ("vcpus = 2\nmaxvcpus = 1", "maxvcpus", 4),
        ("memory = 64\nmaxmem = 32", "maxmem", 4),
        ("max_event_channels = 0", "max_event_channels", 3),
        ("xen_abi_features = 'evtchn_fifo'", "xen_abi_features", 3),
    ],
)
def test_bad_values_name_key_and_line(body: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        xl(body)
    assert info.value.key == key and info.value.line == line


def test_name_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        DomainConfig.from_xl("memory = 64")
    assert info.value.key == "name"


# --- v5 semantics -----------------------------------------------------------------------------------------------
V5_414 = get_release("4.14")


G = "gnttab_v2"  # every release in the table implements it (Xen 4.0)


@pytest.mark.parametrize(
    ("kind", "entries", "expected"),
    [
        ("hvm", None, {"evtchn_fifo", "evtchn_upcall", G}),  # the v5 default: everything that applies
        ("pv", None, {"evtchn_fifo", G}),
        ("pvh", None, {"evtchn_fifo", "evtchn_upcall", G}),  # PVH is an HVM container (decision 1)
        ("hvm", '[ "all" ]', {"evtchn_fifo", "evtchn_upcall", G}),
        ("pv", '[ "all" ]', {"evtchn_fifo", G}),  # all enables only what applies
        ("hvm", '[ "all", "!evtchn_upcall" ]', {"evtchn_fifo", G}),
        ("hvm", '[ "!evtchn_fifo" ]', {"evtchn_upcall", G}),
        ("hvm", '[ "!evtchn_fifo", "!evtchn_upcall" ]', {G}),
        ("hvm", "[]", {"evtchn_fifo", "evtchn_upcall", G}),
        ("pv", '[ "!evtchn_fifo" ]', {G}),
        ("hvm", '[ "evtchn_fifo", "evtchn_fifo" ]', {"evtchn_fifo", "evtchn_upcall", G}),
        ("hvm", '[ "!gnttab_v2" ]', {"evtchn_fifo", "evtchn_upcall"}),
    ],
)
def test_v5_feature_entries(kind: str, entries: str | None, expected: set[str]) -> None:
    body = f"xen_abi_features = {entries}" if entries is not None else ""
    assert xl(body, kind).requested_features(V5_414) == expected


@pytest.mark.parametrize(
    ("kind", "entries", "bad_entry", "fragment"),
    [
        ("hvm", '[ "evtchn_lifo" ]', "evtchn_lifo", "unknown"),
        ("hvm", '[ "!all" ]', "!all", "unknown"),
        ("hvm", '[ "evtchn_fifo", "!evtchn_fifo" ]', "!evtchn_fifo", "both enabled and disabled"),
        ("hvm", '[ "!evtchn_fifo", "evtchn_fifo" ]', "evtchn_fifo", "both enabled and disabled"),
        ("pv", '[ "evtchn_upcall" ]', "evtchn_upcall", "does not apply to pv"),
        ("hvm", '[ "" ]', "", "unknown"),
    ],
)
def test_v5_errors_name_the_entry(kind: str, entries: str, bad_entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        xl(f"xen_abi_features = {entries}", kind)
    assert info.value.key == "xen_abi_features" and info.value.value == bad_entry and info.value.line == 3
    assert fragment in info.value.message


def test_disabling_upcall_on_pv_is_fine() -> None:
    assert xl('xen_abi_features = [ "!evtchn_upcall" ]', "pv").requested_features(V5_414) == {"evtchn_fifo", G}


def test_request_on_an_older_release_keeps_what_it_lacks_for_admission_to_name() -> None:
    cfg = xl('xen_abi_features = [ "evtchn_upcall" ]')
    assert cfg.requested_features("4.5") == {"evtchn_fifo", "evtchn_upcall", G}
    assert xl("").requested_features("4.3") == {G}


def test_pool_default_replaces_the_v5_default() -> None:
    assert xl("").requested_features(V5_414, default=frozenset({"evtchn_fifo"})) == {"evtchn_fifo"}
    assert xl('xen_abi_features = [ "all" ]').requested_features(V5_414, frozenset()) == {
        "evtchn_fifo",
        "evtchn_upcall",
        G,
    }


def test_max_grant_version_1_takes_grant_v2_out_of_the_default_and_all() -> None:
    """xl.cfg max_grant_version (4.16, 7379f9e10a): 1 hides grant v2, as grant_opts does."""
    assert xl("max_grant_version = 1").requested_features(V5_414) == {"evtchn_fifo", "evtchn_upcall"}
    assert xl('max_grant_version = 1\nxen_abi_features = [ "all" ]').requested_features(V5_414) == {
        "evtchn_fifo", "evtchn_upcall"}  # fmt: skip
    assert xl("max_grant_version = 2").requested_features(V5_414) == {"evtchn_fifo", "evtchn_upcall", G}


@pytest.mark.parametrize("body", ['xen_abi_features = [ "gnttab_v2" ]', 'xen_abi_features_pinned = [ "gnttab_v2" ]'])
def test_max_grant_version_1_with_grant_v2_asked_names_both(body: str) -> None:
    with pytest.raises(ConfigError) as info:
        xl(f"max_grant_version = 1\n{body}")
    assert info.value.value == G and "max_grant_version = 1" in info.value.message
    assert info.value.key == body.split(" =")[0]


@pytest.mark.parametrize("value", ["0", "3", '"two"'])
def test_bad_max_grant_version_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        xl(f"max_grant_version = {value}")
    assert info.value.key == "max_grant_version" and info.value.line == 3


def test_negative_max_grant_version_is_xl_syntax_error() -> None:
    """xl.cfg has no unary minus: -1 is a syntax error at its line and column, as libxlutil says."""
    with pytest.raises(XlCfgError) as info:
        xl("max_grant_version = -1")
    assert (info.value.line, info.value.column) == (3, 21)


def test_pinned_set_wins_over_everything() -> None:
    cfg = xl('xen_abi_features_pinned = [ "evtchn_upcall" ]')
    assert cfg.is_pinned and cfg.requested_features(V5_414) == {"evtchn_upcall"}
    assert cfg.requested_features("4.3") == {"evtchn_upcall"}  # admission, not the config, decides


def test_create_flags_and_mask_only_for_a_controlled_host() -> None:
    cfg = xl("")
    features = frozenset({"evtchn_fifo", "evtchn_upcall", "gnttab_v2"})
    controlled = Hypervisor("4.14")
    create = cfg.create_domain(features, feature_bits=controlled.feature_cdf_bits, abi_control=True,
                               release=controlled.release)  # fmt: skip
    both = XEN_DOMCTL_CDF_evtchn_fifo | XEN_DOMCTL_CDF_evtchn_upcall
    assert create.flags & both == both and create.abi_features == 0b111
    uncontrolled = Hypervisor("4.14", abi_control=False)
    create = cfg.create_domain(features, feature_bits=uncontrolled.feature_cdf_bits, abi_control=False,
                               release=uncontrolled.release)  # fmt: skip
    assert create.flags & XEN_DOMCTL_CDF_evtchn_fifo == 0 and create.abi_features == 0


def test_grant_opts_hides_grant_v2_on_a_4_16_host_without_control() -> None:
    """Decision 10, 7379f9e10a: where the release has its own knob, the toolstack uses it; none before 4.16."""
    cfg = xl("")
    for release, grant_opts in (("4.15", None), ("4.16", 1), ("4.22", 1)):
        hv = Hypervisor(release, abi_control=False)
        create = cfg.create_domain(frozenset({"evtchn_fifo"}), feature_bits={}, abi_control=False, release=hv.release)
        assert create.grant_opts == grant_opts, release
    hv = Hypervisor("4.16", abi_control=False)
    create = cfg.create_domain(frozenset({"gnttab_v2"}), feature_bits={}, abi_control=False, release=hv.release)
    assert create.grant_opts is None  # v2 kept: libxl passes the host's maximum
    create = xl("max_grant_version = 1").create_domain(frozenset(), feature_bits={}, abi_control=True,
                                                       release=hv.release)  # fmt: skip
    assert create.grant_opts == 1


# --- JSON -------------------------------------------------------------------------------------------------------
def test_libxl_json_shape() -> None:
    doc = (
        xl('xen_abi_features = [ "!evtchn_upcall" ]\nvcpus = 2\nmemory = 64')
        .pinned(frozenset({"evtchn_fifo"}))
        .to_json()
    )
    assert doc["c_info"] == {"type": "hvm", "name": "vm", "run_hotplug_scripts": "True"}  # xl.c's default
    b_info = doc["b_info"]
    assert (b_info["max_vcpus"], b_info["avail_vcpus"], b_info["target_memkb"]) == (2, [0, 1], 64 * 1024)
    assert b_info["event_channels"] == 1023 and b_info["type.hvm"] == {"vga": {}, "vnc": {}, "sdl": {}, "spice": {},
                                                                        "rdm": {}}  # fmt: skip
    assert b_info["xen_abi_features"] == ["!evtchn_upcall"] and b_info["xen_abi_features_pinned"] == ["evtchn_fifo"]


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("{", "<json>"),
        ("[]", "<json>"),
        ('{"b_info": {}}', "c_info"),
        ('{"c_info": {"name": "x"}}', "b_info"),
        ('{"c_info": {"name": 3}, "b_info": {}}', "c_info.name"),
        ('{"c_info": {"name": "x", "type": "xen"}, "b_info": {}}', "c_info.type"),
        ('{"c_info": {"name": "x"}, "b_info": {"event_channels": true}}', "b_info.event_channels"),
        ('{"c_info": {"name": "x"}, "b_info": {"xen_abi_features_pinned": ["bogus"]}}', "xen_abi_features_pinned"),
        ('{"c_info": {"name": "x"}, "b_info": {"xen_abi_features": ["bogus"]}}', "xen_abi_features"),
        ('{"c_info": {"name": "x", "uuid": "abc"}, "b_info": {}}', "uuid"),
        ('{"c_info": {"name": "x"}, "b_info": {}, "on_crash": "explode"}', "on_crash"),
        ('{"c_info": {"name": "x"}, "b_info": {}, "disks": {"vdev": "xvda"}}', "disks"),
        ('{"c_info": {"name": "x"}, "b_info": {}, "nics": [{"mtu": 1.5}]}', "nics[0].mtu"),
    ],
)
def test_bad_json_names_the_key(doc: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        DomainConfig.from_json(doc)
    assert info.value.key == key


def test_json_keeps_libxl_keys_it_does_not_interpret() -> None:
    """Issue 19: a field xenabi does not interpret is kept as it came, and written back where libxl has it."""
    doc = ('{"c_info": {"name": "x", "uuid": "0D34EBA5-971A-4C96-B82D-BE432E80C792", "pool_name": "p"}, '
           '"b_info": {"sched_params": {"weight": 256}}, "disks": [], "pcidevs": [{"func": 1}]}')  # fmt: skip
    cfg = DomainConfig.from_json(doc)
    assert cfg.name == "x" and cfg.guest_type is GuestType.PV and cfg.uuid == "0d34eba5-971a-4c96-b82d-be432e80c792"
    out = cfg.to_json()
    assert out["c_info"]["pool_name"] == "p" and out["b_info"]["sched_params"] == {"weight": 256}
    assert out["disks"] == [] and out["pcidevs"] == [{"func": 1}]
    assert list(out) == ["c_info", "b_info", "disks", "pcidevs"]  # libxl's order


configs = st.builds(
    DomainConfig,
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
    guest_type=st.just(GuestType.HVM),
    memory_mb=st.integers(1, 4096),
    vcpus=st.integers(1, 8),
    max_event_channels=st.integers(1, 131071),
    max_grant_frames=st.none() | st.integers(1, 64),
    max_maptrack_frames=st.none() | st.integers(0, 1024),
    cmdline=st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    abi_features=st.none() | st.sampled_from([(), ("all",), ("!evtchn_upcall",), ("evtchn_fifo", "!evtchn_upcall")]),
    pinned_features=st.none() | st.sets(st.sampled_from(["evtchn_fifo", "evtchn_upcall"])).map(frozenset),
    # keys that reach no libxl field here (issue 19 maps disk, vif, sdl, on_crash, ...)
    xl_settings=st.dictionaries(
        st.sampled_from(["pci", "vtpm", "channel", "cpus_soft"]), st.lists(st.text(max_size=5))
    ),
)


@given(configs)
def test_json_and_xl_round_trip(cfg: DomainConfig) -> None:
    assert DomainConfig.from_json(cfg.dumps()) == cfg
    # xl.cfg text always gains xl's defaults (run_hotplug_scripts, claim_mode, the actions): from then on it is fixed
    again = DomainConfig.from_xl(cfg.to_xl())
    assert replace(again, libxl={}) == cfg
    # (no on_reboot in the JSON is libxl's destroy, which the text says explicitly, as xl's default is restart)
    assert again.libxl == replace(cfg, libxl=xlkeys.xl_defaults(cfg.guest_type)).libxl
    assert DomainConfig.from_xl(again.to_xl()) == again == DomainConfig.from_json(again.dumps())
