"""The runtime's backup actions: take, check, pack, describe, store and delete backups.

Role: carry out :class:`~etcdforge.plan.TakeSnapshot`, :class:`~etcdforge.plan.CheckSnapshot`,
:class:`~etcdforge.plan.PackBackup`, :class:`~etcdforge.plan.WriteManifest`,
:class:`~etcdforge.plan.StoreBackup` and :class:`~etcdforge.plan.DeleteBackup` for
:class:`~etcdforge.runtime.core.Runtime`.

Invariants: every action is idempotent (a file that exists complete is not made again; an object already
stored with the same size is not sent again), so a re-run after a kill finishes the same backup; files
move a chunk at a time; steps hand results to later steps through files in the staging directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdforge.backup import catalog, pack, snapfile
from etcdforge.backup.manifest import STAGING_MARKER, Check, Manifest, Stored
from etcdforge.backup.stores import open_store
from etcdforge.errors import BackupError, EtcdUnavailable
from etcdforge.fsutil import atomic_write
from etcdforge.hosts.scripts import RESTORE_SCRIPT
from etcdforge.plan import (
    CheckRestored,
    CheckSnapshot,
    DeleteBackup,
    FetchBackup,
    PackBackup,
    PackPki,
    RestoreData,
    StoreBackup,
    TakeSnapshot,
    WriteManifest,
)

if TYPE_CHECKING:
    from etcdforge.runtime.core import Runtime

#: a snapshot stream that cannot connect is tried this many times
SNAPSHOT_ATTEMPTS = 3

BackupAction = (
    TakeSnapshot
    | CheckSnapshot
    | PackBackup
    | PackPki
    | WriteManifest
    | StoreBackup
    | DeleteBackup
    | FetchBackup
    | RestoreData
    | CheckRestored
)


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


async def perform(runtime: Runtime, action: BackupAction) -> str:
    if isinstance(action, TakeSnapshot):
        return await take(runtime, action)
    if isinstance(action, CheckSnapshot):
        return await check(action)
    if isinstance(action, PackBackup):
        return await asyncio.to_thread(_pack, action)
    if isinstance(action, PackPki):
        return await asyncio.to_thread(_pack_pki, action)
    if isinstance(action, WriteManifest):
        return await asyncio.to_thread(_manifest, action)
    if isinstance(action, StoreBackup):
        return await store(runtime, action)
    if isinstance(action, FetchBackup):
        return await fetch(runtime, action)
    if isinstance(action, RestoreData):
        return await restore_data(runtime, action)
    if isinstance(action, CheckRestored):
        return await check_restored(runtime, action)
    return await delete(runtime, action)


async def take(runtime: Runtime, action: TakeSnapshot) -> str:
    dest = Path(action.dest)
    if dest.is_file():
        return "already taken"
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (dest.parent / STAGING_MARKER).touch()
    for attempt in range(SNAPSHOT_ATTEMPTS):
        try:
            async with runtime.cluster(10.0) as client:
                taken = await snapfile.write_stream(client.snapshot(action.url), dest, action.expected)
            break
        except EtcdUnavailable:
            # a connection that did not come up (a busy machine, a member electing): again, from the start
            if attempt + 1 == SNAPSHOT_ATTEMPTS:
                raise
            await runtime.sleep(1.0 + attempt)
    return f"{_mib(taken.size)} from {action.member}, trailer checked"


async def status_report(tool: str, path: Path) -> dict[str, Any]:
    """``<tool> snapshot status PATH -w json`` (etcdutl, or etcdctl with the v3 API)."""
    proc = await asyncio.create_subprocess_exec(
        tool,
        "snapshot",
        "status",
        str(path),
        "-w",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        line = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise BackupError(f"{Path(tool).name} snapshot status refused {path.name}: {line[:300]}")
    try:
        data: dict[str, Any] = json.loads(out)
    except ValueError:
        raise BackupError(f"{Path(tool).name} snapshot status printed no JSON") from None
    return data


async def check(action: CheckSnapshot) -> str:
    report = Path(action.report)
    if report.is_file():
        return "already checked"
    path = Path(action.path)
    # the stream checked etcd's trailer and recorded the file's hash as it wrote it (one read, not two)
    raw_sha256 = snapfile.recorded_sha256(path) or await asyncio.to_thread(snapfile.check_trailer, path)
    # the structural walk and `snapshot status` read the same file: side by side
    walk = asyncio.to_thread(snapfile.check_bbolt, path)
    if action.tool:
        info, status = await asyncio.gather(walk, status_report(action.tool, path))
    else:
        info, status = await walk, {}
    found = Check(trailer=True, bbolt_pages=info.pages_walked)
    if action.tool:
        found = found.model_copy(
            update={
                "status_tool": Path(action.tool).name,
                "hash": int(status.get("hash", 0)),
                "total_keys": int(status.get("totalKey", 0)),
                "revision": int(status.get("revision", 0)),
            }
        )
    facts = {
        "check": found.model_dump(mode="json"),
        "db_size": path.stat().st_size - snapfile.TRAILER,
        "raw_sha256": raw_sha256,
    }
    atomic_write(report, json.dumps(facts).encode(), 0o600)
    keys = f", {found.total_keys} keys at revision {found.revision}" if action.tool else ""
    return f"trailer and {info.pages_walked} bbolt pages checked{keys}"


def _pack(action: PackBackup) -> str:
    dest, summary = Path(action.dest), Path(action.dest + ".sum")
    if dest.is_file() and summary.is_file():
        return "already packed"
    recipients = pack.recipients_from(action.recipients, Path(action.base))
    size, digest = pack.pack(Path(action.source), dest, recipients, action.level)
    atomic_write(summary, json.dumps({"size": size, "sha256": digest}).encode(), 0o600)
    raw = Path(action.source).stat().st_size
    return f"{_mib(raw)} -> {_mib(size)}" + (", encrypted" if recipients else "")


def _pack_pki(action: PackPki) -> str:
    import io
    import tarfile

    dest, summary = Path(action.dest), Path(action.dest + ".sum")
    if dest.is_file() and summary.is_file():
        return "already packed"
    recipients = pack.recipients_from(action.recipients, Path(action.base))
    if not recipients:
        raise BackupError("--include-pki needs encryption: name age recipients in backup.encrypt_to")
    buffer = io.BytesIO()  # the PKI is a few kilobytes
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(action.source, arcname="pki", recursive=True)
    raw = Path(action.dest + ".tar")
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    try:
        import pyrage

        part = Path(action.dest + ".part")
        with (
            raw.open("rb") as src,
            os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out,
        ):
            pyrage.encrypt_io(src, out, list(recipients))
        os.replace(part, dest)
    finally:
        raw.unlink(missing_ok=True)
    data = dest.read_bytes()
    atomic_write(
        summary, json.dumps({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}).encode(), 0o600
    )
    return f"{len(data)} bytes, encrypted"


def _manifest(action: WriteManifest) -> str:
    dest = Path(action.dest)
    if dest.is_file():
        return "already written"
    base = json.loads(action.base)
    facts = json.loads(Path(action.report).read_bytes())
    found = Check.model_validate(facts["check"])
    summary = json.loads(Path(action.packed + ".sum").read_bytes())
    stored = Stored.model_validate({**base.pop("stored"), **summary})
    if action.pki:
        base["pki"] = {"key": Path(action.pki).name, **json.loads(Path(action.pki + ".sum").read_bytes())}
    manifest = Manifest.model_validate(
        {
            **base,
            "stored": stored,
            "check": found,
            "db_size": facts["db_size"],
            "raw_sha256": facts["raw_sha256"],
        }
    )
    atomic_write(dest, manifest.to_bytes(), 0o600)
    return f"revision {manifest.restore_revision}"


async def store(runtime: Runtime, action: StoreBackup) -> str:
    target = runtime.spec.backup.target(action.target)
    async with open_store(runtime.spec, runtime.ws, target) as st:
        have = {e.key: e.size for e in await st.list()}
        sent = 0
        for local, key in action.files:
            size = Path(local).stat().st_size
            if have.get(key) == size:
                continue
            await st.put_file(Path(local), key)
            sent += size
    return f"{_mib(sent)} sent to {st.where}" if sent else f"already in {st.where}"


async def delete(runtime: Runtime, action: DeleteBackup) -> str:
    target = runtime.spec.backup.target(action.target)
    async with open_store(runtime.spec, runtime.ws, target) as st:
        for key in action.keys:
            await st.delete(key)
    return f"{len(action.keys)} object(s) deleted"


async def fetch(runtime: Runtime, action: FetchBackup) -> str:
    dest = Path(action.dest)
    mark = dest.with_name(dest.name + ".verified")
    if dest.is_file() and mark.is_file():
        return "already fetched and verified"
    target = runtime.spec.backup.target(action.target)
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (dest.parent / STAGING_MARKER).touch()
    async with open_store(runtime.spec, runtime.ws, target) as st:
        manifest = await catalog.find_backup(st, action.backup_id)
        checks = await catalog.fetch_snapshot(
            st, manifest, dest, [Path(i) for i in action.identities], dest.parent
        )
    atomic_write(mark, "\n".join(checks).encode() + b"\n", 0o600)
    return (
        f"{_mib(dest.stat().st_size)}; "
        + "; ".join(c.split(":")[0] for c in checks[:1])
        + "; all checks passed"
    )


async def restore_data(runtime: Runtime, action: RestoreData) -> str:
    host = runtime.host(action.member)
    argv = [
        "sh",
        "-c",
        RESTORE_SCRIPT,
        "sh",
        action.data_dir,
        action.aside,
        action.snapshot,
        action.tool_dir,
        action.owner or "",
        *action.restore_args,
    ]
    result = await host.run(argv, timeout=1800)
    return result.stdout.decode(errors="replace").strip() or "restored"


async def check_restored(runtime: Runtime, action: CheckRestored) -> str:
    from etcdforge import topology

    urls = [topology.client_url(runtime.spec, runtime.spec.member(m)) for m in action.members]
    async with runtime.cluster(10.0) as client:
        statuses = [await client.status(u) for u in urls]
        low = [s for s in statuses if s.revision < action.revision]
        if low:
            raise BackupError(
                f"after the restore a member is at revision {low[0].revision}, "
                f"below the backup's {action.revision}"
            )
        revision = min(s.revision for s in statuses)
        # every member holds the same keys at that revision (a count from each one's own index: cheap,
        # where a KV hash would read the whole database on every member)
        counts = {
            u: (
                await client.get(
                    b"", prefix=True, count_only=True, serializable=True, revision=revision, endpoint=u
                )
            ).count
            for u in urls
        }
    if len(set(counts.values())) != 1:
        raise BackupError(
            f"after the restore the members disagree on the number of keys at revision {revision}"
        )
    keys = next(iter(counts.values()))
    return f"every member at revision ≥ {action.revision}; {keys} keys on each at revision {revision}"
