"""Pure checkers C1–C5 of the reliability suite (reliability.md), plus sentinel and throughput, over a
recorded workload history and the authoritative history etcd stored.

Role: judge a :mod:`etcdforge.testing.workload` history against a :class:`KvHistory` (what etcd stored
under the workload's prefix, read back by :func:`etcdforge.testing.cluster_checks.read_kv_history`).

Invariants:
- Pure: no I/O, no clock; unit-tested on synthetic histories, including one failing history per checker.
- Every checker returns a list of problem strings, each starting with its id (``"C1: …"``); empty means
  pass.
- A delete's revision is not known to the client (revision 0): C1 then requires a delete of that key in
  the window real time allows; C4/C5 skip ops without a revision.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .workload import Op, throughput


@dataclass(frozen=True)
class Event:
    """One change in the authoritative history: a put of ``value`` or (``value is None``) a delete."""

    revision: int
    key: str
    value: str | None


@dataclass(frozen=True)
class KvHistory:
    """What etcd stored under the workload's prefix: the state at ``start`` and every change after it,
    up to ``end``, in revision order. ``initial`` maps key -> (value, mod_revision)."""

    start: int
    end: int
    initial: Mapping[str, tuple[str, int]]
    events: tuple[Event, ...]

    def timeline(self) -> dict[str, tuple[list[int], list[tuple[str | None, int]]]]:
        """Per key: sorted revisions and the (value, mod_revision) from that revision on (None = absent)."""
        out: dict[str, tuple[list[int], list[tuple[str | None, int]]]] = defaultdict(lambda: ([], []))
        for key, (value, mod) in self.initial.items():
            out[key][0].append(self.start)
            out[key][1].append((value, mod))
        for ev in self.events:
            out[ev.key][0].append(ev.revision)
            out[ev.key][1].append((ev.value, ev.revision if ev.value is not None else 0))
        return out


def _state_at(
    timeline: Mapping[str, tuple[list[int], list[tuple[str | None, int]]]], key: str, revision: int
) -> tuple[str | None, int]:
    revs, states = timeline.get(key, ([], []))
    i = bisect.bisect_right(revs, revision) - 1
    return states[i] if i >= 0 else (None, 0)


# -- C1 ------------------------------------------------------------------------------------------------


def _max_revision_before(ops: Sequence[Op], targets: Sequence[Op]) -> list[tuple[int, Op | None]]:
    """For each target: the largest revision (and its op) among ``ops`` that returned before it was
    invoked."""
    done = sorted((op for op in ops if op.revision > 0), key=lambda o: o.returned)
    order = sorted(range(len(targets)), key=lambda i: targets[i].invoked)
    out: list[tuple[int, Op | None]] = [(0, None)] * len(targets)
    best: tuple[int, Op | None] = (0, None)
    j = 0
    for i in order:
        while j < len(done) and done[j].returned < targets[i].invoked:
            if done[j].revision > best[0]:
                best = (done[j].revision, done[j])
            j += 1
        out[i] = best
    return out


def check_no_lost_write(history: Sequence[Op], kv: KvHistory) -> list[str]:
    """C1: every ok write with revision r is in the history at r with its value; every ok delete that
    deleted a key is a delete of that key in the revision window real time allows."""
    problems: list[str] = []
    at: dict[int, list[Event]] = defaultdict(list)
    for ev in kv.events:
        at[ev.revision].append(ev)
    for op in history:
        if not op.acked_write or op.revision <= kv.start:
            continue
        if not any(ev.key == op.key and ev.value == op.value for ev in at.get(op.revision, [])):
            found = ", ".join(f"{ev.key}={ev.value!r}" for ev in at.get(op.revision, [])) or "nothing"
            problems.append(
                f"C1: acknowledged {op.kind} {op.key}={op.value!r} (client {op.writer}) at revision "
                f"{op.revision} is lost: the history has {found} there"
            )
    deletes = [op for op in history if op.kind == "delete" and op.outcome == "ok" and op.deleted > 0]
    if deletes:
        lows = _max_revision_before(history, deletes)
        writes = sorted((op for op in history if op.acked_write), key=lambda o: o.invoked)
        invoked = [w.invoked for w in writes]
        suffix_min = [kv.end] * (len(writes) + 1)
        for i in range(len(writes) - 1, -1, -1):
            suffix_min[i] = min(suffix_min[i + 1], writes[i].revision - 1)
        deleted_at: dict[str, list[int]] = defaultdict(list)
        for ev in kv.events:
            if ev.value is None:
                deleted_at[ev.key].append(ev.revision)
        for op, (low, _) in zip(deletes, lows, strict=True):
            high = suffix_min[bisect.bisect_right(invoked, op.returned)]
            revs = deleted_at.get(op.key, [])
            i = bisect.bisect_right(revs, low)
            if not (i < len(revs) and revs[i] <= high):
                problems.append(
                    f"C1: acknowledged delete of {op.key} (client {op.writer}) is not in the history "
                    f"between revisions {low + 1} and {high}"
                )
    return problems


# -- C2, C3 --------------------------------------------------------------------------------------------


def check_no_phantom(history: Sequence[Op], kv: KvHistory) -> list[str]:
    """C2: every value stored was issued by a client whose write may have applied (ok or unknown), and
    no key was deleted more often than clients asked (ok or unknown) to delete it."""
    problems: list[str] = []
    issued = {op.value for op in history if op.may_have_written}
    for ev in kv.events:
        if ev.value is not None and ev.value not in issued:
            problems.append(
                f"C2: {ev.key}={ev.value!r} at revision {ev.revision} was never issued by a client "
                "(or only by a request that failed)"
            )
    asked = Counter(
        op.key
        for op in history
        if op.kind == "delete" and (op.outcome == "unknown" or (op.outcome == "ok" and op.deleted > 0))
    )
    happened = Counter(ev.key for ev in kv.events if ev.value is None)
    for key, n in sorted(happened.items()):
        if n > asked[key]:
            problems.append(f"C2: {key} was deleted {n} times but clients asked for {asked[key]}")
    return problems


def check_at_most_once(history: Sequence[Op], kv: KvHistory) -> list[str]:
    """C3: a value (unique per request) is applied at most once, indeterminate ones included."""
    outcome = {op.value: op.outcome for op in history if op.kind in ("put", "cas")}
    seen: dict[str, list[int]] = defaultdict(list)
    for ev in kv.events:
        if ev.value is not None:
            seen[ev.value].append(ev.revision)
    return [
        f"C3: {outcome.get(value, 'unissued')} write {value!r} was applied {len(revs)} times "
        f"(revisions {revs})"
        for value, revs in seen.items()
        if len(revs) > 1
    ]


# -- C4 ------------------------------------------------------------------------------------------------


def check_real_time_order(history: Sequence[Op], kv: KvHistory) -> list[str]:
    """C4: if A returned before B was invoked, rev(B) >= rev(A), strictly when B is a write; a
    linearizable get sees the latest write of its key that returned before it was invoked; every read
    (linearizable or serializable) returns the stored state of its key at its header revision."""
    problems: list[str] = []
    ordered = [op for op in history if op.outcome == "ok" and op.revision > 0 and op.kind != "sget"]
    for op, (low, before) in zip(ordered, _max_revision_before(ordered, ordered), strict=True):
        strict = op.acked_write
        if op.revision < low or (strict and op.revision == low):
            assert before is not None
            problems.append(
                f"C4: {op.kind} {op.key} by client {op.writer} has revision {op.revision}, but "
                f"{before.kind} {before.key} by client {before.writer} returned earlier with revision {low}"
            )
    # a linearizable get sees every write of its key that completed before it started
    writes_by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.acked_write:
            writes_by_key[op.key].append(op)
    gets = [op for op in history if op.kind == "get" and op.outcome == "ok"]
    for key in {g.key for g in gets}:
        mine = [g for g in gets if g.key == key]
        for g, (low, write) in zip(mine, _max_revision_before(writes_by_key.get(key, []), mine), strict=True):
            if write is None:
                continue
            if g.mod_revision < low and not _deleted_between(kv, key, low, g.revision):
                problems.append(
                    f"C4: stale read: get {key} by client {g.writer} saw {g.value_read or 'nothing'!s} "
                    f"(mod_revision {g.mod_revision}) after {write.value!r} at revision {low} was acked"
                )
    timeline = kv.timeline()
    for op in history:
        if op.kind not in ("get", "sget") or op.outcome != "ok" or op.revision < kv.start:
            continue
        value, mod = _state_at(timeline, op.key, op.revision)
        if (op.value_read or None, op.mod_revision) != (value, mod):
            problems.append(
                f"C4: {op.kind} {op.key} by client {op.writer} at revision {op.revision} read "
                f"{op.value_read!r}@{op.mod_revision}, the history has {value!r}@{mod}"
            )
    return problems


def _deleted_between(kv: KvHistory, key: str, low: int, high: int) -> bool:
    return any(ev.key == key and ev.value is None and low < ev.revision <= high for ev in kv.events)


# -- C5 ------------------------------------------------------------------------------------------------


def check_distinct_revisions(history: Sequence[Op]) -> list[str]:
    """C5: distinct acknowledged writes got distinct revisions (our workload has no multi-write txns)."""
    first: dict[int, Op] = {}
    problems = []
    for op in history:
        if not op.acked_write:
            continue
        other = first.setdefault(op.revision, op)
        if other is not op:
            problems.append(f"C5: {op.value!r} and {other.value!r} share revision {op.revision}")
    return problems


def check_sentinel(history: Sequence[Op]) -> list[str]:
    """The closing sentinel put (the last ``sentinel-`` op) must have succeeded."""
    sentinels = [op for op in history if op.value.startswith("sentinel-")]
    if not sentinels:
        return ["sentinel: the history has no sentinel put"]
    last = sentinels[-1]
    return [] if last.outcome == "ok" else [f"sentinel: the closing put failed ({last.error})"]


def check_throughput(history: Sequence[Op], *, start: float, until: float, floor: float) -> list[str]:
    """Inconclusive (not failed) when fewer than ``floor`` ops/s were acknowledged before the fault."""
    rate = throughput(history, start=start, until=until)
    if rate < floor:
        return [f"inconclusive: {rate:.1f} acknowledged ops/s before the fault, below the floor {floor:g}"]
    return []


# -- all of them ---------------------------------------------------------------------------------------


def check_history_against(history: Sequence[Op], kv: KvHistory) -> dict[str, list[str]]:
    """C1–C5 and the sentinel on a history and the authoritative history (pure)."""
    return {
        "C1": check_no_lost_write(history, kv),
        "C2": check_no_phantom(history, kv),
        "C3": check_at_most_once(history, kv),
        "C4": check_real_time_order(history, kv),
        "C5": check_distinct_revisions(history),
        "sentinel": check_sentinel(history),
    }
