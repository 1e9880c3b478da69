"""Plans are data: an ordered tuple of steps, each with a stable id, the host it touches, an action and a
human reason. Planners build them purely; :mod:`etcdforge.executor` runs them; ``--dry-run`` prints them
and ``-o json`` emits :meth:`Plan.to_json`.

Actions are small frozen dataclasses (one per kind of change). File contents are carried as bytes but
never printed: a plan shows paths, sizes and reasons, and secrets (key files) are marked as such.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from etcdforge.etcd import Permission
    from etcdforge.pki import PkiPlan


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``path`` atomically with ``mode`` (skipped at run time if already equal)."""

    path: str
    content: bytes = field(repr=False)
    mode: int = 0o644
    secret: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "write-file",
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "size": len(self.content),
            "sha256": "(secret)" if self.secret else hashlib.sha256(self.content).hexdigest(),
        }


@dataclass(frozen=True)
class IssueCerts:
    """Create/renew certificates in the control machine's PKI (the CA key never leaves it).

    ``plan`` None is a deferred value: the PKI plan is made when the step runs, from the CA the workspace
    holds then (a CA rotation's reissue, whose signing CA an earlier step of the same plan puts there).
    """

    items: tuple[tuple[str, str], ...]  # (certificate name, reason)
    plan: PkiPlan | None = field(repr=False, compare=False)
    #: a deferred plan issues with new key pairs (not only new certificates for the old keys)
    new_keys: bool = False
    #: a deferred plan covers only these certificates (empty: every certificate of the spec)
    only: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "issue-certs", "certificates": [{"name": n, "reason": r} for n, r in self.items]}


@dataclass(frozen=True)
class InstallMemberPki:
    """Copy a member's own key pairs and the CA certificate (never the CA key) into its directory."""

    member: str
    files: tuple[tuple[str, str, int], ...]  # (source, destination, mode)

    def describe(self) -> dict[str, Any]:
        return {"kind": "install-member-pki", "member": self.member, "files": [d for _, d, _ in self.files]}


@dataclass(frozen=True)
class StartMembers:
    """Start these members' etcd (local: a supervised process with the binary the runtime was given;
    hosts: enable and start the unit without blocking — a new cluster's members become ready together).
    A member already running is left alone."""

    members: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "start-members", "members": list(self.members)}


@dataclass(frozen=True)
class StopMember:
    """Stop a member and keep it stopped (local: its process; hosts: ``systemctl disable --now``)."""

    member: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "stop-member", "member": self.member}


@dataclass(frozen=True)
class WaitPeerServing:
    """Wait until ``member``'s peer listener at ``url`` answers a TLS handshake (at most ``timeout``; a
    member that does not serve by then, or has exited, is left to the health wait). Between the starts
    of a new cluster's members: etcd binds its peer port at once but serves it only once its own start
    is done, and a new member first asks every other one whether it is already bootstrapped, waiting a
    second for each that is bound but not serving yet, so members started all at once often stall."""

    member: str
    url: str
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "wait-peer-serving", "member": self.member, "url": self.url, "timeout": self.timeout}


@dataclass(frozen=True)
class WaitHealthy:
    """Wait until the members answer a linearizable read: all of them, or ``need`` of them (a quorum
    gate: members known to be down do not hold up a change that does not need them)."""

    members: tuple[str, ...]
    timeout: float
    need: int | None = None
    #: healthy despite an active alarm (e.g. NOSPACE while ``space recover`` frees the space): the read
    #: alone is the test, as between two members' defragmentations
    despite_alarms: bool = False

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "wait-healthy", "members": list(self.members), "timeout": self.timeout}
        if self.need is not None:
            out["need"] = self.need
        if self.despite_alarms:
            out["despite_alarms"] = True
        return out


@dataclass(frozen=True)
class RemoveFile:
    """Delete a control-machine file (a record of a change in flight, once the change is done)."""

    path: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "remove-file", "path": self.path}


