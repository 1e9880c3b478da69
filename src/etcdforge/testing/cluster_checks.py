"""Cluster-side checkers of the reliability suite (reliability.md C6, C9) and :func:`check_all`.

Role: gather what etcd and the etcdforge CLI say — the authoritative key history
(:func:`read_kv_history`; auto-compaction must be off), C6 convergence, C9 the tool's view — and combine
them with the pure C1–C5 of :mod:`etcdforge.testing.history_checks` into one :class:`Report`.

Invariants:
- Every checker returns a list of problem strings, each starting with its id (``"C6: …"``); empty means
  pass.
- The pure halves of C6/C9 (:func:`convergence_problems`, :func:`tool_view_problems`,
  :func:`cert_view_problems`) do no I/O and are
  unit-tested; only the gatherers (:func:`read_kv_history`, :func:`observe_convergence`,
  :func:`check_convergence`, :func:`check_tool_view`, :func:`check_all`) talk to etcd or run the CLI.
- Time and sleep are injected into :func:`check_convergence`, so tests never sleep.
"""

from __future__ import annotations

import asyncio
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

from .history_checks import Event, KvHistory, check_history_against
from .workload import Op, dump_history

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


@dataclass(frozen=True)
class CertFacts:
    """A certificate's identity for C9: serial and expiry."""

    serial: int
    not_after: str  # ISO timestamp


def cert_view_problems(
    expected: Mapping[str, CertFacts], presented: Mapping[str, CertFacts | str]
) -> list[str]:
    """C9 (pure), certificates: every endpoint presents exactly the certificate the tool's PKI records
    for it (same serial, same expiry). ``presented`` maps an endpoint to its facts or an error text."""
    problems = []
    for url in sorted(expected):
        want, got = expected[url], presented.get(url, "not probed")
        if isinstance(got, str):
            problems.append(f"C9: {url}: could not read the presented certificate: {got}")
        elif got != want:
            problems.append(
                f"C9: {url} presents serial {got.serial:x} (until {got.not_after}); the tool's PKI has "
                f"{want.serial:x} (until {want.not_after})"
            )
    return problems


async def presented_cert_problems(directory: Path) -> list[str]:
    """C9, certificates: what each member presents on its client and peer port (a fresh handshake) is
    what the workspace's PKI says it should present."""
    from etcdforge import topology
    from etcdforge.etcd.presented import presented_certificate
    from etcdforge.etcd.types import TlsFiles
    from etcdforge.pki.keys import load_cert
    from etcdforge.runtime.cert_verify import endpoint_tls
    from etcdforge.workspace import load_workspace

    ws, spec = load_workspace(directory)
    expected: dict[str, CertFacts] = {}
    tls: dict[str, TlsFiles] = {}
    for m in spec.members:
        for url, stem, peer in (
            (topology.client_url(spec, m), topology.server_cert_name(m.name), False),
            (topology.peer_url(spec, m), topology.peer_cert_name(m.name), True),
        ):
            cert = load_cert(ws.cert_path(stem))
            expected[url] = CertFacts(cert.serial_number, cert.not_valid_after_utc.isoformat())
            tls[url] = endpoint_tls(ws, m.name, peer=peer)

    async def probe(url: str) -> CertFacts | str:
        try:
            got = (await presented_certificate(url, tls[url])).cert
        except EtcdError as exc:
            return str(exc)
        return CertFacts(got.serial_number, got.not_valid_after_utc.isoformat())

    results = await asyncio.gather(*(probe(u) for u in expected))
    return cert_view_problems(expected, dict(zip(expected, results, strict=True)))


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
    problems = tool_view_problems(spec_members, tool_members, tool_status, members, statuses)
    return problems + await presented_cert_problems(directory)


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
