"""Plain value types of the etcd client: what callers pass in and get back.

Role: the vocabulary shared by :mod:`etcdforge.etcd.client` and its callers (observe, planners, CLI).
Invariants: every type is a frozen dataclass built from Python primitives only — no protobuf or grpc
objects leak out, so importing this module is cheap and the values are safe to log, compare and pickle.
Member IDs are the raw ``uint64`` etcd uses; :func:`format_member_id` renders them the way etcdctl does.
Key ranges follow etcd: ``[key, range_end)``, an empty ``range_end`` meaning exactly ``key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AlarmName = Literal["NONE", "NOSPACE", "CORRUPT"]
PermissionKind = Literal["read", "write", "readwrite"]
PERMISSION_KINDS: tuple[PermissionKind, ...] = ("read", "write", "readwrite")


def format_member_id(member_id: int) -> str:
    """Render a member ID as etcdctl prints it (lower-case hex, no padding)."""
    return f"{member_id:x}"


def prefix_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with ``key`` (etcd's ``WithPrefix`` range end).

    Trailing 0xff bytes cannot be incremented, so they are dropped first; a key of only 0xff bytes (or
    an empty key) has no upper bound, which etcd spells ``b"\\0"``.
    """
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS client: the CA that signs the members' certificates, and our client pair.

    ``cert`` and ``key`` are both set or both ``None`` (a server with ``--trusted-ca-file`` always
    requires a client certificate, so ``None`` is only useful against a server that does not).
    """

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TlsFiles: cert and key must be given together")


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of the member list. ``name``/``client_urls`` are empty until the member has started."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        """Whether the member has published itself (it has a name once it ran at least once)."""
        return bool(self.name)


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """Maintenance.Status of one member. ``leader == member_id`` on the leader; 0 means no leader."""

    endpoint: str
    member_id: int
    cluster_id: int
    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    is_learner: bool
    errors: tuple[str, ...]
    revision: int

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True, slots=True)
class Health:
    """Result of an ``etcdctl endpoint health``-style probe. ``error`` is None exactly when healthy."""

    endpoint: str
    healthy: bool
    took: float
    error: str | None


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class GetResult:
    """A range read. ``count`` is the number of keys in the range, even when ``limit`` cut ``kvs``."""

    kvs: tuple[KeyValue, ...]
    revision: int
    count: int
    more: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of :meth:`EtcdClient.txn`.

    ``succeeded`` tells which branch ran. On success ``revision`` is the revision of our put; on failure
    ``current`` is the key as it is now (None if absent), which a CAS loop needs for its next attempt.
    """

    succeeded: bool
    revision: int
    current: KeyValue | None


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: AlarmName


@dataclass(frozen=True, slots=True)
class HashKV:
    """HashKV of one member: equal ``hash`` at equal ``revision``/``compact_revision`` means equal data."""

    endpoint: str
    member_id: int
    hash: int
    compact_revision: int
    revision: int


@dataclass(frozen=True, slots=True)
class AuthStatus:
    """Whether etcd authentication is on."""

    enabled: bool


@dataclass(frozen=True, slots=True)
class Permission:
    """A role's access to the keys ``[key, range_end)`` (``range_end`` empty: exactly ``key``).

    etcd matches a revoke by ``key`` and ``range_end`` exactly, so keep the value a grant used.
    """

    kind: PermissionKind
    key: bytes
    range_end: bytes = b""

    def __post_init__(self) -> None:
        if self.kind not in PERMISSION_KINDS:
            raise ValueError(f"Permission kind must be one of {', '.join(PERMISSION_KINDS)}: {self.kind!r}")

    @classmethod
    def prefix(cls, kind: PermissionKind, key: bytes) -> Permission:
        """Access to every key starting with ``key`` (``etcdctl role grant-permission --prefix``)."""
        if not key:
            raise ValueError("Permission.prefix needs a non-empty prefix")
        return cls(kind, key, prefix_end(key))
