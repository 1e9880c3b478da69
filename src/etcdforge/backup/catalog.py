"""What a target holds: its backups (manifest checked against the objects), finding one, fetching one.

Role: :func:`read_listing` reads a target's folder into entries (whole, or what is wrong with them);
:func:`find_backup` picks one by id or ``latest``; :func:`fetch_snapshot` downloads a backup and checks
it end to end (stored hash, decryption, decompression, snapshot hash and trailer, bbolt structure), as
``backup verify`` and ``restore`` both need.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etcdforge.backup import pack, snapfile
from etcdforge.backup.manifest import Manifest, is_id, manifest_key, parse_manifest, taken_at
from etcdforge.backup.stores import Store
from etcdforge.errors import BackupError


@dataclass(frozen=True)
class Entry:
    """One backup in a target's listing."""

    backup_id: str
    taken: datetime
    manifest: Manifest | None
    problem: str | None  # why the backup cannot be trusted (missing data, bad manifest), or None
    keys: tuple[str, ...]
    size: int

    @property
    def ok(self) -> bool:
        return self.problem is None and self.manifest is not None


async def read_listing(store: Store) -> tuple[Entry, ...]:
    """Every backup in ``store``: manifests read and checked against the objects present."""
    objects = {e.key: e.size for e in await store.list()}
    ids = sorted({k.split(".", 1)[0] for k in objects if is_id(k.split(".", 1)[0])})
    out: list[Entry] = []
    for backup_id in ids:
        keys = tuple(k for k in objects if k.split(".", 1)[0] == backup_id)
        mkey = manifest_key(backup_id)
        ordered = tuple(sorted(keys, key=lambda k: (k != mkey, k)))  # the manifest first
        manifest: Manifest | None = None
        problem: str | None = None
        if mkey not in objects:
            problem = "no manifest (an interrupted backup)"
        else:
            data = await store.get_bytes(mkey)
            try:
                manifest = parse_manifest(data or b"", mkey)
            except BackupError as exc:
                problem = str(exc)
            if manifest is not None:
                size = objects.get(manifest.stored.key)
                if size is None:
                    problem = f"{manifest.stored.key} is missing"
                elif size != manifest.stored.size:
                    problem = (
                        f"{manifest.stored.key} is {size} bytes, the manifest says {manifest.stored.size}"
                    )
        out.append(
            Entry(
                backup_id,
                taken_at(backup_id),
                manifest,
                problem,
                ordered,
                sum(objects[k] for k in keys),
            )
        )
    return tuple(out)


async def fetch_snapshot(
    store: Store, manifest: Manifest, dest: Path, identities: Sequence[Path], work: Path
) -> list[str]:
    """Download a backup, check the stored file's hash, decrypt and decompress it to ``dest``, check the
    snapshot's hash, trailer and bbolt structure; return what was checked."""
    ids = pack.identities_from(list(identities)) if manifest.stored.encrypted else []
    local = store.local_path(manifest.stored.key)  # a directory target: read in place, no copy
    stored = local or work / manifest.stored.key
    if local is None:
        await store.get_file(manifest.stored.key, stored)
    try:
        digest, raw, trailer_ok = await asyncio.to_thread(
            pack.unpack_snapshot, stored, dest, ids, encrypted=manifest.stored.encrypted
        )
    finally:
        if local is None:
            stored.unlink(missing_ok=True)
    if digest != manifest.stored.sha256:
        raise BackupError(f"{manifest.stored.key}: sha256 {digest[:12]}… differs from the manifest's")
    checks = [f"{manifest.stored.key}: sha256 matches the manifest"]
    if manifest.stored.encrypted:
        checks.append("decrypted with the given identity")
    if not trailer_ok:
        raise BackupError(f"backup {manifest.id}: the snapshot's SHA-256 trailer does not match (corrupted)")
    if raw != manifest.raw_sha256:
        raise BackupError(f"backup {manifest.id}: the snapshot's sha256 differs from the manifest's")
    checks.append("snapshot sha256 matches the manifest; etcd's trailer matches")
    info = await asyncio.to_thread(snapfile.check_bbolt, dest)
    checks.append(f"bbolt structure: {info.pages_walked} pages reachable, none twice, none out of range")
    return checks


async def find_backup(store: Store, wanted: str) -> Manifest:
    """The manifest of backup ``wanted`` (an id, or ``latest``: the newest whole backup)."""
    entries = await read_listing(store)
    if wanted == "latest":
        whole = [e for e in entries if e.ok]
        if not whole:
            raise BackupError(f"no whole backup in {store.where}")
        chosen = whole[-1]
    else:
        match = next((e for e in entries if e.backup_id == wanted), None)
        if match is None:
            raise BackupError(f"no backup {wanted} in {store.where}", hint="`etcdforge backup list`")
        if match.problem:
            raise BackupError(f"backup {wanted}: {match.problem}")
        chosen = match
    assert chosen.manifest is not None
    return chosen.manifest
