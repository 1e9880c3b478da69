"""``backup now`` and ``backup prune`` as plans. Pure: every input is an observation.

``backup now``: choose the member to read (a healthy, caught-up voter; a follower when there is one),
then: take the snapshot to the staging directory → check it (trailer, bbolt structure, ``snapshot
status``) → pack it (zstd, age) → write the manifest → store both in the target (the manifest last) →
remove the staging directory. Every step is idempotent, so a re-run with the same id finishes the same
backup; a new run first clears what interrupted runs left in staging.

``backup prune``: delete what the retention policy does not keep (:mod:`etcdforge.backup.retention`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etcdforge.backup import retention
from etcdforge.backup.manifest import STAGING_MARKER, data_key, manifest_key, pki_key
from etcdforge.errors import PlanError
from etcdforge.plan import (
    CheckSnapshot,
    DeleteBackup,
    PackBackup,
    PackPki,
    Plan,
    RemoveTree,
    Step,
    StoreBackup,
    TakeSnapshot,
    WriteFile,
    WriteManifest,
)
from etcdforge.spec import Retention

#: a follower whose applied index is this far behind the leader's is not caught up (etcd sends a
#: lagging follower a snapshot once it is 5000 entries behind: its default snapshot-catchup-entries)
CATCH_UP_ENTRIES = 5000


@dataclass(frozen=True)
class Candidate:
    """One member as observed for a backup."""

    name: str
    url: str
    member_id: int
    learner: bool
    healthy: bool
    leader: bool
    applied_index: int
    revision: int
    version: str
    db_size: int


def choose_source(candidates: Sequence[Candidate], wanted: str | None = None) -> Candidate:
    """The member to read: ``wanted`` if given (a healthy voter), else a caught-up follower with the
    highest applied index, else the leader. Never a learner."""
    voters = [c for c in candidates if not c.learner and c.healthy]
    if wanted is not None:
        match = next((c for c in candidates if c.name == wanted), None)
        if match is None:
            raise PlanError(f"no member named {wanted!r} in the cluster")
        if match.learner:
            raise PlanError(f"{wanted} is a learner: a learner's data may lag; back up from a voter")
        if not match.healthy:
            raise PlanError(f"{wanted} is not healthy; back up from another member")
        return match
    if not voters:
        raise PlanError("no healthy voting member to back up from", hint="`etcdforge health` shows why")
    leader = next((c for c in voters if c.leader), None)
    followers = sorted((c for c in voters if not c.leader), key=lambda c: (-c.applied_index, c.name))
    if leader is None:
        raise PlanError("the cluster has no leader; a snapshot now could be stale")
    caught_up = [c for c in followers if c.applied_index + CATCH_UP_ENTRIES >= leader.applied_index]
    return caught_up[0] if caught_up else leader


@dataclass(frozen=True)
class BackupRequest:
    backup_id: str
    targets: tuple[str, ...]  # the same backup goes to each, in order
    staging_root: Path  # <ws>/backups/.staging
    stale_staging: tuple[str, ...]  # leftovers of interrupted runs (directory names)
    status_tool: str | None
    recipients: tuple[str, ...]
    recipients_base: str
    level: int
    base_manifest: Mapping[str, object]  # everything the manifest holds that is known now
    #: where the last successful backup is recorded (``status`` shows its age); "" for none
    last_record: str = ""
    #: --include-pki: the workspace's PKI directory, archived encrypted beside the snapshot ("" for none)
    include_pki: str = ""


def plan_backup(req: BackupRequest, source: Candidate) -> Plan:
    staging = req.staging_root / req.backup_id
    raw = staging / f"{req.backup_id}.snapshot.db"
    report = staging / f"{req.backup_id}.check.json"
    encrypted = bool(req.recipients)
    packed = staging / data_key(req.backup_id, encrypted)
    manifest = staging / manifest_key(req.backup_id)
    pki = staging / pki_key(req.backup_id) if req.include_pki else None
    steps = [
        Step(
            f"backup/clean-staging:{name}",
            "local",
            RemoveTree(str(req.staging_root / name), STAGING_MARKER),
            "left by an interrupted backup",
        )
        for name in req.stale_staging
    ]
    base = {
        **req.base_manifest,
        "stored": {
            "key": data_key(req.backup_id, encrypted),
            "size": 0,
            "sha256": "",
            "encrypted": encrypted,
            "recipients": [r for r in req.recipients if r.startswith("age1")],
        },
    }
    steps += [
        Step(
            "backup/snapshot",
            source.name,
            TakeSnapshot(source.name, source.url, str(raw), source.db_size),
            f"stream {source.name}'s database ({_size(source.db_size)}) to {staging}",
        ),
        Step(
            "backup/check",
            "local",
            CheckSnapshot(str(raw), str(report), req.status_tool),
            "etcd's SHA-256 trailer, the bbolt structure"
            + (f", `{Path(req.status_tool).name} snapshot status`" if req.status_tool else ""),
        ),
        Step(
            "backup/pack",
            "local",
            PackBackup(str(raw), str(packed), req.recipients, req.level, req.recipients_base),
            f"zstd -{req.level}" + (", age-encrypted" if encrypted else " (not encrypted)"),
        ),
        *(
            [
                Step(
                    "backup/pki",
                    "local",
                    PackPki(req.include_pki, str(pki), req.recipients, req.recipients_base),
                    "the workspace's PKI, the CA key included: age-encrypted only",
                )
            ]
            if pki is not None
            else []
        ),
        Step(
            "backup/manifest",
            "local",
            WriteManifest(
                str(manifest),
                json.dumps(base, default=str),
                str(report),
                str(packed),
                str(pki) if pki else "",
            ),
            "cluster, members, revision, versions, hashes, spec, CA certificates (no private keys)",
        ),
        *(
            Step(
                f"backup/store:{target}",
                "local",
                StoreBackup(
                    target,
                    (
                        (str(packed), packed.name),
                        *(((str(pki), pki.name),) if pki is not None else ()),
                        (str(manifest), manifest.name),
                    ),
                ),
                f"{packed.name}, then {manifest.name}",
            )
            for target in req.targets
        ),
        Step(
            "backup/clean",
            "local",
            RemoveTree(str(staging), STAGING_MARKER),
            "the staging copy (the target holds the backup)",
        ),
    ]
    if req.last_record:
        record = {"id": req.backup_id, "targets": list(req.targets), "source": source.name}
        steps.append(
            Step(
                "backup/record",
                "local",
                WriteFile(req.last_record, json.dumps(record, sort_keys=True).encode() + b"\n", 0o600),
                "the last verified backup (`status` shows its age)",
            )
        )
    return Plan("backup", tuple(steps))


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


@dataclass(frozen=True)
class Listed:
    """A backup found in a target: its id, time, whether its manifest was read, and its objects."""

    backup_id: str
    taken: datetime
    verified: bool
    keys: tuple[str, ...]  # manifest first


def plan_prune(target: str, backups: Sequence[Listed], policy: Retention) -> tuple[Plan, retention.Decision]:
    decision = retention.decide(
        [retention.Candidate(b.backup_id, b.taken, b.verified) for b in backups], policy
    )
    by_id = {b.backup_id: b for b in backups}
    steps = tuple(
        Step(
            f"backup/delete:{target}/{backup_id}",
            "local",
            DeleteBackup(target, by_id[backup_id].keys),
            why,
            destroys=f"backup {backup_id} in {target}",
        )
        for backup_id, why in sorted(decision.delete.items())
    )
    return Plan("backup-prune", steps), decision
