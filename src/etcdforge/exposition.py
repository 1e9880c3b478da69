"""Pure reading of etcd's ``/metrics`` (the Prometheus text exposition format) and its key figures.

What ``etcdforge metrics`` prints and what ``doctor``'s disk, leader and space rules judge. Only what
etcd emits is parsed: ``name{label="value",…} value``, ``# HELP``/``# TYPE`` comments skipped, label
values with ``\\\\``, ``\\"`` and ``\\n`` escapes. Quantiles of a histogram follow Prometheus's
``histogram_quantile`` (linear within the bucket, the last finite bound when the rank falls into +Inf).
The counts are since the member started (``process_start_time_seconds``), not a rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str | None:
        return next((v for k, v in self.labels if k == key), None)


class ExpositionError(ValueError):
    """A line that is not in the Prometheus text format."""


def parse(text: str) -> tuple[Sample, ...]:
    out = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(_sample(line))
        except (ValueError, IndexError) as exc:
            raise ExpositionError(f"line {number}: {exc}: {raw[:120]!r}") from None
    return tuple(out)


def _sample(line: str) -> Sample:
    brace = line.find("{")
    space = min((i for i in (line.find(" "), line.find("\t")) if i != -1), default=-1)
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace].strip()
        labels, rest = _labels(line, brace + 1)
    else:
        name, rest = line[:space], line[space:]
        labels = ()
    rest = rest.split(" # ", 1)[0]  # an exemplar (OpenMetrics) after the value
    if not name:
        raise ValueError("no metric name")
    fields = rest.split()
    if not fields or len(fields) > 2:
        raise ValueError("expected a value (and an optional timestamp)")
    return Sample(name, labels, _float(fields[0]))


def _labels(line: str, i: int) -> tuple[Labels, str]:
    labels: list[tuple[str, str]] = []
    while True:
        while line[i] in " ,":
            i += 1
        if line[i] == "}":
            return tuple(labels), line[i + 1 :]
        eq = line.index("=", i)
        key = line[i:eq].strip()
        while line[eq + 1] == " ":
            eq += 1
        if line[eq + 1] != '"':
            raise ValueError(f"label {key} has no quoted value")
        j, value = eq + 2, []
        while line[j] != '"':
            if line[j] == "\\":
                j += 1
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(line[j], "\\" + line[j]))
            else:
                value.append(line[j])
            j += 1
        labels.append((key, "".join(value)))
        i = j + 1


def _float(text: str) -> float:
    special = {"+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return special[text] if text in special else float(text)


def total(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The sum of ``name`` over the samples whose labels include ``labels`` (None: no such sample)."""
    found = [s.value for s in samples if s.name == name and all(s.label(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over cumulative ``(le, count)`` buckets (None: no observation)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != math.inf or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    below_bound, below_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == math.inf:
                return below_bound  # the highest finite bound: all Prometheus can say
            if count == below_count:
                return bound
            return below_bound + (bound - below_bound) * (rank - below_count) / (count - below_count)
        below_bound, below_count = bound, count
    return below_bound


def histogram_quantile(samples: Iterable[Sample], name: str, q: float) -> float | None:
    """The ``q`` quantile of histogram ``name``, buckets summed over every other label (e.g. all peers)."""
    merged: dict[float, float] = {}
    for s in samples:
        if s.name == f"{name}_bucket":
            le = s.label("le")
            if le is not None:
                bound = _float(le)
                merged[bound] = merged.get(bound, 0.0) + s.value
    return quantile(q, list(merged.items()))


@dataclass(frozen=True)
class Figures:
    """The figures an operator looks at first (etcd's monitoring guide), from one member's metrics."""

    version: str | None
    has_leader: bool | None
    is_learner: bool | None
    leader_changes: float | None
    proposals_committed: float | None
    proposals_applied: float | None
    proposals_pending: float | None
    proposals_failed: float | None
    db_size: float | None
    db_in_use: float | None
    quota: float | None
    wal_fsync_p99: float | None
    wal_fsyncs: float | None
    backend_commit_p99: float | None
    backend_commits: float | None
    peer_rtt_p99: float | None
    heartbeat_send_failures: float | None
    slow_applies: float | None
    open_fds: float | None
    max_fds: float | None
    started_at: float | None

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def figures(samples: Sequence[Sample]) -> Figures:
    def flag(name: str) -> bool | None:
        value = total(samples, name)
        return None if value is None else value >= 1

    version = next((s.label("server_version") for s in samples if s.name == "etcd_server_version"), None)
    return Figures(
        version=version,
        has_leader=flag("etcd_server_has_leader"),
        is_learner=flag("etcd_server_is_learner"),
        leader_changes=total(samples, "etcd_server_leader_changes_seen_total"),
        proposals_committed=total(samples, "etcd_server_proposals_committed_total"),
        proposals_applied=total(samples, "etcd_server_proposals_applied_total"),
        proposals_pending=total(samples, "etcd_server_proposals_pending"),
        proposals_failed=total(samples, "etcd_server_proposals_failed_total"),
        db_size=total(samples, "etcd_mvcc_db_total_size_in_bytes"),
        db_in_use=total(samples, "etcd_mvcc_db_total_size_in_use_in_bytes"),
        quota=total(samples, "etcd_server_quota_backend_bytes"),
        wal_fsync_p99=histogram_quantile(samples, "etcd_disk_wal_fsync_duration_seconds", 0.99),
        wal_fsyncs=total(samples, "etcd_disk_wal_fsync_duration_seconds_count"),
        backend_commit_p99=histogram_quantile(samples, "etcd_disk_backend_commit_duration_seconds", 0.99),
        backend_commits=total(samples, "etcd_disk_backend_commit_duration_seconds_count"),
        peer_rtt_p99=histogram_quantile(samples, "etcd_network_peer_round_trip_time_seconds", 0.99),
        heartbeat_send_failures=total(samples, "etcd_server_heartbeat_send_failures_total"),
        slow_applies=total(samples, "etcd_server_slow_apply_total"),
        open_fds=total(samples, "process_open_fds"),
        max_fds=total(samples, "process_max_fds"),
        started_at=total(samples, "process_start_time_seconds"),
    )
