"""Issue 19: the domain configuration as xl writes it, through streams and real libxl.

Golden JSON for the example configs; bad disks, NICs, actions and UUIDs named with line and column; a UUID given at
a VM's first creation and kept for its life; xl.cfg -> JSON -> stream -> restore -> JSON; and, with Debian's real
libxenlight 4.17 (``tests/oracle/xl_dryrun.py``): libxl reads back everything xenabi writes but the series' keys, a
stream xenabi writes keeps its disks and NICs through real libxl, a stream carrying real xl's JSON restores with every
device and action, and a stream that went through real libxl has lost its pin, so that the receiver infers the
legacy policy of the release that wrote it and says so.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from xenabi.abi.domctl import GuestType
from xenabi.abi.version import XenVer, XenVersionArg
from xenabi.abi.xen import HYPERVISOR_xen_version
from xenabi.cli import main
from xenabi.errors import ConfigError
from xenabi.hypervisor import Hypervisor
from xenabi.toolstack import DomainConfig, Toolstack
from xenabi.toolstack.streams import xl

from ..oracle import xl_dryrun
from .xlgen import compare, config

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
SHARED = ROOT.parent / "shared" / "data" / "xl"
EXAMPLES = sorted(ROOT.glob("examples/*.cfg")) + (sorted(SHARED.glob("xlexample.*")) if SHARED.is_dir() else [])
# saving a PV domain is not modelled (NotModelled): the stream tests take the HVM and PVH examples
SAVEABLE = [p for p in EXAMPLES if DomainConfig.from_xl(p.read_text()).guest_type is not GuestType.PV]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
needs_xl = pytest.mark.skipif(xl_dryrun.unavailable() is not None, reason=str(xl_dryrun.unavailable()))


def small(cfg: DomainConfig) -> DomainConfig:
    """The same VM with 8 MiB of RAM, so that tests save and restore it quickly."""
    return replace(cfg, memory_mb=8, max_memory_mb=None)


def host(release: str = "4.17", control: bool = True) -> Toolstack:
    return Toolstack(Hypervisor(release, control, memory_mb=1024))


def saved(ts: Toolstack, cfg: DomainConfig) -> bytes:
    out = io.BytesIO()
    ts.save(ts.create(cfg, start=True), out)
    return out.getvalue()


def header_json(stream: bytes) -> dict[str, Any]:
    optional_len = struct.unpack_from("<I", stream, xl.HEADER_SIZE - 4)[0]
    config = stream[xl.HEADER_SIZE + 4 : xl.HEADER_SIZE + optional_len]
    return json.loads(config.rstrip(b"\0"))


def with_header(stream: bytes, doc: dict[str, Any]) -> bytes:
    """``stream`` with another domain config in its xl header (as if another toolstack had written it)."""
    optional_len = struct.unpack_from("<I", stream, xl.HEADER_SIZE - 4)[0]
    return xl.pack_header(json.dumps(doc, indent=4).encode() + b"\0") + stream[xl.HEADER_SIZE + optional_len :]


# --- golden JSON -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_golden_json_of_the_examples(path: Path) -> None:
    doc = DomainConfig.from_xl(path.read_text(), str(path)).to_json()
    golden = GOLDEN / f"{path.name}.json"
    if os.environ.get("XENABI_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(doc, indent=4) + "\n")
    assert doc == json.loads(golden.read_text())


@needs_xl
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_examples_agree_with_real_xl(path: Path) -> None:
    text = path.read_text()
    assert compare(text, xl_dryrun.dry_run(text)) is None


def test_every_key_of_the_rich_example_reaches_a_libxl_field() -> None:
    cfg = DomainConfig.from_xl((ROOT / "examples/hvm-full.cfg").read_text())
    doc = cfg.to_json()
    assert cfg.xl_settings == {} and "xenabi" not in doc
    assert [d["vdev"] for d in doc["disks"]] == ["xvda", "hdc", "xvdb"]
    assert doc["disks"][1] == {"pdev_path": "/srv/iso/installer.iso", "vdev": "hdc", "format": "raw", "removable": 1,
                               "is_cdrom": 1}  # fmt: skip
    assert doc["nics"][0]["mac"] == "00:16:3e:5a:01:02" and doc["nics"][0]["nictype"] == "vif_ioemu"
    assert (doc["nics"][1]["rate_bytes_per_interval"], doc["nics"][1]["rate_interval_usecs"]) == (250000, 20000)
    hvm = doc["b_info"]["type.hvm"]
    assert hvm["bios"] == "ovmf" and hvm["vga"] == {"kind": "std"} and hvm["vnc"]["enable"] == "True"
    assert hvm["viridian"] == "True" and hvm["viridian_disable"] == [9]
    assert (doc["on_reboot"], doc["on_crash"]) == ("restart", "coredump_restart") and "on_poweroff" not in doc
    assert doc["c_info"]["uuid"] == "6f1c5b0e-3d2a-4c77-9b1e-2a4f8d0c9e31"


def test_a_key_not_modelled_is_listed_and_hides_no_device(tmp_path: Path) -> None:
    text = 'name = "v"\ntype = "hvm"\ndisk = [ "/x,,xvda" ]\npci = [ "01:00.0" ]\ncpus = "0-3"\n'
    cfg = DomainConfig.from_xl(text)
    assert cfg.xl_settings == {"pci": ["01:00.0"], "cpus": "0-3"} and len(cfg.libxl["disks"]) == 1
    path = tmp_path / "v.cfg"
    path.write_text(text)
    report = json.loads(CliRunner().invoke(main, ["config", "show", str(path), "--json"]).output)
    assert report["not_modelled"] == ["cpus", "pci"] and report["config"]["disks"][0]["vdev"] == "xvda"
    plain = CliRunner().invoke(main, ["config", "show", str(path)])
    assert "not modelled (real libxl drops them): cpus, pci" in plain.output


# --- bad input ---------------------------------------------------------------------------------------------------
BAD = [
    ('disk = [ "/x,raw,xvda", "/i,QCOW2,xvda" ]', '"/i', "disk[1]", "format",
     "config parsing error in disk specification: unknown value for format: near `QCOW2' in `/i,QCOW2,xvda'"),
    ('disk = [ "/x" ]', '"/x', "disk[0]", "vdev", "no vdev specified in `/x'"),
    ('disk = [ "/x,raw,xvda,format=qcow2" ]', '"/x', "disk[0]", "format", "format respecified: near `qcow2'"),
    ('vif = [ "bridge=br0", "mac=zz:00:00:00:00:00" ]', '"mac', "vif[1]", "mac", "Invalid parameter `mac'."),
    ('vif = [ "bridge=br0,foo=bar" ]', '"bridge', "vif[0]", "foo", "unrecognized argument `foo=bar'"),
    ('vif = [ "type=IOEMU" ]', '"type', "vif[0]", "type", "Invalid parameter `type'."),
    ('vif = [ "rate=1Gbps" ]', '"rate', "vif[0]", "rate", "config parsing error in vif: invalid rate in `1Gbps'"),
    ('vif = [ "mtu=abc" ]', '"mtu', "vif[0]", "mtu", 'xl: failed to convert "abc" to number'),
    ('on_crash = "explode"', '"explode', "on_crash", None, 'Unknown on_crash action "explode" specified'),
    ('uuid = "6f1c5b0e-3d2a-4c77-9b1e"', '"6f1c', "uuid", None, "Failed to parse UUID: 6f1c5b0e-3d2a-4c77-9b1e"),
    ('vga = "vesa"', '"vesa', "vga", None, 'Unknown vga "vesa" specified'),
    ('viridian = [ "base", "warp" ]', "[", "viridian", None, "xl: unknown viridian enlightenment 'warp'"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "at", "key", "field", "message"), BAD, ids=[b[2] + ":" + b[4][:24] for b in BAD])
def test_a_bad_entry_names_key_field_line_and_column(line: str, at: str, key: str, field: str | None,
                                                     message: str) -> None:  # fmt: skip
    text = f'name = "v"\ntype = "hvm"\n{line}\n'
    with pytest.raises(ConfigError) as info:
        DomainConfig.from_xl(text)
    error = info.value
    assert (error.key, error.field, error.line) == (key, field, 3) and message in error.message
    assert error.column == line.index(at) + 1
    assert str(error).startswith(f"line 3, column {error.column}: {key}")
    if xl_dryrun.unavailable() is None:  # xl says the same (or, for a bad vif option, warns it)
        assert message in xl_dryrun.dry_run(text).stderr


def test_a_refused_config_names_its_place_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.cfg"
    path.write_text('name = "v"\nvif = [ "mac=00:16" ]\n')
    result = CliRunner().invoke(main, ["config", "show", str(path)])
    assert result.exit_code == 1 and "line 2, column 9: vif[0] (mac): Invalid parameter `mac'." in result.output
    ts = host()
    with pytest.raises(ConfigError):
        ts.create(DomainConfig.from_xl(path.read_text()))
    assert list(ts.hv.domains) == [0]  # dom0 only


# --- the UUID ------------------------------------------------------------------------------------------------------
def test_a_uuid_is_given_at_first_creation_and_kept_for_life() -> None:
    """xl generates one when the config has none (libxl_uuid_generate); it is the domain's handle, which the guest
    reads with XENVER_guest_handle, and it travels in the stream."""
    ts = host()
    cfg = DomainConfig.from_xl('name = "v"\ntype = "hvm"\nmemory = 8\n')
    assert cfg.uuid is None and "uuid" not in cfg.to_json()["c_info"]
    first, second = ts.create(cfg, start=True), ts.create(replace(cfg, name="w"), start=True)
    uuid = ts.config(first).uuid
    assert uuid is not None and UUID.fullmatch(uuid) and ts.config(second).uuid != uuid
    d = ts.hv.domain(first)
    assert ts.hv.hypercall(first, HYPERVISOR_xen_version, XenVer.guest_handle, XenVersionArg(0x3000)) == 0
    assert bytes(d.memory[0x3000:0x3010]).hex() == uuid.replace("-", "")
    stream = io.BytesIO()
    ts.save(first, stream)
    other = host()
    restored = other.restore(io.BytesIO(stream.getvalue()))
    assert other.config(restored).uuid == uuid
    assert other.hv.domain(restored).config.handle.hex() == uuid.replace("-", "")


def test_the_nil_uuid_is_accepted_and_left_out_as_libxl_does() -> None:
    cfg = DomainConfig.from_xl('name = "v"\nuuid = "00000000-0000-0000-0000-000000000000"\n')
    assert cfg.uuid == "00000000-0000-0000-0000-000000000000" and "uuid" not in cfg.to_json()["c_info"]


# --- round trips ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SAVEABLE, ids=[p.name for p in SAVEABLE])
def test_xl_cfg_to_json_to_stream_to_restore_to_json(path: Path) -> None:
    cfg = small(DomainConfig.from_xl(path.read_text()))
    source, target = host(), host()
    stream = saved(source, cfg)
    restored = target.restore(io.BytesIO(stream))
    before, after = cfg.to_json(), target.config(restored).to_json()
    if cfg.uuid is None:  # given at creation: the only difference, and kept from then on
        assert UUID.fullmatch(after["c_info"].pop("uuid"))
    for doc in (before, after):  # the pin and limits the toolstack wrote down at creation
        doc["b_info"].pop("xen_abi_features_pinned", None)
        for key in ("max_grant_frames", "max_maptrack_frames"):
            doc["b_info"].pop(key, None)
    assert after == before
    header = header_json(stream)  # the stream's own JSON reads back exactly as it was written
    assert DomainConfig.from_json(header).to_json() == header


def test_generated_configs_round_trip_through_json_and_xl_text() -> None:
    r = random.Random(19)
    checked = 0
    for _ in range(400):
        text, _broken = config(r)
        try:
            cfg = DomainConfig.from_xl(text)
        except ConfigError:
            continue
        checked += 1
        assert DomainConfig.from_json(cfg.dumps()).to_json() == cfg.to_json()
        again = DomainConfig.from_xl(cfg.to_xl())
        assert again.to_json() == cfg.to_json(), cfg.to_xl()
    assert checked > 250


# --- real libxl ------------------------------------------------------------------------------------------------------
SERIES = ("xen_abi_features", "xen_abi_features_pinned")


def without_series(doc: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    out.pop("xenabi", None)
    for key in SERIES:
        out["b_info"].pop(key, None)
    return out


@needs_xl
def test_real_libxl_reads_back_everything_but_the_series_keys() -> None:
    r = random.Random(1919)
    docs = [DomainConfig.from_xl(p.read_text()).pinned(frozenset({"evtchn_fifo"})).to_json() for p in EXAMPLES]
    while len(docs) < 300:
        try:
            docs.append(DomainConfig.from_xl(config(r)[0]).to_json())
        except ConfigError:
            continue
    for doc, back in zip(docs, xl_dryrun.libxl_round_trip(docs), strict=True):
        assert isinstance(back, dict), f"libxl refused {doc} ({back})"
        assert xl_dryrun.leaves(back) == xl_dryrun.leaves(without_series(doc))


@needs_xl
def test_a_stream_xenabi_writes_keeps_its_devices_through_real_libxl() -> None:
    cfg = small(DomainConfig.from_xl((ROOT / "examples/hvm-full.cfg").read_text()))
    doc = header_json(saved(host(), cfg))
    (back,) = xl_dryrun.libxl_round_trip([doc])
    assert isinstance(back, dict)
    for key in ("disks", "nics", "on_reboot", "on_crash", "on_soft_reset"):
        assert back[key] == doc[key] == cfg.to_json()[key]
    assert back["b_info"]["type.hvm"] == doc["b_info"]["type.hvm"] and back["c_info"]["uuid"] == cfg.uuid


@needs_xl
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_real_xls_json_is_read_with_every_field(path: Path) -> None:
    real = xl_dryrun.dry_run(path.read_text()).doc
    assert real is not None
    mine = xl_dryrun.leaves(DomainConfig.from_json(real).to_json())
    assert {p: v for p, v in xl_dryrun.leaves(real).items() if mine.get(p) != v} == {}


@needs_xl
def test_a_stream_carrying_real_xls_json_restores_with_every_device() -> None:
    text = (ROOT / "examples/hvm-full.cfg").read_text().replace("memory = 1024", "memory = 8")
    text = text.replace("maxmem = 2048", "maxmem = 8")
    real = xl_dryrun.dry_run(text).doc
    assert real is not None
    stream = with_header(saved(host(), DomainConfig.from_xl(text)), real)
    ts = host()
    restored = ts.restore(io.BytesIO(stream))
    mine = xl_dryrun.leaves(ts.config(restored).to_json())
    missing = {path: value for path, value in xl_dryrun.leaves(real).items() if mine.get(path) != value}
    assert not missing
    assert (
        ts.policy_basis[restored] == "no pinned policy: inferred from Xen 4.17 (its libxl JSON sets no grant "
        "limit: the release default)"
    )


@needs_xl
def test_a_stream_that_went_through_real_libxl_has_no_pin_and_says_so(tmp_path: Path) -> None:
    """Real libxl drops xen_abi_features_pinned: after a real xl restore and xl save the receiver infers the
    legacy policy of the release that wrote the stream, the environment the guest really had on that host."""
    source = host("4.14")
    cfg = small(DomainConfig.from_xl('name = "v"\ntype = "hvm"\nxen_abi_features = [ "!evtchn_upcall" ]\n'))
    stream = saved(source, cfg)
    assert header_json(stream)["b_info"]["xen_abi_features_pinned"] == ["evtchn_fifo", "gnttab_v2"]
    (through_libxl,) = xl_dryrun.libxl_round_trip([header_json(stream)])
    assert isinstance(through_libxl, dict) and "xen_abi_features_pinned" not in through_libxl["b_info"]
    path = tmp_path / "v.save"
    path.write_bytes(with_header(stream, through_libxl))
    verified = CliRunner().invoke(main, ["stream", "verify", str(path)])
    assert verified.exit_code == 0 and "no pinned policy: inferred from Xen 4.14" in verified.output
    ts = host("4.14", control=False)
    restored = ts.restore(path)
    assert ts.policy_basis[restored].startswith("no pinned policy: inferred from Xen 4.14")
    assert ts.hv.domain(restored).policy.features == {"evtchn_fifo", "evtchn_upcall", "gnttab_v2"}
