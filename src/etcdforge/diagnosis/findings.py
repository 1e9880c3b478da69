"""A doctor finding: what is wrong, the evidence, and the command that fixes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

Severity = Literal["warning", "problem"]

_RANK: dict[Severity, int] = {"warning": 1, "problem": 2}


@dataclass(frozen=True)
class Finding:
    #: ``area.rule``, e.g. ``space.quota`` (stable: scripts may filter on it)
    rule: str
    severity: Severity
    #: the member, host, certificate or ``cluster``
    subject: str
    message: str
    evidence: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def exit_code(findings: Sequence[Finding]) -> int:
    """0 fine, 1 warnings only, 2 at least one problem."""
    return max((_RANK[f.severity] for f in findings), default=0)


@dataclass(frozen=True)
class Thresholds:
    """Where a figure turns into a finding (``doctor --threshold NAME=VALUE`` overrides one)."""

    #: etcd's hardware guide: WAL fsync p99 under 10 ms, backend commit p99 under 25 ms
    wal_fsync_p99_ms: float = 10.0
    backend_commit_p99_ms: float = 25.0
    #: fewer observations than this say nothing (a member's first commits, at its start, are slow)
    min_disk_samples: float = 500.0
    #: database file against the quota
    quota_warn_pct: float = 80.0
    quota_problem_pct: float = 95.0
    #: free pages worth a defragmentation (OpenShift's rule: 45 % and 100 MB)
    fragmented_pct: float = 45.0
    fragmented_min_mb: float = 100.0
    #: revisions kept with nothing compacting them
    uncompacted_revisions: float = 100_000.0
    #: leader changes within the last hour
    leader_changes: float = 3.0
    #: clock offset between a host and this machine
    clock_drift_s: float = 1.0
    #: hours since the last verified backup
    backup_age_h: float = 25.0
    #: open-files limit of etcd
    min_open_files: float = 65536.0
    #: a learner this many raft entries behind the leader is stuck
    learner_lag: float = 1000.0

    def override(self, pairs: Mapping[str, str]) -> Thresholds:
        known = {f.name for f in fields(self)}
        values: dict[str, float] = {}
        for name, text in pairs.items():
            if name not in known:
                raise ValueError(f"no threshold {name!r}; known: {', '.join(sorted(known))}")
            try:
                values[name] = float(text)
            except ValueError:
                raise ValueError(f"threshold {name}: {text!r} is not a number") from None
        return replace(self, **values)