@dataclass(frozen=True)
class RemoveTree:
    """Delete a control-machine directory that holds ``marker`` (refused otherwise): everything but the
    marker first, the marker last, so an interrupted removal is still recognised and finished."""

    path: str
    marker: str = "cluster.yaml"

    def describe(self) -> dict[str, Any]:
        return {"kind": "remove-tree", "path": self.path}


@dataclass(frozen=True)
class MovePath:
    """Rename a control-machine file or directory (atomic; done already when only ``dst`` exists)."""

    src: str
    dst: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "move", "from": self.src, "to": self.dst}


# --- hosts mode -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PutFile:
    """Write a file on a host atomically with mode/owner (skipped at run time if already identical).

    ``diff`` is a unified diff of the old and new text for non-secret files, computed by the planner.
    ``source`` makes the content a deferred value: the workspace file read when the step runs (a
    certificate an earlier step of the same plan issues); ``content`` is then empty.
    """

    host: str
    path: str
    content: bytes = field(repr=False)
    mode: int
    owner: str | None  # None: the runtime's user (local mode)
    group: str | None
    secret: bool = False
    diff: str = field(default="", repr=False, compare=False)
    source: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "put-file",
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "owner": f"{self.owner or '-'}:{self.group or '-'}",
        }
        if self.source is not None:
            out["from"] = self.source  # issued by an earlier step: its bytes do not exist yet
        else:
            out["size"] = len(self.content)
            out["sha256"] = "(secret)" if self.secret else hashlib.sha256(self.content).hexdigest()
        if self.diff and not self.secret:
            out["diff"] = self.diff
        return out


@dataclass(frozen=True)
class UploadFile:
    """Copy a local file (a binary) to a host, verified by sha256 (None: a release an earlier step
    fetches; then the file is checked against the manifest its verified download wrote)."""

    host: str
    source: str
    path: str
    mode: int
    sha256: str | None  # None: known only after an earlier FetchRelease step

    def describe(self) -> dict[str, Any]:
        return {"kind": "upload", "source": self.source, "path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class FetchRelease:
    """Download an etcd release tarball to the control machine's cache and verify its sha256."""

    url: str
    sha256: str
    cache_dir: str
    #: the version its etcd must report (``etcd --version``, probed once it is unpacked)
    version: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "fetch-release", "url": self.url, "sha256": self.sha256, "version": self.version}


@dataclass(frozen=True)
class HostCommand:
    """An idempotent command on a host (argv, never a shell string)."""

    host: str
    argv: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "command", "argv": list(self.argv)}


@dataclass(frozen=True)
class RestartMember:
    """Restart one member (local: its process, with the binary it runs now; hosts: its unit), then wait
    until the whole cluster is healthy again.

    ``before_start`` commands run while the member is stopped (stop, commands, start), e.g. handing the
    data dir of a member that ran as root to the etcd user: done while it still runs, the old process
    could create new root-owned files in between.
    """

    member: str
    timeout: float
    before_start: tuple[tuple[str, ...], ...] = ()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "restart-member", "member": self.member}
        if self.before_start:
            out["while_stopped"] = [list(argv) for argv in self.before_start]
        return out


@dataclass(frozen=True)
class MoveLeader:
    """Hand leadership to ``to`` (before the current leader restarts)."""

    to: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "move-leader", "to": self.to}


@dataclass(frozen=True)
class VerifyPresented:
    """Open a new TLS handshake with ``url`` and check that it presents the control PKI's certificate
    ``cert`` (same serial): how a hot renewal is proven, since etcd reloads certificates per handshake.
    ``required`` False: an endpoint this machine cannot reach (a firewalled peer port) is reported, not
    an error."""

    member: str
    url: str
    cert: str
    required: bool = True
    #: the member's peer port (a handshake with the member's own peer certificate)
    peer: bool = False

    def describe(self) -> dict[str, Any]:
        return {"kind": "verify-presented", "member": self.member, "url": self.url, "cert": self.cert}


# --- membership ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddLearner:
    """Register a new member as a learner (it does not count toward quorum until promoted)."""

    member: str
    peer_url: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "add-learner", "member": self.member, "peer_url": self.peer_url}


