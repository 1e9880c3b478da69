"""What ``status`` needs of a spec, kept beside it so the quick path (:mod:`etcdforge.fastpath`) can answer
without loading the spec's models (stdlib only: this module is on that path); and the one definition of
the row ``status -o json`` prints, which the full path and the quick path both build.

The file is derived data, keyed by ``cluster.yaml``'s bytes (kept in it whole: comparing them is cheaper
than importing hashlib on the quick path; a spec is small, at most 1 MiB): a spec edited since it was
written makes it stale, and a stale or missing file only means the full path runs (and writes it anew).
Deleting it changes nothing but speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

CACHE_FILE = ".status-cache.json"
FORMAT = 2


class StatusInputs(NamedTuple):  # (not a dataclass: importing dataclasses costs the quick path ~10 ms)
    """The members' names and client URLs, in spec order, and the backend quota etcd enforces."""

    members: tuple[tuple[str, str], ...]
    quota: int


def _key(spec_bytes: bytes) -> str:
    return spec_bytes.decode("latin-1")  # every byte one character: the exact bytes, as JSON text


def remember(root: Path, spec_bytes: bytes, inputs: StatusInputs) -> None:
    """Write the cache for the spec ``spec_bytes`` (atomic; skipped when it already says the same)."""
    from etcdforge.fsutil import atomic_write, read_optional

    doc = {
        "format": FORMAT,
        "spec": _key(spec_bytes),
        "members": [list(m) for m in inputs.members],
        "quota": inputs.quota,
    }
    data = (json.dumps(doc, indent=1) + "\n").encode()
    path = root / CACHE_FILE
    if read_optional(path) != data:
        atomic_write(path, data, 0o644)


def recall(root: Path, spec_bytes: bytes) -> StatusInputs | None:
    """The cached inputs when they were made from exactly ``spec_bytes``; None otherwise."""
    try:
        doc = json.loads((root / CACHE_FILE).read_bytes())
        if doc.get("format") != FORMAT or doc.get("spec") != _key(spec_bytes):
            return None
        members = tuple((str(name), str(url)) for name, url in doc["members"])
        quota = int(doc["quota"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return StatusInputs(members, quota) if members else None


def quota_used_pct(db_size: int, quota: int) -> float | None:
    """The database file's size against the backend quota (NOSPACE at 100 %); None without a quota."""
    return db_size * 100.0 / quota if quota > 0 else None


def fragmented_pct(db_size: int, in_use: int) -> float | None:
    """Free pages in the database file: what a defragmentation gives back; None for an empty file."""
    return max(0.0, (db_size - in_use) * 100.0 / db_size) if db_size > 0 else None


def json_row(
    member: str,
    endpoint: str,
    *,
    member_id: int,
    version: str,
    leader: int,
    raft_term: int,
    raft_index: int,
    raft_applied_index: int,
    db_size: int,
    db_size_in_use: int,
    quota: int,
    alarms: list[str],
    is_learner: bool,
    revision: int,
    errors: list[str],
) -> dict[str, object]:
    """One answering member as ``status -o json`` prints it."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "member": member,
        "endpoint": endpoint,
        "error": None,
        "id": f"{member_id:x}",
        "version": version,
        "is_leader": leader == member_id,
        "leader": f"{leader:x}",
        "raft_term": raft_term,
        "raft_index": raft_index,
        "raft_applied_index": raft_applied_index,
        "db_size": db_size,
        "db_size_in_use": db_size_in_use,
        "quota_bytes": quota,
        "quota_used_pct": rounded(quota_used_pct(db_size, quota)),
        "fragmented_pct": rounded(fragmented_pct(db_size, db_size_in_use)),
        "alarms": alarms,
        "is_learner": is_learner,
        "revision": revision,
        "errors": errors,
    }
