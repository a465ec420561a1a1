"""The fleet inventory: hosts and VMs in SQLite (``DESIGN.md`` decision 8; issue 7).

Tables: ``hosts(id, name, pool, release, abi_control, memory_mib, pcpus, vcpu_overcommit, pool_master,
gnttab_max_version)``, ``policies(id, text)``
and ``vms(id, name, guest_type, host_id, policy_id, memory_mib, vcpus)``. A VM's policy is text in one of two
forms: ``pinned:<feature>,<feature>`` (a VM created by a toolstack with ABI control; ``pinned:`` is the empty policy)
or ``legacy:<release>`` (a VM created by a toolstack without it, which knows the environment of that release:
decision 7). Policies are stored once and referenced, so a
fleet of ten million VMs shares a handful of policy rows.

One import command is one transaction, whatever its files: every file is read and every row validated first, then
everything is written (all files' hosts, then all files' VMs, so a VM may name a host from another file of the same
command) and committed once. A row that does not validate is reported with its file, line and field, and nothing
from any file is written; an import that is interrupted, killed or fails anywhere leaves the previous inventory as
it was (SQLite's journal undoes a transaction that never committed). Two imports at once: the second waits for the
first, up to :data:`LOCK_TIMEOUT` seconds, then fails with a clear message.

Input rules, each an :class:`~xenabi.errors.InventoryError` with file, line and field: names are strings of at most
:data:`MAX_NAME` characters with no control characters (a JSON list, object or number is not a name); a name appears
once per file; CSV fields are at most 128 KiB (the csv module's limit); JSON nests at most as deep as Python's parser
allows and numbers stay within its digit limit; ``--db`` must be an SQLite file or a path where one can be made.
CSV files are recognised by their header: ``name,pool,release,abi_control`` for hosts, ``name,guest_type,host,policy``
for VMs, each optionally followed (in any order) by the optional columns below. JSON is
``{"hosts": [...], "vms": [...]}`` with the same fields (the line of a JSON row is its position).

Capacity (issue 15) is optional, so inventories written before it still import; a missing or empty value takes the
documented default of :data:`HOST_DEFAULTS` / :data:`VM_DEFAULTS`:

- a host's ``memory_mib`` is the memory it has for guests (after Xen and dom0), default 262144 (256 GiB); ``pcpus``
  its physical CPUs, default 64; ``vcpu_overcommit`` the operator's limit on vCPUs per physical CPU, default 4. The
  planner never puts more than ``floor(pcpus * vcpu_overcommit)`` vCPUs on a host, and never overcommits memory
  (Xen does not: a domain's RAM is allocated when it is built).
- a VM's ``memory_mib`` and ``vcpus`` default to what xl gives a config that names neither: 32 MiB and 1 vCPU
  (:data:`xenabi.toolstack.config.DEFAULT_MEMORY_MB`).
- a host's ``pool_master`` (a boolean, default false) marks its pool's master, as XAPI has one per pool; a rolling
  upgrade takes it first. A pool has at most one.

Capacities are whole numbers of at least 1 (``vcpu_overcommit`` a number above 0); zero, negative, fractional or
absurd values are errors with file, line and field, and so is a VM larger (in memory or vCPUs) than every host of
the inventory after the import. An existing inventory file is given the optional columns, with the defaults, when it
is opened.

A host's boot options are part of the host (issue 18): ``gnttab_max_version`` is its ``gnttab=max-ver:N``, 2 (Xen's
default) unless given, and 1 only on a release that has the option (4.11 on; 4.8.5, 4.9.3 and 4.10.2 by backport).
A host booted with 1 gives no domain grant v2: admission refuses a VM pinned with ``gnttab_v2`` there
(``host-disabled``), host classes are (release, abi_control, gnttab_max_version), and an upgrade keeps each host's
boot options.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xenabi.abi.domctl import GuestType
from xenabi.abi.features import REGISTRY
from xenabi.abi.gnttab import GNTTAB_MAX_VERSION_DEFAULT
from xenabi.errors import InventoryError, PolicyError
from xenabi.policy import RELEASES, features_of_version, get_release
from xenabi.releases import normal_name

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pool TEXT NOT NULL,
    release TEXT NOT NULL, abi_control INTEGER NOT NULL CHECK (abi_control IN (0, 1)));
CREATE TABLE IF NOT EXISTS policies (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS vms (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, guest_type TEXT NOT NULL,
    host_id INTEGER NOT NULL REFERENCES hosts(id), policy_id INTEGER NOT NULL REFERENCES policies(id));
"""
HOST_DEFAULTS: dict[str, int | float] = {
    "memory_mib": 262144,
    "pcpus": 64,
    "vcpu_overcommit": 4.0,
    "pool_master": 0,
    "gnttab_max_version": GNTTAB_MAX_VERSION_DEFAULT,
}
VM_DEFAULTS: dict[str, int | float] = {"memory_mib": 32, "vcpus": 1}
# The optional columns, added to inventories made before issues 15 and 18 (ALTER TABLE keeps their rows, with the
# defaults).
OPTIONAL_COLUMNS = (
    ("hosts", "memory_mib", "INTEGER"), ("hosts", "pcpus", "INTEGER"), ("hosts", "vcpu_overcommit", "REAL"),
    ("hosts", "pool_master", "INTEGER"), ("hosts", "gnttab_max_version", "INTEGER"),
    ("vms", "memory_mib", "INTEGER"), ("vms", "vcpus", "INTEGER"),
)  # fmt: skip
MAX_MEMORY_MIB = 1 << 31  # 2 PiB: a sanity bound that keeps every sum well inside 64 bits
MAX_CPUS = 1 << 16
MAX_OVERCOMMIT = 1000.0
INDEXES = (
    "CREATE INDEX IF NOT EXISTS hosts_by_class ON hosts(release, abi_control, gnttab_max_version)",
    "CREATE INDEX IF NOT EXISTS hosts_by_pool ON hosts(pool)",
    "CREATE INDEX IF NOT EXISTS vms_by_class ON vms(guest_type, policy_id, host_id)",
    "CREATE INDEX IF NOT EXISTS vms_by_host ON vms(host_id, guest_type, policy_id)",
)
VM_INDEXES = ("vms_by_class", "vms_by_host")  # dropped during a bulk insert and built once after it
HOST_FIELDS = ("name", "pool", "release", "abi_control")
VM_FIELDS = ("name", "guest_type", "host", "policy")
HOST_COLUMNS = HOST_FIELDS + tuple(HOST_DEFAULTS)  # what export writes
CAPACITY_FIELDS = ("memory_mib", "pcpus", "vcpu_overcommit")
VM_COLUMNS = VM_FIELDS + tuple(VM_DEFAULTS)
DEFAULT_DB = "xenabi-fleet.sqlite"
MAX_NAME = 256
LOCK_TIMEOUT = 30.0  # seconds an import waits for another writer before giving up
PROGRESS_EVERY = 10_000  # VMs written between progress reports

