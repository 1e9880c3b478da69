"""What ``status`` needs of a spec, kept beside it so the quick path (:mod:`etcdforge.fastpath`) can answer
without loading the spec's models (stdlib only: this module is on that path).

The file is derived data, keyed by the SHA-256 of ``cluster.yaml``'s bytes: a spec edited since it was
written makes it stale, and a stale or missing file only means the full path runs (and writes it anew).
Deleting it changes nothing but speed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

CACHE_FILE = ".status-cache.json"
FORMAT = 1


class StatusInputs(NamedTuple):  # (not a dataclass: importing dataclasses costs the quick path ~10 ms)
    """The members' names and client URLs, in spec order, and the backend quota etcd enforces."""

    members: tuple[tuple[str, str], ...]
    quota: int


def spec_digest(spec_bytes: bytes) -> str:
    return hashlib.sha256(spec_bytes).hexdigest()


def remember(root: Path, spec_bytes: bytes, inputs: StatusInputs) -> None:
    """Write the cache for the spec ``spec_bytes`` (atomic; skipped when it already says the same)."""
    from etcdforge.fsutil import atomic_write, read_optional

    doc = {
        "format": FORMAT,
        "spec_sha256": spec_digest(spec_bytes),
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
        if doc.get("format") != FORMAT or doc.get("spec_sha256") != spec_digest(spec_bytes):
            return None
        members = tuple((str(name), str(url)) for name, url in doc["members"])
        quota = int(doc["quota"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return StatusInputs(members, quota) if members else None