@dataclass(frozen=True)
class PromoteLearner:
    """Promote the learner once etcd says it is in sync (retried with backoff, bounded by ``timeout``)."""

    member: str
    peer_url: str
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "promote", "member": self.member}


@dataclass(frozen=True)
class RemoveMember:
    member: str
    member_id: int

    def describe(self) -> dict[str, Any]:
        return {"kind": "remove-member", "member": self.member, "member_id": f"{self.member_id:x}"}


@dataclass(frozen=True)
class WipeData:
    """Delete a removed member's data (its member/ directory), so it can never rejoin with stale state."""

    member: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "wipe-data", "member": self.member}


# --- maintenance ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defragment:
    """Defragment one member's database (it blocks that member while it runs; ``timeout`` is scaled to
    its size when planned)."""

    member: str
    url: str
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "defragment", "member": self.member, "timeout": round(self.timeout)}


@dataclass(frozen=True)
class Compact:
    """Compact the keyspace's history up to ``revision`` (physical: returns once every member applied it).
    A revision already compacted is not an error (a re-run converges)."""

    revision: int

    def describe(self) -> dict[str, Any]:
        return {"kind": "compact", "revision": self.revision}


@dataclass(frozen=True)
class DisarmAlarms:
    """Deactivate the active alarms of ``kinds`` (e.g. NOSPACE), on every member."""

    kinds: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "disarm-alarms", "alarms": list(self.kinds)}


@dataclass(frozen=True)
class ProbeWrite:
    """Prove that the cluster takes writes: put ``key`` (a linearizable write through the quorum), read
    it back, delete it."""

    key: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "probe-write", "key": self.key}


# --- upgrades ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchBinary:
    """Stop ``member``, make it run ``binary`` from now on (the binary it ran is kept as its previous one),
    start it, then wait until the whole cluster is healthy; ``binary`` None: back to the previous one (a
    rollback). A member already running ``binary`` is left alone (a re-run converges)."""

    member: str
    binary: str | None
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "switch-binary", "member": self.member, "binary": self.binary or "(previous)"}


@dataclass(frozen=True)
class CheckMember:
    """``member`` reports etcd ``version``, and a canary key written and read back through it (pinned
    to its endpoint) proves it serves."""

    member: str
    url: str
    version: str
    canary: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "check-member", "member": self.member, "version": self.version}


@dataclass(frozen=True)
class WaitClusterVersion:
    """Wait until the cluster version (``GET /version``: etcdcluster) reaches ``minor`` (e.g. 3.5): etcd
    raises it once every member runs the new release."""

    url: str
    minor: str
    timeout: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "wait-cluster-version", "minor": self.minor}


# --- access (etcd users and roles) -------------------------------------------------------------------


def permission_text(p: Permission) -> str:
    """``readwrite /app/*`` for a prefix, ``read /k`` for one key, ``read [a, b)`` for another range."""
    key = p.key.decode(errors="backslashreplace")
    if not p.range_end:
        return f"{p.kind} {key}"
    from etcdforge.etcd.types import prefix_end

    if p.range_end == prefix_end(p.key):
        return f"{p.kind} {key}*"
    if p.range_end == b"\0":
        return f"{p.kind} >={key}"
    return f"{p.kind} [{key}, {p.range_end.decode(errors='backslashreplace')})"


@dataclass(frozen=True)
class EnsureRole:
    """Make etcd role ``name`` hold exactly ``permissions``: create it, grant what is missing, revoke what
    is not wanted (a role edited by hand is repaired)."""

    name: str
    permissions: tuple[Permission, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "ensure-role",
            "role": self.name,
            "permissions": [permission_text(p) for p in self.permissions],
        }


@dataclass(frozen=True)
class EnsureUser:
    """Make etcd user ``name`` exist (no password: it authenticates by certificate CN) with exactly
    ``roles``."""

    name: str
    roles: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "ensure-user", "user": self.name, "roles": list(self.roles)}


@dataclass(frozen=True)
class DeleteUser:
    """Delete etcd user ``name``: its certificate is refused at once (with auth on), although valid."""

    name: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "delete-user", "user": self.name}


@dataclass(frozen=True)
class DeleteRole:
    name: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "delete-role", "role": self.name}


