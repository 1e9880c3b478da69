"""``restore`` as one plan. Pure: every input is an observation or a record.

fetch and verify the backup → (hosts) upload the snapshot to every member → stop every member → on each,
move the data dir aside and restore the snapshot with the spec's initial cluster and a NEW cluster token
→ write the spec with that token → start every member together → wait until healthy → check (revision
at least the backup's, every member's KV hash equal) → clean up. The record ``restore.json`` (the backup,
the token, the aside suffix) is written first and removed last: a re-run after a kill resumes the same
restore with the same token, and every step skips what is done.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etcdforge import layout, render, topology
from etcdforge.backup.manifest import STAGING_MARKER, Manifest
from etcdforge.errors import PlanError
from etcdforge.plan import (
    Action,
    CheckRestored,
    FetchBackup,
    HostCommand,
    Plan,
    PutFile,
    RemoveFile,
    RemoveTree,
    RestoreData,
    StartMembers,
    Step,
    StopMember,
    UploadFile,
    WaitHealthy,
    WriteFile,
)
from etcdforge.render import MemberPaths
from etcdforge.spec import ClusterSpec, dump_spec

#: the revision a restore jumps ahead by, where the tool can (etcd's and Kubernetes' suggestion: far
#: beyond any write rate between the backup and the restore, so watchers see the revision move forward)
BUMP_REVISION = 1_000_000_000
#: the first releases whose snapshot restore has --bump-revision/--mark-compacted (etcd-facts.md)
BUMP_SINCE = {(3, 4): (3, 4, 27), (3, 5): (3, 5, 10)}


def can_bump(tool_version: tuple[int, int, int]) -> bool:
    since = BUMP_SINCE.get(tool_version[:2])
    return tool_version >= since if since else tool_version[:2] >= (3, 6)


@dataclass(frozen=True)
class Record:
    """``restore.json``: the restore in flight."""

    backup_id: str
    target: str
    token: str
    stamp: str  # the aside suffix: <data dir>.before-restore-<stamp>

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode() + b"\n"


@dataclass(frozen=True)
class MemberPlace:
    """Where a member's restore happens: its data dir, the snapshot on its host, the tool, the owner."""

    data_dir: str
    snapshot: str
    tool_dir: str
    owner: str | None


@dataclass(frozen=True)
class RestoreInputs:
    spec: ClusterSpec
    spec_path: str
    manifest: Manifest
    record: Record
    record_path: str
    record_exists: bool
    staging: str  # directory on the control machine
    places: dict[str, MemberPlace]
    upload: bool  # hosts mode: the snapshot goes to each member's host
    tool_version: tuple[int, int, int]
    identities: tuple[str, ...]
    #: local mode: each member's paths in the workspace (hosts mode: the spec's layout on every host)
    member_paths: Mapping[str, MemberPaths] | None = None
    timeout: float = 120.0


def check_versions(manifest: Manifest, tool_version: tuple[int, int, int]) -> None:
    """Refuse a snapshot from a newer etcd minor than the restore tool's (an older etcd cannot read
    what a newer one wrote)."""
    try:
        major, minor = (int(x) for x in manifest.etcd_version.split(".")[:2])
    except ValueError:
        return
    if (major, minor) > tool_version[:2]:
        have = ".".join(map(str, tool_version))
        raise PlanError(
            f"backup {manifest.id} was taken from etcd {manifest.etcd_version}; the restore tool here is "
            f"{have}, which cannot read a newer etcd's data",
            hint="restore with etcd of the backup's minor version or newer (etcd.binary / --etcd-bin)",
        )


