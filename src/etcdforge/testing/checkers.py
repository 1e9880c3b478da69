"""Checkers of the reliability suite (reliability.md C1–C6, C9) over a recorded workload history.

Role: judge a :mod:`etcdforge.testing.workload` history against the *authoritative* history etcd stored,
read back revision by revision (:func:`read_kv_history`; auto-compaction must be off), and judge the
cluster's and the tool's view of it.

Invariants:
- Every checker returns a list of problem strings, each starting with its id (``"C1: …"``); empty means
  pass. C1–C5 and the pure halves of C6/C9 (:func:`convergence_problems`, :func:`tool_view_problems`)
  do no I/O and are unit-tested on synthetic histories, including one failing history per checker.
- Only the gatherers (:func:`read_kv_history`, :func:`check_convergence`, :func:`check_tool_view`,
  :func:`check_all`) talk to etcd or run the CLI.
- A delete's revision is not known to the client (revision 0): C1 then requires a delete of that key in
  the window real time allows; C4/C5 skip ops without a revision.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdforge.errors import EtcdError
from etcdforge.etcd import EtcdClient, HashKV, Health, Member, MemberStatus

from .workload import Op, dump_history, throughput


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


# -- the authoritative history -------------------------------------------------------------------------


async def read_kv_history(
    client: EtcdClient, prefix: str, start: int, end: int | None = None, *, concurrency: int = 16
) -> KvHistory:
    """Read every revision in ``[start, end]`` of the keys under ``prefix`` (range at each revision) and
    turn the states into events. ``end`` defaults to the current revision. Needs no compaction past
    ``start``."""
    pfx = prefix.rstrip("/") + "/"
    if end is None:
        end = (await client.get(pfx, prefix=True, keys_only=True)).revision
    sem = asyncio.Semaphore(concurrency)

    async def state(rev: int) -> dict[str, tuple[str, int]]:
        async with sem:
            got = await client.get(pfx, prefix=True, revision=rev)
        return {k.key.decode(): (k.value.decode(), k.mod_revision) for k in got.kvs}

    states = await asyncio.gather(*(state(r) for r in range(start, end + 1)))
    events: list[Event] = []
    for rev, prev, cur in zip(range(start + 1, end + 1), states, states[1:], strict=False):
        for key in sorted(prev.keys() - cur.keys()):
            events.append(Event(rev, key, None))
        for key, (value, mod) in sorted(cur.items()):
            if mod == rev:
                events.append(Event(rev, key, value))
    return KvHistory(start, end, states[0], tuple(events))


# -- C6 ------------------------------------------------------------------------------------------------


def _member_row(m: Member) -> tuple[Any, ...]:
    return (m.id, m.name, tuple(sorted(m.peer_urls)), tuple(sorted(m.client_urls)), m.is_learner)


def convergence_problems(
    healths: Sequence[Health],
    statuses: Sequence[MemberStatus | EtcdError],
    member_lists: Mapping[str, Sequence[Member] | EtcdError],
    hashes: Sequence[HashKV | EtcdError],
) -> list[str]:
    """C6 on one observation: every member healthy, exactly one leader that everyone follows, identical
    member lists from every member, equal HashKV (at one common revision) on every member."""
    problems = [f"C6: {h.endpoint} is unhealthy: {h.error}" for h in healths if not h.healthy]
    ok = [s for s in statuses if isinstance(s, MemberStatus)]
    problems += [f"C6: status failed: {s.message}" for s in statuses if isinstance(s, EtcdError)]
    leaders = {s.member_id for s in ok if s.is_leader}
    if len(leaders) != 1:
        problems.append(f"C6: {len(leaders)} members say they are the leader: {sorted(leaders)}")
    followed = {s.leader for s in ok}
    if len(followed) > 1:
        problems.append(f"C6: members disagree on the leader: {sorted(f'{x:x}' for x in followed)}")
    lists: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for ep, ml in member_lists.items():
        if isinstance(ml, EtcdError):
            problems.append(f"C6: member list from {ep} failed: {ml.message}")
        else:
            lists[tuple(sorted(_member_row(m) for m in ml))].append(ep)
    if len(lists) > 1:
        problems.append(f"C6: members report different member lists: {dict(lists)}")
    good = [h for h in hashes if isinstance(h, HashKV)]
    problems += [f"C6: HashKV failed: {h.message}" for h in hashes if isinstance(h, EtcdError)]
    if len({(h.hash, h.compact_revision, h.revision) for h in good}) > 1:
        problems.append(
            "C6: HashKV differs: "
            + ", ".join(f"{h.endpoint}={h.hash}@{h.revision}/c{h.compact_revision}" for h in good)
        )
    return problems


async def observe_convergence(client: EtcdClient) -> list[str]:
    """One C6 observation of every endpoint of ``client``."""
    healths = await client.health_all()
    statuses = await client.status_all()

    async def members(ep: str) -> Sequence[Member] | EtcdError:
        try:
            return await client.member_list(endpoint=ep)
        except EtcdError as exc:
            return exc

    lists = dict(zip(client.endpoints, await asyncio.gather(*map(members, client.endpoints)), strict=True))
    revisions = [s.revision for s in statuses if isinstance(s, MemberStatus)]
    common = min(revisions) if revisions else 0

    async def hash_of(ep: str) -> HashKV | EtcdError:
        try:
            return await client.hash_kv(ep, common)
        except EtcdError as exc:
            return exc

    hashes = await asyncio.gather(*map(hash_of, client.endpoints))
    return convergence_problems(healths, statuses, lists, hashes)


async def check_convergence(
    client: EtcdClient,
    *,
    within: float = 30.0,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[str]:
    """C6: poll :func:`observe_convergence` until it passes or ``within`` seconds pass."""
    end = clock() + within
    while True:
        problems = await observe_convergence(client)
        if not problems or clock() >= end:
            return problems
        await sleep(interval)


# -- C9 ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecMember:
    """What the spec says a member is: its name and its URLs (from :mod:`etcdforge.topology`)."""

    name: str
    peer_url: str
    client_url: str


def tool_view_problems(
    spec: Sequence[SpecMember],
    tool_members: Sequence[Mapping[str, Any]],
    tool_status: Sequence[Mapping[str, Any]],
    members: Sequence[Member],
    statuses: Sequence[MemberStatus],
) -> list[str]:
    """C9 (pure): ``etcdforge members/status -o json`` equal etcd's member list and statuses, and the
    spec's member names and URLs equal the cluster's."""
    problems: list[str] = []
    cluster = {f"{m.id:x}": m for m in members}
    tool = {str(row["id"]): row for row in tool_members}
    if tool.keys() != cluster.keys():
        problems.append(f"C9: member ids: tool {sorted(tool)} != cluster {sorted(cluster)}")
    for mid in sorted(tool.keys() & cluster.keys()):
        row, m = tool[mid], cluster[mid]
        mine = (row["name"], sorted(row["peer_urls"]), sorted(row["client_urls"]), row["is_learner"])
        theirs = (m.name, sorted(m.peer_urls), sorted(m.client_urls), m.is_learner)
        if mine != theirs:
            problems.append(f"C9: member {mid}: tool says {mine}, etcd says {theirs}")
    by_endpoint = {s.endpoint: s for s in statuses}
    for row in tool_status:
        ep = str(row["endpoint"])
        if row.get("error"):
            problems.append(f"C9: tool status of {row['member']}: {row['error']}")
            continue
        s = by_endpoint.get(ep)
        if s is None:
            problems.append(f"C9: tool reports status of {ep}, which etcd did not answer for")
            continue
        mine_s = (row["id"], row["version"], row["is_learner"])
        theirs_s = (f"{s.member_id:x}", s.version, s.is_learner)
        if mine_s != theirs_s:
            problems.append(f"C9: status of {ep}: tool says {mine_s}, etcd says {theirs_s}")
        named = cluster.get(str(row["id"]))
        if named is not None and named.name != row["member"]:
            problems.append(f"C9: {ep}: tool names it {row['member']!r}, etcd {named.name!r}")
    if {r["endpoint"] for r in tool_status} != set(by_endpoint):
        problems.append(
            f"C9: status endpoints: tool {sorted(r['endpoint'] for r in tool_status)} "
            f"!= {sorted(by_endpoint)}"
        )
    by_name = {m.name: m for m in members}
    if {s.name for s in spec} != set(by_name):
        problems.append(f"C9: spec members {sorted(s.name for s in spec)} != cluster's {sorted(by_name)}")
    for sm in spec:
        got = by_name.get(sm.name)
        if got is None:
            continue
        if tuple(got.peer_urls) != (sm.peer_url,):
            problems.append(f"C9: {sm.name}: spec peer URL {sm.peer_url}, etcd has {list(got.peer_urls)}")
        if sm.client_url not in got.client_urls:
            problems.append(f"C9: {sm.name}: spec client URL {sm.client_url} not in {list(got.client_urls)}")
    return problems


async def _cli_json(directory: Path, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "etcdforge",
        *args,
        "-o",
        "json",
        "--dir",
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"etcdforge {' '.join(args)} exited {proc.returncode}: {err.decode().strip()}")
    return json.loads(out)


async def check_tool_view(directory: Path, client: EtcdClient) -> list[str]:
    """C9: run ``etcdforge members`` and ``etcdforge status`` (``-o json``) on the workspace at
    ``directory`` and compare with what etcd says through ``client`` (which must cover every member)."""
    from etcdforge import topology
    from etcdforge.workspace import load_workspace

    _, spec = load_workspace(directory)
    spec_members = [
        SpecMember(m.name, topology.peer_url(spec, m), topology.client_url(spec, m)) for m in spec.members
    ]
    try:
        tool_members = await _cli_json(directory, "members")
        tool_status = await _cli_json(directory, "status")
    except AssertionError as exc:
        return [f"C9: {exc}"]
    members = await client.member_list()
    statuses = [s for s in await client.status_all() if isinstance(s, MemberStatus)]
    return tool_view_problems(spec_members, tool_members, tool_status, members, statuses)


# -- all of it -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """The verdict of :func:`check_all`: problems per checker id, plus history counts."""

    problems: Mapping[str, tuple[str, ...]]
    counts: Mapping[str, int] = field(default_factory=dict)
    history_file: Path | None = None

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def all_problems(self) -> list[str]:
        return [p for ps in self.problems.values() for p in ps]

    def __str__(self) -> str:
        lines = [f"{k}: {len(v)} problem(s)" for k, v in self.problems.items()]
        lines += self.all_problems()[:50]
        lines.append("counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()))
        if self.history_file:
            lines.append(f"history: {self.history_file}")
        return "\n".join(lines)


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


async def check_all(
    client: EtcdClient,
    history: Sequence[Op],
    *,
    prefix: str,
    start_revision: int,
    workspace_dir: Path | None = None,
    converge_within: float = 30.0,
    history_file: Path | None = None,
) -> Report:
    """C6 first (the cluster settles), then read the authoritative history and run C1–C5, then C9 when
    ``workspace_dir`` is given. Writes the history as JSON lines to ``history_file`` when the run fails
    (always, if given and problems were found)."""
    results: dict[str, list[str]] = {"C6": await check_convergence(client, within=converge_within)}
    kv = await read_kv_history(client, prefix, start_revision)
    results.update(check_history_against(history, kv))
    if workspace_dir is not None:
        results["C9"] = await check_tool_view(workspace_dir, client)
    counts = Counter(op.outcome for op in history)
    stats = {
        "ops": len(history),
        "ok": counts["ok"],
        "fail": counts["fail"],
        "unknown": counts["unknown"],
        "revisions": kv.end - kv.start,
    }
    failed = any(results.values())
    written = dump_history(history, history_file) if failed and history_file is not None else None
    return Report({k: tuple(v) for k, v in results.items()}, stats, written)
