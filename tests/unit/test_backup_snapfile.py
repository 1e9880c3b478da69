"""Snapshot files: streamed with etcd's trailer checked, and checked as bbolt databases. The fixture
``tests/data/etcd-3.4-snapshot.db`` is a real snapshot (etcd 3.4.23, 400 keys: branch and leaf pages)
with its trailer. Damage of each kind is refused with one line and leaves no file behind. The `backup
now` plan also runs here end to end over the fake cluster (which streams the same database)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from specs import HOSTS3

from etcdforge.backup import snapfile
from etcdforge.backup.manifest import parse_manifest
from etcdforge.errors import BackupError
from etcdforge.executor import execute
from etcdforge.spec import ClusterSpec, DirTarget
from etcdforge.testing.fakes import fake_runtime
from etcdforge.verbs.backup.plan import BackupRequest, Candidate, plan_backup
from etcdforge.workspace import Workspace

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "etcd-3.4-snapshot.db"
SNAPSHOT = FIXTURE.read_bytes()
DB = SNAPSHOT[:-32]
PAGE = 4096


async def chunks(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def with_trailer(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


def test_the_fixture_is_a_real_snapshot() -> None:
    assert hashlib.sha256(DB).digest() == SNAPSHOT[-32:]
    info = snapfile.check_bbolt(FIXTURE)
    assert info.page_size == PAGE and info.pages_walked > 5 and info.high_water * PAGE == len(DB)


def test_stream_is_written_whole_with_its_hash(tmp_path: Path) -> None:
    dest = tmp_path / "s.db"
    taken = asyncio.run(snapfile.write_stream(chunks(SNAPSHOT), dest))
    assert dest.read_bytes() == SNAPSHOT and taken.size == len(SNAPSHOT)
    assert taken.sha256 == hashlib.sha256(SNAPSHOT).hexdigest() == snapfile.check_trailer(dest)
    assert dest.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[: len(s) // 2],  # the stream stopped half-way
        lambda s: s[:-1],  # one byte short
        lambda s: s[:100] + bytes([s[100] ^ 1]) + s[101:],  # a bit flipped in transfer
        lambda s: s[:20],  # almost nothing
    ],
)
def test_a_damaged_stream_is_refused_and_leaves_nothing(tmp_path: Path, damage: object) -> None:
    dest = tmp_path / "s.db"
    with pytest.raises(BackupError):
        asyncio.run(snapfile.write_stream(chunks(damage(SNAPSHOT)), dest))  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []


def corrupt_page_id(db: bytes) -> bytes:
    """Relabel a page the tree reaches (the root bucket's page) — with a correct trailer."""
    meta = struct.unpack_from("<IIIIQQQQQ", db, 16)
    root = meta[4]
    out = bytearray(db)
    struct.pack_into("<Q", out, root * PAGE, root + 1)
    return bytes(out)


def truncate(db: bytes) -> bytes:
    return db[: len(db) - 2 * PAGE]


def bad_meta(db: bytes) -> bytes:
    out = bytearray(db)
    for page in (0, 1):
        out[page * PAGE + 16] ^= 0xFF  # the magic of both meta pages
    return bytes(out)


@pytest.mark.parametrize(
    ("damage", "message"),
    [(corrupt_page_id, "labelled"), (truncate, "truncated"), (bad_meta, "no valid meta page")],
)
def test_structural_damage_is_found_even_with_a_valid_trailer(
    tmp_path: Path, damage: object, message: str
) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(with_trailer(damage(DB)))  # type: ignore[operator]
    snapfile.check_trailer(path)  # the hash alone cannot see it
    with pytest.raises(BackupError, match=message):
        snapfile.check_bbolt(path)


def test_one_bad_meta_page_falls_back_to_the_other(tmp_path: Path) -> None:
    out = bytearray(DB)
    out[16] ^= 0xFF  # only meta page 0
    path = tmp_path / "s.db"
    path.write_bytes(with_trailer(bytes(out)))
    # bbolt itself opens such a file with meta page 1; so do we (with both bad, the file is refused:
    # see test_structural_damage_is_found_even_with_a_valid_trailer)
    assert snapfile.check_bbolt(path).pages_walked > 5


def test_backup_plan_runs_end_to_end_over_the_fake_cluster(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    spec: ClusterSpec = HOSTS3.model_copy(
        update={
            "backup": HOSTS3.backup.model_copy(
                update={"targets": (DirTarget(name="here", kind="dir", path=str(tmp_path / "store")),)}
            )
        }
    )
    runtime, _, cluster, _ = fake_runtime(spec, ws)
    cluster.db = DB
    backup_id = "20261202T120000Z"
    request = BackupRequest(
        backup_id=backup_id,
        targets=("here",),
        staging_root=ws.root / "backups/.staging",
        stale_staging=(),
        status_tool=None,
        recipients=(),
        recipients_base=str(ws.root),
        level=3,
        base_manifest={
            "id": backup_id,
            "cluster": spec.name,
            "cluster_id": "abc",
            "members": [],
            "source_member": "etcd2",
            "taken": "2026-12-02T12:00:00+00:00",
            "revision": 400,
            "etcd_version": "3.4.23",
            "db_size": 0,
            "raw_sha256": "",
            "spec": "",
            "ca_certs": "",
            "etcdforge_version": "test",
        },
    )
    member = cluster.members[1]
    source = Candidate("etcd2", member.client_url, member.id, False, True, False, 10, 400, "3.4.23", len(DB))
    plan = plan_backup(request, source)
    asyncio.run(execute(plan, runtime))
    folder = tmp_path / "store" / spec.name
    manifest = parse_manifest((folder / f"{backup_id}.manifest.json").read_bytes(), "m")
    assert manifest.raw_sha256 == hashlib.sha256(SNAPSHOT).hexdigest() and manifest.db_size == len(DB)
    assert manifest.check.trailer and manifest.check.bbolt_pages > 5 and manifest.check.status_tool is None
    stored = folder / manifest.stored.key
    assert manifest.stored.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert not (ws.root / "backups/.staging" / backup_id).exists()
    # a re-run of the same plan (a kill after the last step) changes nothing and fails nothing
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    asyncio.run(execute(plan, runtime))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert json.loads((folder / f"{backup_id}.manifest.json").read_text())["id"] == backup_id


def test_a_long_stream_reports_its_progress(tmp_path: Path) -> None:
    from etcdforge import progress

    db = bytes(70 << 20)
    seen: list[str] = []
    with progress.reporting_to(seen.append):
        asyncio.run(snapfile.write_stream(chunks(with_trailer(db), 1 << 20), tmp_path / "s.db", len(db)))
    assert len(seen) == 2 and seen[0].startswith("32 of 70 MiB (46%)"), seen
    # outside a step nothing is reported, and nothing breaks
    asyncio.run(snapfile.write_stream(chunks(with_trailer(db), 1 << 20), tmp_path / "t.db"))
