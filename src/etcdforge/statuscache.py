"""What ``status`` needs of a spec, kept beside it so the quick path (:mod:`etcdforge.fastpath`) can answer
without loading the spec's models (stdlib only: this module is on that path).

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