Progress = Callable[[int], None]  # called with how many more rows were written


def vcpu_limit(pcpus: int, vcpu_overcommit: float) -> int:
    """The most vCPUs a host may run: ``floor(pcpus * vcpu_overcommit)`` (:meth:`Inventory.largest_host` says the
    same in SQL)."""
    return int(pcpus * vcpu_overcommit)


# --- policies as text ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VmPolicy:
    """``pinned`` features, or the ``legacy`` release the VM knows."""

    pinned: frozenset[str] | None = None
    legacy: str | None = None

    def features(self, guest_type: GuestType | str) -> frozenset[str]:
        if self.pinned is not None:
            return self.pinned
        assert self.legacy is not None
        return features_of_version(get_release(self.legacy).version, guest_type)

    def __str__(self) -> str:
        if self.pinned is not None:
            return "pinned:" + ",".join(sorted(self.pinned, key=lambda name: REGISTRY[name].bit))
        return f"legacy:{self.legacy}"


def parse_policy(text: str) -> VmPolicy:
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("pinned", "legacy"):
        raise ValueError(f"policy {text!r} is neither pinned:<features> nor legacy:<release>")
    if kind == "legacy":
        return VmPolicy(legacy=parse_release(rest))
    names = [name.strip() for name in rest.split(",") if name.strip()]
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"unknown feature {name!r} (known: {', '.join(REGISTRY.names())})")
    return VmPolicy(pinned=frozenset(names))


def parse_release(text: str) -> str:
    try:
        return normal_name(text)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None


def parse_bool(text: object) -> int:
    if isinstance(text, bool):
        return int(text)
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes"):
        return 1
    if lowered in ("0", "false", "no"):
        return 0
    raise ValueError(f"{text!r} is not a boolean (1/0, true/false, yes/no)")


