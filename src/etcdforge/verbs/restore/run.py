"""``restore BACKUP|latest``: the whole cluster from a backup, in both modes, resumable.

observe (the record of a restore in flight; the backup's manifest in its target; the restore tool's
version where the members run) → plan (:mod:`~etcdforge.verbs.restore.plan`, pure) → execute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdforge import layout
from etcdforge.backup.catalog import find_backup
from etcdforge.backup.manifest import Manifest
from etcdforge.backup.stores import open_store
from etcdforge.errors import BackupError, PlanError
from etcdforge.executor import Confirm, Reporter, execute
from etcdforge.hosts.base import Host
from etcdforge.plan import Plan
from etcdforge.runtime.factory import open_runtime, placement
from etcdforge.runtime.processes import resolve_binary
from etcdforge.spec import ClusterSpec
from etcdforge.verbs.backup.run import safety_steps
from etcdforge.verbs.restore.plan import MemberPlace, Record, RestoreInputs, plan_restore
from etcdforge.verbs.up.run import locked_workspace
from etcdforge.workspace import Workspace

STAGING = "backups/.restore"
_VERSION = re.compile(r"(etcdutl|etcdctl) version: (\d+)\.(\d+)\.(\d+)")
VERSION_SCRIPT = (
    'if [ -x "$1/etcdutl" ]; then exec "$1/etcdutl" version; fi\n'
    'if [ -x "$1/etcdctl" ]; then ETCDCTL_API=3 exec "$1/etcdctl" version; fi\n'
    'echo "no etcdutl or etcdctl in $1" >&2; exit 3\n'
)


@dataclass(frozen=True)
class RestoreResult:
    plan: Plan
    manifest: Manifest
    warnings: tuple[str, ...]
    executed: bool


def read_record(ws: Workspace) -> Record | None:
    path = ws.restore_record
    if not path.is_file():
        return None
    try:
        return Record(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        raise BackupError(
            f"{path} is not a restore record", hint="remove it if no restore is running"
        ) from None


async def tool_version(host: Host, tool_dir: str) -> tuple[int, int, int]:
    result = await host.run(["sh", "-c", VERSION_SCRIPT, "sh", tool_dir], check=False)
    text = result.stdout.decode(errors="replace")
    match = _VERSION.search(text)
    where = getattr(host, "name", "this machine")
    if result.exit_status != 0 or match is None:
        raise PlanError(
            f"no snapshot restore tool (etcdutl or etcdctl) in {tool_dir} on {where}",
            hint="it comes with etcd; install it beside the etcd binary",
        )
    return int(match.group(2)), int(match.group(3)), int(match.group(4))


def running_binary(spec: ClusterSpec, ws: Workspace) -> str | None:
    """The etcd binary a running local member was started with (None when none runs)."""
    from etcdforge.runtime import supervisor

    for m in spec.members:
        pid = supervisor.running_pid(ws.member_pid(m.name))
        if pid is not None:
            try:
                return os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
    return None


def places(spec: ClusterSpec, ws: Workspace, backup_id: str, tool_dir: str) -> dict[str, MemberPlace]:
    if placement(spec, ws).members_here:
        raw = str(ws.root / STAGING / f"{backup_id}.snapshot.db")
        return {
            m.name: MemberPlace(ws.member_paths(m.name).data_dir, raw, tool_dir, None) for m in spec.members
        }
    data = layout.data_dir(spec)
    snapshot = f"{data}.restore-{backup_id}.db"
    return {m.name: MemberPlace(data, snapshot, tool_dir, "etcd") for m in spec.members}


async def restore(
    directory: Path,
    wanted: str = "latest",
    *,
    target: str | None = None,
    identities: Sequence[Path] = (),
    etcd_bin: str | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    reporter: Reporter | None = None,
    now: datetime | None = None,
    no_snapshot: bool = False,
) -> RestoreResult:
    with locked_workspace(directory, during_restore=True) as (ws, spec):
        record = read_record(ws)
        if record is not None:
            if wanted not in ("latest", record.backup_id) or (target and target != record.target):
                raise PlanError(
                    f"a restore of backup {record.backup_id} from {record.target} is in progress",
                    hint=f"finish it first: etcdforge restore {record.backup_id} --target {record.target}",
                )
            wanted, target = record.backup_id, record.target
        chosen = spec.backup.target(target)
        async with open_store(spec, ws, chosen) as store:
            manifest = await find_backup(store, wanted)
        if manifest.cluster != spec.name:
            raise PlanError(f"backup {manifest.id} is of cluster {manifest.cluster!r}, not {spec.name!r}")
        if manifest.stored.encrypted and not identities:
            raise BackupError(
                f"backup {manifest.id} is encrypted: pass --identity with the age key that decrypts it"
            )
        here = placement(spec, ws).members_here
        if here and etcd_bin is None:
            etcd_bin = running_binary(spec, ws)  # restore and start with the release the members run
        when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        if record is None:
            record = Record(manifest.id, chosen.name, f"{spec.name}-restore-{when.lower()}", when)
        async with open_runtime(spec, ws, etcd_bin=etcd_bin) as runtime:
            if here:
                binary, _ = resolve_binary(spec, etcd_bin)
                tool_dir = str(Path(binary.path).resolve().parent)
                version = await tool_version(runtime.host(spec.members[0].name), tool_dir)
            else:
                tool_dir = str(Path(layout.binary_path(spec)).parent)
                versions = {await tool_version(runtime.host(m.name), tool_dir) for m in spec.members}
                if len(versions) != 1:
                    raise PlanError(
                        "the members' restore tools differ in version; run `etcdforge apply` first"
                    )
                version = versions.pop()
            inputs = RestoreInputs(
                spec=spec,
                spec_path=str(ws.spec_path),
                manifest=manifest,
                record=record,
                record_path=str(ws.restore_record),
                record_exists=ws.restore_record.is_file(),
                staging=str(ws.root / STAGING),
                places=places(spec, ws, manifest.id, tool_dir),
                upload=not here,
                tool_version=version,
                identities=tuple(str(p.resolve()) for p in identities),
                member_paths={m.name: ws.member_paths(m.name) for m in spec.members} if here else None,
            )
            # a snapshot of what is there now, before it is replaced (not when resuming a restore)
            safety, safety_warnings = await safety_steps(spec, ws, skip=no_snapshot or inputs.record_exists)
            plan, warnings = plan_restore(inputs)
            warnings = safety_warnings + warnings
            plan = dataclasses.replace(plan, steps=(*safety, *plan.steps), warnings=warnings)
            if dry_run:
                return RestoreResult(plan, manifest, warnings, False)
            await execute(plan, runtime, reporter, confirm=confirm)
        return RestoreResult(plan, manifest, warnings, True)