@dataclass(frozen=True)
class SetAuth:
    """Turn etcd's authentication on or off. On: refused unless ``root`` and ``admins`` (etcdforge's own
    certificates) hold the root role, so the tool can never lock itself out."""

    enabled: bool
    admins: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"kind": "set-auth", "enabled": self.enabled}


# --- backups ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TakeSnapshot:
    """Stream ``member``'s database to ``dest`` on the control machine (``.part``, trailer checked,
    fsync, rename). Done already when ``dest`` exists (it only ever exists complete)."""

    member: str
    url: str
    dest: str
    expected: int = 0  # the member's db size when planned (for progress only)

    def describe(self) -> dict[str, Any]:
        return {"kind": "take-snapshot", "member": self.member, "url": self.url, "dest": self.dest}


@dataclass(frozen=True)
class CheckSnapshot:
    """Check a snapshot file: etcd's SHA-256 trailer, the bbolt structure, and ``snapshot status`` with
    ``tool`` (etcdutl or etcdctl) when one is given; the findings go to ``report`` (JSON)."""

    path: str
    report: str
    tool: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "check-snapshot", "path": self.path, "tool": self.tool}


@dataclass(frozen=True)
class PackBackup:
    """Compress ``source`` with zstd (encrypt to ``recipients`` if any) into ``dest``; size and sha256
    go to ``dest`` + ``.sum``."""

    source: str
    dest: str
    recipients: tuple[str, ...] = field(default=(), repr=False)
    level: int = 3
    base: str = field(default="", repr=False)  # where relative recipient files are

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "pack-backup",
            "dest": self.dest,
            "compression": f"zstd -{self.level}",
            "encrypted": bool(self.recipients),
        }


@dataclass(frozen=True)
class PackPki:
    """Archive the workspace's PKI directory (the CA key included) as a tar encrypted to
    ``recipients`` into ``dest``; size and sha256 go to ``dest`` + ``.sum``. Never unencrypted."""

    source: str
    dest: str
    recipients: tuple[str, ...] = field(repr=False)
    base: str = field(default="", repr=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "pack-pki", "dest": self.dest, "encrypted": True}


@dataclass(frozen=True)
class WriteManifest:
    """Write the backup's manifest to ``dest``: ``base`` (what was observed when planning) plus the
    check report and the packed file's size and hash, read when the step runs."""

    dest: str
    base: str = field(repr=False)  # JSON
    report: str = ""
    packed: str = ""
    pki: str = ""  # the encrypted PKI archive (with --include-pki)

    def describe(self) -> dict[str, Any]:
        return {"kind": "write-manifest", "dest": self.dest}


@dataclass(frozen=True)
class StoreBackup:
    """Upload files to a backup target, in order (the manifest last: a backup is listed only once it is
    whole). A file already there with the same size is not sent again."""

    target: str
    files: tuple[tuple[str, str], ...]  # (local path, key)

    def describe(self) -> dict[str, Any]:
        return {"kind": "store-backup", "target": self.target, "keys": [k for _, k in self.files]}


@dataclass(frozen=True)
class DeleteBackup:
    """Delete a backup's objects from a target: the manifest first (so a half-deleted backup is never
    listed as whole), then its data."""

    target: str
    keys: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "delete-backup", "target": self.target, "keys": list(self.keys)}


@dataclass(frozen=True)
class LocalCommand:
    """Run a command on the control machine (``systemctl daemon-reload`` after writing a unit)."""

    argv: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"kind": "local-command", "argv": list(self.argv)}


@dataclass(frozen=True)
class FetchBackup:
    """Download backup ``backup_id`` from ``target`` to ``dest`` and check it end to end (stored hash,
    decryption with ``identities``, decompression, snapshot hash and trailer, bbolt structure). Done
    already when ``dest`` and its ``.verified`` mark exist."""

    target: str
    backup_id: str
    dest: str
    identities: tuple[str, ...] = field(default=(), repr=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "fetch-backup", "target": self.target, "backup": self.backup_id, "dest": self.dest}