def plan_restore(inp: RestoreInputs) -> tuple[Plan, tuple[str, ...]]:
    """The plan, and warnings (a revision that moves backwards for watchers)."""
    spec, record, manifest = inp.spec, inp.record, inp.manifest
    check_versions(manifest, inp.tool_version)
    names = tuple(m.name for m in spec.members)
    raw = str(Path(inp.staging) / f"{manifest.id}.snapshot.db")
    bump = can_bump(inp.tool_version)
    warnings: list[str] = []
    if not bump:
        warnings.append(
            f"the restore tool (etcd {'.'.join(map(str, inp.tool_version))}) has no --bump-revision: "
            f"the revision goes back to {manifest.restore_revision}; restart every watcher "
            "(kube-apiserver, controllers) after the restore, or they miss changes"
        )
    # the fetch changes nothing (a backup that fails its checks leaves no record behind); the record
    # comes before the first step that changes the cluster
    steps: list[Step] = [
        Step(
            "restore/fetch",
            "local",
            FetchBackup(record.target, manifest.id, raw, inp.identities),
            f"download {manifest.stored.key} from {record.target}, check its hashes and structure",
        )
    ]
    if not inp.record_exists:
        steps.append(
            Step(
                "restore/record",
                "local",
                WriteFile(inp.record_path, record.to_bytes(), 0o600),
                f"restore of {manifest.id} in flight (new token {record.token}); a re-run resumes it",
            )
        )
    if inp.upload:
        steps += [
            Step(
                f"{m}/upload-snapshot",
                m,
                UploadFile(m, raw, inp.places[m].snapshot, 0o600, manifest.raw_sha256),
                f"the snapshot to {m} ({manifest.db_size / 1048576:.1f} MiB, sha256 checked)",
                group="upload",
            )
            for m in names
        ]
    steps += [
        Step(f"{m}/stop", m, StopMember(m), "every member stops for a restore", group="stop") for m in names
    ]
    initial = topology.initial_cluster(spec)
    for m in names:
        place = inp.places[m]
        aside = f"{place.data_dir}.before-restore-{record.stamp}"
        args = (
            f"--name={m}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={record.token}",
            f"--initial-advertise-peer-urls={topology.peer_url(spec, spec.member(m))}",
            *((f"--bump-revision={BUMP_REVISION}", "--mark-compacted") if bump else ()),
        )
        steps.append(
            Step(
                f"{m}/restore-data",
                m,
                RestoreData(m, place.snapshot, place.data_dir, aside, place.tool_dir, args, place.owner),
                f"data dir moved aside to {aside}, then restored from {manifest.id}",
                group="restore",
                destroys=f"{m}'s current data (moved aside to {aside}, not deleted)",
            )
        )
    restored = spec.model_copy(update={"token": record.token})
    steps.append(
        Step(
            "workspace/write-spec",
            "local",
            WriteFile(inp.spec_path, dump_spec(restored).encode()),
            f"token {record.token}: the restored cluster is a new cluster",
        )
    )
    for spec_member in spec.members:  # the configs name the new token too (`plan`: nothing to change)
        name = spec_member.name
        if inp.member_paths is not None:
            paths = inp.member_paths[name]
            config: Action = WriteFile(paths.config, render.etcd_config(restored, spec_member, paths))
        else:
            content = render.etcd_config(restored, spec_member, layout.member_paths(restored))
            config = PutFile(name, layout.CONFIG, content, 0o644, "root", "root")
        steps.append(Step(f"{name}/write-config", name, config, f"token {record.token}", group="config"))
        if inp.member_paths is None:  # the stop disabled the unit: it starts at boot again
            enable = HostCommand(name, ("systemctl", "enable", "--quiet", layout.UNIT_NAME))
            steps.append(Step(f"{name}/enable", name, enable, "start etcd at boot", group="config"))
    steps += [
        Step("cluster/start", "local", StartMembers(names), "every member starts together"),
        Step("cluster/wait-healthy", "local", WaitHealthy(names, inp.timeout), "all members healthy"),
        Step(
            "restore/check",
            "local",
            CheckRestored(names, manifest.restore_revision),
            f"revision ≥ {manifest.restore_revision} on every member; equal KV hashes",
        ),
    ]
    if inp.upload:
        steps += [
            Step(
                f"{m}/remove-snapshot",
                m,
                HostCommand(m, ("rm", "-f", "--", inp.places[m].snapshot)),
                "the uploaded snapshot",
                group="cleanup",
            )
            for m in names
        ]
    steps += [
        Step("restore/clean", "local", RemoveTree(inp.staging, STAGING_MARKER), "the downloaded snapshot"),
        Step("restore/done", "local", RemoveFile(inp.record_path), "the restore is complete"),
    ]
    return Plan("restore", tuple(steps), tuple(warnings)), tuple(warnings)