def parse_guest_type(text: str) -> str:
    try:
        return GuestType(text).value
    except ValueError:
        raise ValueError(f"guest type {text!r} is not one of hvm, pvh, pv") from None


# --- the database ----------------------------------------------------------------------------------------------
class Inventory:
    """An inventory in one SQLite file (``:memory:`` for a throwaway one)."""

    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = str(path)
        try:
            # transactions are explicit; a second writer waits up to LOCK_TIMEOUT for the first
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_TIMEOUT)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(SCHEMA)
            self._add_optional_columns()
            # an index made before issue 18 lacks the boot-option column
            if "gnttab_max_version" not in {row[2] for row in self.db.execute("PRAGMA index_info(hosts_by_class)")}:
                self.db.execute("DROP INDEX IF EXISTS hosts_by_class")
            for statement in INDEXES:
                self.db.execute(statement)
        except sqlite3.Error as exc:
            raise InventoryError(f"cannot open the inventory: {_sqlite_reason(exc)}", file=self.path) from exc

    def _add_optional_columns(self) -> None:
        for table, column, kind in OPTIONAL_COLUMNS:
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                default = (HOST_DEFAULTS if table == "hosts" else VM_DEFAULTS)[column]
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind} NOT NULL DEFAULT {default}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- reads ----------------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        hosts = self.db.execute("SELECT COUNT(*) FROM hosts").fetchone()[0]
        vms = self.db.execute("SELECT COUNT(*) FROM vms").fetchone()[0]
        return hosts, vms

    def host(self, name: str) -> tuple[int, str, str, bool]:
        row = self.db.execute("SELECT id, pool, release, abi_control FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise InventoryError(f"no host named {name!r}", field="host")
        return row[0], row[1], row[2], bool(row[3])

    def vm(self, name: str) -> tuple[str, str, str]:
        """(guest type, host name, policy text)."""
        row = self.db.execute(
            "SELECT v.guest_type, h.name, p.text FROM vms v JOIN hosts h ON h.id = v.host_id "
            "JOIN policies p ON p.id = v.policy_id WHERE v.name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise InventoryError(f"no VM named {name!r}", field="vm")
        return row[0], row[1], row[2]

    def _one_master_per_pool(self, checked: list[tuple[str, list[Any], list[Any]]]) -> None:
        """A pool has at most one master (XAPI's pool master, which a rolling upgrade takes first)."""
        row = self.db.execute(
            "SELECT pool, COUNT(*) FROM hosts WHERE pool_master = 1 GROUP BY pool HAVING COUNT(*) > 1 LIMIT 1"
        ).fetchone()
        if row is None:
            return
        last = [(source, line) for source, hosts, _vms in checked for line, values in hosts
                if values[1] == row[0] and values[HOST_COLUMNS.index("pool_master")]]  # fmt: skip
        if last:  # the row that made it one too many
            raise InventoryError(f"pool {row[0]!r} would have {row[1]} masters; a pool has one", file=last[-1][0],
                                 line=last[-1][1], field="pool_master")  # fmt: skip
        raise InventoryError(f"pool {row[0]!r} has {row[1]} masters; a pool has one", field="pool_master")

    def largest_host(self) -> tuple[int, int]:
        """The most memory (MiB) and the most vCPUs any one host of the inventory may hold (0, 0 without hosts)."""
        row = self.db.execute(
            "SELECT MAX(memory_mib), MAX(CAST(pcpus * vcpu_overcommit AS INTEGER)) FROM hosts"
        ).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def pools(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT pool FROM hosts ORDER BY pool")]

    def policy_id(self, text: str) -> int:
        self.db.execute("INSERT OR IGNORE INTO policies(text) VALUES (?)", (text,))
        return int(self.db.execute("SELECT id FROM policies WHERE text = ?", (text,)).fetchone()[0])

    # --- imports -------------------------------------------------------------------------------------------------
    def import_file(
        self, path: str | Path, *, replace: bool = False, progress: Progress | None = None
    ) -> tuple[int, int]:
        """Import hosts and/or VMs from a CSV or JSON file, all or nothing. Returns (hosts, vms) written."""
        return self.import_files([path], replace=replace, progress=progress)[0]

    def import_files(
        self, paths: Iterable[str | Path], *, replace: bool = False, progress: Progress | None = None
    ) -> list[tuple[int, int]]:
        """Import every file in one transaction: all of them or none (see the module docstring). ``replace``
        empties the inventory first, in the same transaction. Returns (hosts, vms) written per file."""
        batches = [read_rows(path) for path in paths]
        return self.write_batches(batches, replace=replace, progress=progress)

    def write_batches(
        self, batches: list[RowBatch], *, replace: bool = False, progress: Progress | None = None
    ) -> list[tuple[int, int]]:
        """Validate every row of every batch, then write them all in one transaction."""
        checked = [
            (
                batch.source,
                _unique([(line, _host_values(row, batch.source, line)) for line, row in batch.hosts], batch.source),
                _unique([(line, _vm_values(row, batch.source, line)) for line, row in batch.vms], batch.source),
            )
            for batch in batches
        ]
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise InventoryError(
                f"another command is writing the inventory ({_sqlite_reason(exc)}); try again when it has finished",
                file=self.path,
            ) from exc
        try:
            if replace:
                db.execute("DELETE FROM vms")
                db.execute("DELETE FROM hosts")
            for _source, hosts, _vms in checked:
                db.executemany(
                    "INSERT INTO hosts(name, pool, release, abi_control, memory_mib, pcpus, vcpu_overcommit, "
                    "pool_master, gnttab_max_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET pool = excluded.pool, release = excluded.release, "
                    "abi_control = excluded.abi_control, memory_mib = excluded.memory_mib, pcpus = excluded.pcpus, "
                    "vcpu_overcommit = excluded.vcpu_overcommit, pool_master = excluded.pool_master, "
                    "gnttab_max_version = excluded.gnttab_max_version",
                    [values for _line, values in hosts],
                )
            self._one_master_per_pool(checked)
            host_ids = dict(db.execute("SELECT name, id FROM hosts"))
            largest_memory, largest_vcpus = self.largest_host()
            policy_ids: dict[str, int] = {}
            for source, _hosts, vms in checked:
                for written, (line, (name, guest_type, host, policy, memory, vcpus)) in enumerate(vms, start=1):
                    if host not in host_ids:
                        raise InventoryError(f"no host named {host!r}", file=source, line=line, field="host")
                    if memory > largest_memory:
                        raise InventoryError(f"{memory} MiB is more than any host has ({largest_memory} MiB)",
                                             file=source, line=line, field="memory_mib")  # fmt: skip
                    if vcpus > largest_vcpus:
                        raise InventoryError(f"{vcpus} vCPUs is more than any host may run ({largest_vcpus})",
                                             file=source, line=line, field="vcpus")  # fmt: skip
                    if policy not in policy_ids:
                        policy_ids[policy] = self.policy_id(policy)
                    db.execute(
                        "INSERT INTO vms(name, guest_type, host_id, policy_id, memory_mib, vcpus) "
                        "VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET guest_type = excluded.guest_type, "
                        "host_id = excluded.host_id, policy_id = excluded.policy_id, "
                        "memory_mib = excluded.memory_mib, vcpus = excluded.vcpus",
                        (name, guest_type, host_ids[host], policy_ids[policy], memory, vcpus),
                    )
                    if progress is not None and written % PROGRESS_EVERY == 0:
                        progress(PROGRESS_EVERY)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [(len(hosts), len(vms)) for _source, hosts, vms in checked]

    # --- export ---------------------------------------------------------------------------------------------------
    def export_json(self) -> dict[str, list[dict[str, Any]]]:
        hosts = [
            {"name": n, "pool": p, "release": r, "abi_control": bool(c), "memory_mib": m, "pcpus": cpus,
             "vcpu_overcommit": ratio, "pool_master": bool(master), "gnttab_max_version": max_version}
            for n, p, r, c, m, cpus, ratio, master, max_version in self.host_rows()
        ]  # fmt: skip
        return {"hosts": hosts, "vms": [dict(zip(VM_COLUMNS, row, strict=True)) for row in self.vm_rows()]}

    def host_rows(self) -> Iterator[tuple[str, str, str, int, int, int, float, int, int]]:
        yield from self.db.execute(
            "SELECT name, pool, release, abi_control, memory_mib, pcpus, vcpu_overcommit, pool_master, "
            "gnttab_max_version FROM hosts ORDER BY id"
        )

    def vm_rows(self) -> Iterator[tuple[str, str, str, str, int, int]]:
        yield from self.db.execute(
            "SELECT v.name, v.guest_type, h.name, p.text, v.memory_mib, v.vcpus FROM vms v "
            "JOIN hosts h ON h.id = v.host_id JOIN policies p ON p.id = v.policy_id ORDER BY v.id"
        )

    def export_csv(self, hosts_out: io.TextIOBase, vms_out: io.TextIOBase) -> None:
        writer = csv.writer(hosts_out, lineterminator="\n")
        writer.writerow(HOST_COLUMNS)
        writer.writerows((n, p, r, c, m, cpus, f"{ratio:g}", master, max_version)
                         for n, p, r, c, m, cpus, ratio, master, max_version in self.host_rows())  # fmt: skip
        writer = csv.writer(vms_out, lineterminator="\n")
        writer.writerow(VM_COLUMNS)
        writer.writerows(self.vm_rows())

    # --- synthetic fleets -------------------------------------------------------------------------------------------
    def synth(self, vms: int, hosts: int, *, seed: int = 1, progress: Progress | None = None) -> None:
        """Replace the inventory with a synthetic fleet (see :func:`synth_hosts` and :func:`synth_vms`)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM vms")
            db.execute("DELETE FROM hosts")
            for index in VM_INDEXES:
                db.execute(f"DROP INDEX IF EXISTS {index}")
            rng = random.Random(seed)
            host_rows = synth_hosts(hosts, rng)
            db.executemany("INSERT INTO hosts(id, name, pool, release, abi_control) VALUES (?, ?, ?, ?, ?)", host_rows)
            policy_texts = sorted({text for choices in _policy_menu().values() for text in choices})
            policy_ids = {text: self.policy_id(text) for text in policy_texts}
            used_memory = [0] * (hosts + 1)
            used_vcpus = [0] * (hosts + 1)
            for chunk in synth_vms(vms, host_rows, rng, policy_ids):
                db.executemany(
                    "INSERT INTO vms(id, name, guest_type, host_id, policy_id, memory_mib, vcpus) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    chunk,
                )
                for row in chunk:
                    used_memory[row[3]] += row[5]
                    used_vcpus[row[3]] += row[6]
                if progress is not None:
                    progress(len(chunk))
            db.executemany(
                "UPDATE hosts SET memory_mib = ?, pcpus = ? WHERE id = ?",
                synth_capacity(used_memory, used_vcpus, rng),
            )
            db.execute("UPDATE hosts SET pool_master = 1 WHERE id IN (SELECT MIN(id) FROM hosts GROUP BY pool)")
            for statement in INDEXES:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("ANALYZE")


# --- synthetic fleet generation -------------------------------------------------------------------------------------
RELEASE_WEIGHTS = {"4.3": 1, "4.4": 1, "4.5": 1, "4.6": 1, "4.7": 1, "4.8": 1, "4.9": 1, "4.10": 1, "4.11": 2,
                   "4.12": 2, "4.13": 2, "4.14": 3, "4.15": 3, "4.16": 8, "4.17": 14, "4.18": 14, "4.19": 16,
                   "4.20": 14, "4.21": 10, "4.22": 4}  # fmt: skip
"""A modern fleet: mostly 4.16 to 4.22, with a tail of old releases."""
CONTROLLED_FROM = "4.16"  # hosts from this release on have ABI control three times in four, older ones one in ten
GUEST_TYPE_WEIGHTS = {"hvm": 60, "pvh": 25, "pv": 15}


def synth_hosts(n: int, rng: random.Random) -> list[tuple[int, str, str, str, int]]:
    """Pools of about 500 hosts; each pool is mostly one release (rolling upgrades leave a few on the previous
    one); hosts on 4.16 or later have ABI control three times in four, older ones one time in ten. The first host
    of each pool is its master (set by :meth:`Inventory.synth`)."""
    releases = list(RELEASE_WEIGHTS)
    rows = []
    pools = max(1, n // 500)
    pool_release = rng.choices(releases, weights=list(RELEASE_WEIGHTS.values()), k=pools)
    for i in range(n):
        pool = i % pools
        release = pool_release[pool]
        if rng.random() < 0.1:
            index = releases.index(release)
            release = releases[max(0, index - 1)]
        modern = get_release(release).version >= get_release(CONTROLLED_FROM).version
        control = rng.random() < (0.75 if modern else 0.1)
        rows.append((i + 1, f"host{i + 1:06d}", f"pool{pool:04d}", release, int(control)))
    return rows


VM_SHAPES = ((1024, 1, 15), (2048, 1, 15), (2048, 2, 10), (4096, 2, 30), (8192, 4, 18), (16384, 8, 9),
             (32768, 8, 3))  # fmt: skip
"""(memory MiB, vCPUs, weight) of synthetic VMs: mostly small, a tail of large ones (about 5.7 GiB on average)."""
HOST_MEMORY_GIB = (256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
"""Synthetic hosts are built in these sizes (GiB for guests); each gets the smallest that leaves it 20-40% free."""


def synth_capacity(used_memory: list[int], used_vcpus: list[int], rng: random.Random) -> Iterator[tuple[int, int, int]]:
    """(memory_mib, pcpus, host id) for every synthetic host: the smallest standard size that its VMs fill to 60-80%,
    and 4 GiB per physical CPU (more CPUs where its vCPUs would pass 3.2 per CPU, 80% of the default limit)."""
    for host_id in range(1, len(used_memory)):
        fill = rng.uniform(0.6, 0.8)
        need = used_memory[host_id] / fill
        gib = next((size for size in HOST_MEMORY_GIB if size * 1024 >= need), HOST_MEMORY_GIB[-1])
        pcpus = max(gib // 4, -(-used_vcpus[host_id] * 10 // 32))
        yield gib * 1024, -(-pcpus // 8) * 8, host_id


def _policy_menu() -> dict[tuple[str, bool, str], list[str]]:
    """For each (host release, abi_control, guest type): the policies its VMs carry, most likely first."""
    menu = {}
    for release in RELEASES:
        for control in (False, True):
            for kind in GuestType:
                features = features_of_version(RELEASES[release].version, kind)
                own = str(VmPolicy(pinned=features))
                if control:
                    # a controlled host only holds VMs it admits: its own default, a levelled FIFO-only policy
                    # where it has FIFO, nothing (pinned from 4.3), or its release's legacy policy
                    levelled = "pinned:evtchn_fifo" if "evtchn_fifo" in features else own
                    choices = [own, levelled, "pinned:", f"legacy:{release}"]
                else:
                    older = list(RELEASES)[max(0, list(RELEASES).index(release) - 2)]
                    choices = [f"legacy:{release}", f"legacy:{older}"]
                menu[(release, control, kind.value)] = choices
    return menu


def synth_vms(
    n: int, hosts: list[tuple[int, str, str, str, int]], rng: random.Random, policy_ids: dict[str, int]
) -> Iterator[list[tuple[int, str, str, int, int, int, int]]]:
    """VMs spread over the hosts. On a controlled host most are pinned to what it gave them, some to a levelled
    FIFO-only policy, a few to nothing (pinned from Xen 4.3 hosts) or not pinned at all (they predate control); on
    an uncontrolled host most know its release and some an older one (moved in by a legacy toolstack). Sizes are
    drawn from :data:`VM_SHAPES`."""
    menu = _policy_menu()
    kinds = list(GUEST_TYPE_WEIGHTS)
    kind_weights = list(GUEST_TYPE_WEIGHTS.values())
    controlled_weights, legacy_weights = [70, 20, 5, 5], [95, 5]
    shape_weights = [weight for _memory, _vcpus, weight in VM_SHAPES]
    chunk = 100_000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        placed = rng.choices(hosts, k=size)
        types = rng.choices(kinds, weights=kind_weights, k=size)
        picks = rng.choices(range(4), weights=controlled_weights, k=size)
        old = rng.choices(range(2), weights=legacy_weights, k=size)
        shapes = rng.choices(VM_SHAPES, weights=shape_weights, k=size)
        rows = []
        for i in range(size):
            host = placed[i]
            control = bool(host[4])
            choices = menu[(host[3], control, types[i])]
            text = choices[picks[i]] if control else choices[old[i]]
            vm_id = start + i + 1
            shape = shapes[i]
            rows.append((vm_id, f"vm{vm_id:08d}", types[i], host[0], policy_ids[text], shape[0], shape[1]))
        yield rows


# --- parsing input rows -----------------------------------------------------------------------------------------------
Rows = list[tuple[int, dict[str, Any]]]


@dataclass
class RowBatch:
    """The rows of one input file, not yet validated: (line, fields) for hosts and for VMs."""

    source: str
    hosts: Rows
    vms: Rows


def read_rows(path: str | Path) -> RowBatch:
    """Read one CSV or JSON inventory file into rows (:class:`~xenabi.errors.InventoryError` naming the file,
    line and field when it cannot be read or parsed)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read: {exc}", file=source) from exc
    if source.endswith(".json") or text.lstrip().startswith("{"):
        hosts, vms = _json_rows(text, source)
    else:
        hosts, vms = _csv_rows(text, source)
    return RowBatch(source, hosts, vms)


def _unique(rows: list[tuple[int, tuple[Any, ...]]], source: str) -> list[tuple[int, tuple[Any, ...]]]:
    """Rows whose names (the first value) appear once in the file."""
    first: dict[str, int] = {}
    for line, values in rows:
        earlier = first.setdefault(values[0], line)
        if earlier != line:
            raise InventoryError(
                f"{values[0]!r} appears twice in this file (first on line {earlier})", file=source, line=line,
                field="name",
            )  # fmt: skip
    return rows


def _sqlite_reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text:
        return f"it is locked by another writer (waited {LOCK_TIMEOUT:g} s)"
    if "not a database" in text:
        return "the file is not an SQLite database"
    if "unable to open" in text:
        return "no such folder, or not a file that can be opened"
    return text


def _csv_rows(text: str, source: str) -> tuple[Rows, Rows]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InventoryError("empty file", file=source, line=1) from None
    except csv.Error as exc:
        raise InventoryError(f"not CSV: {exc}", file=source, line=1) from None
    header = [column.strip() for column in header]
    kind = _csv_kind(header, source)
    rows: Rows = []
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a field over the csv module's 128 KiB limit, a NUL byte, ...
            raise InventoryError(f"not CSV: {exc}", file=source, line=reader.line_num) from None
        line = reader.line_num
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise InventoryError(f"{len(values)} fields, expected {len(header)}", file=source, line=line)
        rows.append((line, dict(zip(header, (v.strip() for v in values), strict=True))))
    return (rows, []) if kind == "hosts" else ([], rows)


def _csv_kind(header: list[str], source: str) -> str:
    """The kind of rows, "hosts" or "vms": required columns first, then optional columns in any order, once each."""
    for kind, required, optional in (("hosts", HOST_FIELDS, HOST_DEFAULTS), ("vms", VM_FIELDS, VM_DEFAULTS)):
        if tuple(header[: len(required)]) != required:
            continue
        extra = header[len(required) :]
        for column in extra:
            if column not in optional:
                raise InventoryError(f"unknown column {column!r} (optional columns: {', '.join(optional)})",
                                     file=source, line=1, field=column)  # fmt: skip
        if len(set(extra)) != len(extra):
            raise InventoryError("an optional column appears twice", file=source, line=1)
        return kind
    raise InventoryError(
        f"header {','.join(header)!r} begins with neither {','.join(HOST_FIELDS)!r} nor {','.join(VM_FIELDS)!r}",
        file=source,
        line=1,
    )


def _json_rows(text: str, source: str) -> tuple[Rows, Rows]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"not JSON: {exc.msg}", file=source, line=exc.lineno) from exc
    except RecursionError:
        raise InventoryError("not JSON this tool reads: nested too deeply", file=source) from None
    except ValueError as exc:  # an integer past Python's digit limit
        raise InventoryError(f"not JSON this tool reads: {exc}", file=source) from None
    if not isinstance(doc, dict) or set(doc) - {"hosts", "vms"}:
        raise InventoryError('a JSON inventory is an object with "hosts" and/or "vms" lists', file=source)
    out = []
    for key in ("hosts", "vms"):
        rows = doc.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise InventoryError(f'"{key}" must be a list of objects', file=source, field=key)
        out.append(list(enumerate(rows, start=1)))
    return out[0], out[1]


def _field(row: dict[str, Any], name: str, source: str, line: int) -> str:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InventoryError("missing", file=source, line=line, field=name)
    if isinstance(value, bool | int) and name == "abi_control":  # JSON true/false or 1/0; parse_bool judges
        return str(value)
    if not isinstance(value, str):
        raise InventoryError(f"must be a string, not a JSON {_json_kind(value)}", file=source, line=line, field=name)
    text = value.strip()
    if len(text) > MAX_NAME:
        raise InventoryError(f"{len(text)} characters; at most {MAX_NAME}", file=source, line=line, field=name)
    bad = next((ch for ch in text if ch < " " or ch == "\x7f"), None)
    if bad is not None:
        raise InventoryError(f"contains the control character {bad!r}", file=source, line=line, field=name)
    return text


def _json_kind(value: object) -> str:
    return {dict: "object", list: "list", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")


def _checked(parse: Callable[[str], Any], row: dict[str, Any], name: str, source: str, line: int) -> Any:
    try:
        return parse(_field(row, name, source, line))
    except ValueError as exc:
        raise InventoryError(str(exc), file=source, line=line, field=name) from None


def _capacity(row: dict[str, Any], name: str, defaults: dict[str, int | float], source: str, line: int) -> Any:
    """A capacity column: its default when absent or empty; otherwise a whole number in range (a positive real
    for ``vcpu_overcommit``)."""
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return defaults[name]
    real = name == "vcpu_overcommit"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InventoryError(f"must be a number, not a JSON {_json_kind(value)}", file=source, line=line, field=name)
    try:
        number = float(value) if real else _whole(value)
    except ValueError:
        kind = "a number" if real else "a whole number"
        raise InventoryError(f"{str(value)[:40]!r} is not {kind}", file=source, line=line, field=name) from None
    limit = MAX_OVERCOMMIT if real else (MAX_MEMORY_MIB if name == "memory_mib" else MAX_CPUS)
    if not number > 0:  # also refuses NaN
        raise InventoryError(f"{number:g} is not above zero", file=source, line=line, field=name)
    if number > limit:
        raise InventoryError(f"{number:g} is more than {limit:g}", file=source, line=line, field=name)
    return number


def _optional_bool(row: dict[str, Any], name: str, source: str, line: int) -> int:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(HOST_DEFAULTS[name])
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise InventoryError(str(exc)[:200], file=source, line=line, field=name) from None


def _boot_option(row: dict[str, Any], release: str, source: str, line: int) -> int:
    """``gnttab_max_version``: the host's ``gnttab=max-ver:N``, 2 (Xen's default) when absent; 1 only on a release
    that has the option."""
    value = row.get("gnttab_max_version")
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(HOST_DEFAULTS["gnttab_max_version"])
    number: object = value
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):  # not a whole number: the release's check names it
            number = _whole(value)
    problem = get_release(release).gnttab_max_version_problem(number)
    if problem:
        raise InventoryError(problem[:200], file=source, line=line, field="gnttab_max_version")
    assert isinstance(number, int)
    return number


def _whole(value: int | float | str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    text = value.strip()
    if len(text) > 20 or not text.lstrip("+-").isdigit():  # never converts a million-digit string
        raise ValueError(value)
    return int(text)


def _host_values(row: dict[str, Any], source: str, line: int) -> tuple[Any, ...]:
    unknown = set(row) - set(HOST_COLUMNS)
    if unknown:
        raise InventoryError(f"unknown field {sorted(unknown)[0]!r}", file=source, line=line, field=sorted(unknown)[0])
    release = _checked(parse_release, row, "release", source, line)
    return (
        _field(row, "name", source, line),
        _field(row, "pool", source, line),
        release,
        _checked(parse_bool, row, "abi_control", source, line),
        *(_capacity(row, column, HOST_DEFAULTS, source, line) for column in CAPACITY_FIELDS),
        _optional_bool(row, "pool_master", source, line),
        _boot_option(row, release, source, line),
    )


def _vm_values(row: dict[str, Any], source: str, line: int) -> tuple[Any, ...]:
    unknown = set(row) - set(VM_COLUMNS)
    if unknown:
        raise InventoryError(f"unknown field {sorted(unknown)[0]!r}", file=source, line=line, field=sorted(unknown)[0])
    guest_type = _checked(parse_guest_type, row, "guest_type", source, line)
    policy = _checked(parse_policy, row, "policy", source, line)
    bad = sorted(name for name in policy.features(guest_type) if not REGISTRY[name].applies_to(GuestType(guest_type)))
    if policy.pinned is not None and bad:
        raise InventoryError(f"{bad[0]} does not apply to {guest_type} guests", file=source, line=line, field="policy")
    return (
        _field(row, "name", source, line),
        guest_type,
        _field(row, "host", source, line),
        str(policy),
        *(_capacity(row, column, VM_DEFAULTS, source, line) for column in VM_DEFAULTS),
    )