@dataclass(frozen=True)
class RestoreData:
    """Make ``member``'s data dir the snapshot's: move the current one to ``aside`` (never deleted; an
    empty ``aside`` marks a member that had none), restore into ``<data_dir>.restoring`` with the
    snapshot tool in ``tool_dir``, hand it to ``owner``, rename it into place. Done already when the
    data dir holds a member and ``aside`` exists."""

    member: str
    snapshot: str  # on the member's host
    data_dir: str
    aside: str
    tool_dir: str
    restore_args: tuple[str, ...]  # --name, --initial-cluster, token, peer URL, [--bump-revision …]
    owner: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "restore-data",
            "member": self.member,
            "data_dir": self.data_dir,
            "aside": self.aside,
            "args": list(self.restore_args),
        }


@dataclass(frozen=True)
class CheckRestored:
    """After a restore: every member at a revision ≥ ``revision`` and all agreeing on the KV hash."""

    members: tuple[str, ...]
    revision: int
    timeout: float = 60.0

    def describe(self) -> dict[str, Any]:
        return {"kind": "check-restored", "members": list(self.members), "revision": self.revision}


Action = (
    WriteFile
    | IssueCerts
    | InstallMemberPki
    | StartMembers
    | StopMember
    | WaitHealthy
    | WaitPeerServing
    | RemoveTree
    | MovePath
    | RemoveFile
    | PutFile
    | UploadFile
    | FetchRelease
    | HostCommand
    | RestartMember
    | MoveLeader
    | AddLearner
    | PromoteLearner
    | RemoveMember
    | WipeData
    | VerifyPresented
    | TakeSnapshot
    | CheckSnapshot
    | PackBackup
    | PackPki
    | WriteManifest
    | StoreBackup
    | DeleteBackup
    | FetchBackup
    | RestoreData
    | CheckRestored
    | LocalCommand
    | Defragment
    | Compact
    | DisarmAlarms
    | ProbeWrite
    | SwitchBinary
    | CheckMember
    | WaitClusterVersion
    | EnsureRole
    | EnsureUser
    | DeleteUser
    | DeleteRole
    | SetAuth
)


@dataclass(frozen=True)
class Step:
    """One planned change. Consecutive steps with the same non-empty ``group`` run concurrently (for
    example the same preparation on every host); everything else runs in order."""

    id: str
    host: str
    action: Action
    reason: str
    group: str = ""
    #: what this step destroys, for the user ("etcd4's data dir …"); non-empty makes the executor ask
    destroys: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "host": self.host, "reason": self.reason, **self.action.describe()}
        if self.destroys:
            out["destroys"] = self.destroys
        return out


Verb = Literal[
    "up",
    "down",
    "destroy",
    "apply",
    "member-add",
    "member-remove",
    "member-replace",
    "pki-renew",
    "rotate-ca",
    "pki-import",
    "adopt",
    "backup",
    "backup-prune",
    "restore",
    "backup-schedule",
    "recover",
    "drill",
    "defrag",
    "compact",
    "alarms-disarm",
    "space-recover",
    "upgrade",
    "client-add",
    "client-remove",
    "client-bundle",
    "monitoring",
]


@dataclass(frozen=True)
class Plan:
    verb: Verb
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for step in self.steps:  # a step id names one step: the kill points, errors and --dry-run rely on it
            if step.id in seen:
                raise ValueError(f"{self.verb}: two steps with id {step.id!r}")
            seen.add(step.id)

    @property
    def empty(self) -> bool:
        return not self.steps

    def to_json(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "changes": len(self.steps),
            "warnings": list(self.warnings),
            "steps": [s.to_json() for s in self.steps],
        }

    @property
    def destructive(self) -> tuple[Step, ...]:
        """The steps that destroy data: the executor runs none of the plan unless they are confirmed."""
        return tuple(s for s in self.steps if s.destroys)

    def lines(self) -> list[str]:
        """One human line per step: ``id  reason``, and what a destructive step destroys."""
        return [
            f"{s.id:<28} {s.reason}" + (f"  [destroys {s.destroys}]" if s.destroys else "")
            for s in self.steps
        ]
