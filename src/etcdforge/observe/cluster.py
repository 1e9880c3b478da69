"""The one observation of the cluster itself: etcd's member list, with each member's health and who
leads — what every verb asks etcd before it plans (``apply``, membership changes, the CA rotation)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdforge import statuscache, topology
from etcdforge.errors import EtcdError, PlanError
from etcdforge.etcd import EtcdServerError
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client


@dataclass(frozen=True)
class MemberView:
    id: int
    name: str  # "" for a member that was added but never started
    peer_urls: tuple[str, ...]
    is_learner: bool
    healthy: bool
    is_leader: bool
    #: the etcd release it runs ("" when it did not answer a status)
    version: str = ""
    #: its client URL; whether it answers a linearizable read (``healthy`` also needs no active alarm:
    #: etcdctl's meaning); its database's size and the part in use; the revision it has applied
    url: str = ""
    serving: bool = False
    db_size: int = 0
    db_in_use: int = 0
    revision: int = 0

    @property
    def started(self) -> bool:
        return bool(self.name)

    @property
    def fragmented_pct(self) -> float:
        """How much of the database file is free pages (what a defragmentation gives back)."""
        return statuscache.fragmented_pct(self.db_size, self.db_in_use) or 0.0


@dataclass(frozen=True)
class ClusterView:
    """etcd's member list as one member answered it; ``reachable`` False: no member answered."""

    members: tuple[MemberView, ...] = ()
    reachable: bool = True
    #: active alarms as (member name — or its ID when it has none —, alarm)
    alarms: tuple[tuple[str, str], ...] = ()
    cluster_id: int = 0

    @property
    def revision(self) -> int:
        return max((m.revision for m in self.members if m.serving), default=0)

    @property
    def leader(self) -> MemberView | None:
        return next((m for m in self.members if m.is_leader and m.serving), None)

    def down(self) -> list[str]:
        """Members that do not serve (or are learners): what a change that touches every member waits for."""
        return [m.name or f"{m.id:x}" for m in self.members if not m.serving or m.is_learner]

    @property
    def voters(self) -> tuple[MemberView, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def pending(self) -> tuple[MemberView, ...]:
        """Changes in flight: learners not promoted yet, members added but never started."""
        return tuple(m for m in self.members if m.is_learner or not m.started)

    @property
    def mixed_versions(self) -> tuple[str, ...]:
        """The releases the members run, when they are not all the same (an upgrade under way)."""
        found = sorted({m.version for m in self.members if m.version})
        return tuple(found) if len(found) > 1 else ()

    @property
    def leader_id(self) -> int | None:
        return next((m.id for m in self.members if m.is_leader), None)

    def by_peer_url(self, url: str) -> MemberView | None:
        return next((m for m in self.members if url in m.peer_urls), None)

    def by_name(self, name: str) -> MemberView | None:
        return next((m for m in self.members if m.name == name), None)

    def member_id(self, name: str) -> int | None:
        found = self.by_name(name)
        return None if found is None else found.id

    def knows_peer_url(self, url: str) -> bool:
        return self.by_peer_url(url) is not None


async def observe_cluster(
    spec: ClusterSpec, ws: Workspace, *, required: bool = True, timeout: float = 3.0
) -> ClusterView:
    """Ask etcd (with the admin certificate) who the members are, who leads and who is healthy: voters
    answer a linearizable read, learners a status. A cluster that does not answer is an error when
    ``required``, else ``ClusterView(reachable=False)`` (a cluster ``apply`` has not started yet)."""
    if not required and not Path(ws.client_paths().cert).is_file():
        return ClusterView(reachable=False)
    async with admin_client(spec, ws, timeout=timeout) as client:
        try:
            members = await client.member_list()
        except EtcdError as exc:
            if not required:
                return ClusterView(reachable=False)
            raise PlanError(
                f"the cluster does not answer: {exc}", hint="`etcdforge health` shows why"
            ) from None
        statuses = await client.status_all()
        leader_ids = {s.leader for s in statuses if not isinstance(s, EtcdError) and s.leader}
        leader = leader_ids.pop() if len(leader_ids) == 1 else None
        status = {s.member_id: s for s in statuses if not isinstance(s, EtcdError)}
        try:
            active = await client.alarms()
        except EtcdError:
            active = ()
        urls = {m.name: topology.client_url(spec, m) for m in spec.members}

        async def serving(urls: Sequence[str], learner: bool) -> bool:
            if not urls:
                return False
            try:
                if learner:  # a learner serves no linearizable read: a status is all it gives
                    await client.status(urls[0])
                else:
                    await client.get(b"health", count_only=True, endpoint=urls[0])
                return True
            except EtcdError as exc:
                return isinstance(exc, EtcdServerError) and exc.reason == "permission_denied"

        where = [(urls.get(m.name) or (m.client_urls[0] if m.client_urls else "")) for m in members]
        answers = await asyncio.gather(
            *(serving((u,) if u else (), m.is_learner) for m, u in zip(members, where, strict=True))
        )
    names = {m.id: m.name for m in members if m.name}
    alarms = tuple((names.get(a.member_id, f"{a.member_id:x}"), a.alarm) for a in active)
    views = []
    for m, url, ok in zip(members, where, answers, strict=True):
        st = status.get(m.id)
        views.append(
            MemberView(
                m.id,
                m.name,
                tuple(m.peer_urls),
                m.is_learner,
                ok and (m.is_learner or not alarms),
                m.id == leader,
                st.version if st else "",
                url,
                ok,
                st.db_size if st else 0,
                st.db_size_in_use if st else 0,
                st.revision if st else 0,
            )
        )
    return ClusterView(
        tuple(views), alarms=alarms, cluster_id=next(iter(status.values())).cluster_id if status else 0
    )
