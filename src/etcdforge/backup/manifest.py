"""A backup's manifest and names: what was backed up, from where, and how to check it. Pure.

A backup is two objects in a target's cluster folder: ``<id>.snapshot.zst`` (``.age`` appended when
encrypted) and ``<id>.manifest.json``, written last. The id is the UTC time it was taken,
``YYYYMMDDTHHMMSSZ``, so names sort by age. A manifest never holds a private key.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from etcdforge.errors import BackupError

FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
#: marks a staging directory on the control machine as a backup's (a cleanup removes nothing else)
STAGING_MARKER = ".staging"
_ID = re.compile(r"^\d{8}T\d{6}Z$")


def new_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def taken_at(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def is_id(text: str) -> bool:
    return bool(_ID.match(text))


def data_key(backup_id: str, encrypted: bool) -> str:
    return f"{backup_id}.snapshot.zst" + (".age" if encrypted else "")


def pki_key(backup_id: str) -> str:
    return f"{backup_id}.pki.tar.age"


def manifest_key(backup_id: str) -> str:
    return backup_id + MANIFEST_SUFFIX


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ManifestMember(_Frozen):
    name: str
    id: str  # hex, as etcdctl prints it
    peer_urls: tuple[str, ...]
    learner: bool = False


class Stored(_Frozen):
    key: str
    size: int
    sha256: str
    compression: str = "zstd"
    encrypted: bool = False
    recipients: tuple[str, ...] = ()  # public age recipients


class Check(_Frozen):
    """What was checked when the backup was taken (or verified later)."""

    trailer: bool  # etcd's SHA-256 trailer matched
    bbolt_pages: int  # pages walked by the structural check
    status_tool: str | None = None  # etcdutl/etcdctl that ran `snapshot status`, if any
    hash: int | None = None  # `snapshot status` hash of the database
    total_keys: int | None = None
    revision: int | None = None


class StoredPki(_Frozen):
    """The workspace's PKI (the CA key included), as an age-encrypted tar beside the snapshot."""

    key: str
    size: int
    sha256: str


class Manifest(_Frozen):
    format: int = FORMAT
    id: str
    cluster: str  # the spec's name
    cluster_id: str  # hex
    members: tuple[ManifestMember, ...]
    source_member: str
    taken: datetime
    revision: int  # the source member's revision when the snapshot was asked for
    etcd_version: str
    db_size: int  # bytes, the database without etcd's trailer
    raw_sha256: str  # of the snapshot file as etcd streamed it (database + trailer)
    stored: Stored
    check: Check
    spec: str  # cluster.yaml as it was
    ca_certs: str  # PEM bundle of the CA certificate(s); never a key
    etcdforge_version: str
    pki: StoredPki | None = None  # only with --include-pki, and only encrypted

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"

    @property
    def restore_revision(self) -> int:
        """The revision a restore of this backup must reach (the database's own, when it was read)."""
        return self.check.revision or self.revision


def parse_manifest(data: bytes, key: str) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValueError as exc:
        raise BackupError(f"{key}: not a valid manifest ({str(exc).splitlines()[0]})") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{key}: manifest format {manifest.format}; this etcdforge reads {FORMAT}")
    return manifest
