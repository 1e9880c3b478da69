"""Plan the maintenance verbs (pure): defragment, compact, disarm alarms, recover from NOSPACE, and
find a member whose data differs from the others.

Safety rules, tested as pure code:

* ``defrag`` blocks each member while it runs, so it needs every member of the spec serving first (a
  member down plus one defragmenting can cost a 3-member cluster its quorum); followers go first, in
  spec order, the leader last after it handed leadership to a member already done; between members a
  linearizable read through every member is the gate; each member's timeout grows with its database;
* ``compact`` and ``alarms disarm`` are writes through raft: they need a serving quorum;
* ``space recover`` compacts to the current revision, defragments every member (rules of ``defrag``),
  disarms NOSPACE and proves with a write that the cluster takes writes again;
* a member whose HashKV differs from the majority at one revision is the corrupt one (etcd's CORRUPT
  alarm can name the wrong member in older releases); ``member replace`` rebuilds it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from etcdforge import topology
from etcdforge.errors import PlanError
from etcdforge.observe.cluster import ClusterView
from etcdforge.plan import Compact, Defragment, DisarmAlarms, MoveLeader, Plan, ProbeWrite, Step, WaitHealthy

#: a member's defragmentation may take this long at least, plus PER_GIB_SECONDS per GiB of its database
#: (measured here: 11.5 s for 2.3 GB on one member, so this is ~5x headroom)
BASE_TIMEOUT = 60.0
PER_GIB_SECONDS = 30.0
#: the health gate between two members' defragmentations
GATE_SECONDS = 60.0
#: the key ``space recover`` writes, reads back and deletes to prove writes work
PROBE_KEY = "/etcdforge/write-probe"


def defrag_timeout(db_size: int) -> float:
    return BASE_TIMEOUT + PER_GIB_SECONDS * db_size / 2**30


def require_all_serving(view: ClusterView, what: str) -> None:
    down = view.down()
    if down or not view.members:
        raise PlanError(
            f"{what} blocks each member in turn and needs every member serving first: "
            f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} not",
            hint="`etcdforge health` shows why; bring it back (or `member replace` it) first",
        )


def require_quorum(view: ClusterView, what: str) -> None:
    serving = [m for m in view.members if m.serving and not m.is_learner]
    voters = [m for m in view.members if not m.is_learner]
    if len(serving) < topology.quorum(len(voters)):
        raise PlanError(
            f"{what} needs a serving quorum: {len(serving)} of {len(voters)} members serve",
            hint="`etcdforge health` shows why",
        )


def defrag_steps(
    view: ClusterView, *, only: str | None = None, min_pct: float = 0.0
) -> tuple[list[Step], list[str]]:
    """The rolling defragmentation (see the module's rules); returns (steps, members skipped and why)."""
    require_all_serving(view, "a defragmentation")
    names = [m.name for m in view.members]
    if only is not None and only not in names:
        raise PlanError(f"no member named {only!r}", hint="`etcdforge status` lists them")
    leader = view.leader
    chosen = [m for m in view.members if only is None or m.name == only]
    skipped = [
        f"{m.name}: {m.fragmented_pct:.0f}% free pages, below --if-fragmented {min_pct:g}%"
        for m in chosen
        if m.fragmented_pct < min_pct
    ]
    todo = [m for m in chosen if m.fragmented_pct >= min_pct]
    followers = [m for m in todo if leader is None or m.name != leader.name]
    last = [m for m in todo if leader is not None and m.name == leader.name]
    everyone = tuple(names)
    steps: list[Step] = []
    done: list[str] = []
    for m in (*followers, *last):
        if leader is not None and m.name == leader.name and len(view.members) > 1:
            to = done[-1] if done else next(x.name for x in view.members if x.name != m.name)
            steps.append(
                Step(f"{m.name}/move-leader", m.name, MoveLeader(to), f"{m.name} leads; hand over first")
            )
        timeout = defrag_timeout(m.db_size)
        steps.append(
            Step(
                f"{m.name}/defragment",
                m.name,
                Defragment(m.name, m.url, timeout),
                f"{m.db_size / 2**20:.1f} MiB, {m.fragmented_pct:.0f}% free pages (timeout {timeout:.0f}s)",
            )
        )
        steps.append(
            Step(
                f"{m.name}/wait-healthy",
                "cluster",
                WaitHealthy(everyone, GATE_SECONDS, despite_alarms=True),
                "every member serves linearizable reads before the next one",
            )
        )
        done.append(m.name)
    return steps, skipped


def plan_defrag(
    view: ClusterView, *, only: str | None = None, min_pct: float = 0.0
) -> tuple[Plan, list[str]]:
    steps, skipped = defrag_steps(view, only=only, min_pct=min_pct)
    return Plan("defrag", tuple(steps)), skipped


def plan_compact(view: ClusterView, revision: int) -> Plan:
    require_quorum(view, "a compaction")
    current = view.revision
    if revision > current:
        raise PlanError(f"revision {revision} is in the future: the cluster is at revision {current}")
    if revision <= 0:
        raise PlanError(f"revision {revision}: nothing to compact")
    return Plan(
        "compact",
        (Step("cluster/compact", "cluster", Compact(revision), f"keep history from revision {revision} on"),),
    )


def plan_disarm(view: ClusterView, kinds: tuple[str, ...]) -> Plan:
    require_quorum(view, "disarming alarms")
    active = [a for a in view.alarms if a[1] in kinds]
    if not active:
        return Plan("alarms-disarm", ())
    what = ", ".join(f"{alarm} on {who}" for who, alarm in active)
    return Plan("alarms-disarm", (Step("cluster/disarm", "cluster", DisarmAlarms(kinds), what),))


def plan_space_recover(view: ClusterView) -> tuple[Plan, list[str]]:
    """NOSPACE: compact to the current revision, defragment every member, disarm, prove writes work."""
    require_all_serving(view, "recovering space (a defragmentation of every member)")
    steps = [
        Step(
            "cluster/compact",
            "cluster",
            Compact(view.revision),
            f"drop the history before revision {view.revision} (the current one)",
        )
    ]
    defrag, _ = defrag_steps(view)
    steps += defrag
    steps.append(
        Step("cluster/disarm", "cluster", DisarmAlarms(("NOSPACE",)), "writes are refused until then")
    )
    steps.append(
        Step("cluster/write-probe", "cluster", ProbeWrite(PROBE_KEY), "prove that writes work again")
    )
    warnings = [] if any(a == "NOSPACE" for _, a in view.alarms) else ["no NOSPACE alarm is active"]
    return Plan("space-recover", tuple(steps)), warnings


@dataclass(frozen=True)
class HashReport:
    revision: int
    #: member name -> (hash, compact revision); a member that did not answer is absent
    hashes: dict[str, tuple[int, int]]

    def odd_ones(self) -> list[str]:
        """Members whose hash differs from the majority's (none when there is no majority)."""
        counts = Counter(self.hashes.values())
        if not counts:
            return []
        common, n = counts.most_common(1)[0]
        if n * 2 <= len(self.hashes):
            return []
        return sorted(name for name, h in self.hashes.items() if h != common)

    def agree(self) -> bool:
        return len(set(self.hashes.values())) <= 1

    def verdict(self) -> str:
        if not self.hashes:
            return "no member answered HashKV"
        if self.agree():
            n = len(self.hashes)
            return f"every member that answered ({n}) holds the same data at revision {self.revision}"
        odd = self.odd_ones()
        if not odd:
            return (
                f"the members disagree at revision {self.revision} and no majority agrees: restore a backup"
            )
        return (
            f"{', '.join(odd)} {'holds' if len(odd) == 1 else 'hold'} data that differs from the others at "
            f"revision {self.revision}: `etcdforge member replace {odd[0]}` rebuilds it from them"
        )
