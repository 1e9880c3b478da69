"""The one observation of the cluster itself: etcd's member list, with each member's health and who
leads — what every verb asks etcd before it plans (``apply``, membership changes, the CA rotation)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdforge.errors import EtcdError, PlanError
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

    @property
    def started(self) -> bool:
        return bool(self.name)


@dataclass(frozen=True)
class ClusterView:
    """etcd's member list as one member answered it; ``reachable`` False: no member answered."""

    members: tuple[MemberView, ...] = ()
    reachable: bool = True

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
        versions = {s.member_id: s.version for s in statuses if not isinstance(s, EtcdError)}

        async def healthy(urls: Sequence[str], learner: bool) -> bool:
            if not urls:
                return False
            if learner:
                try:
                    await client.status(urls[0])
                    return True
                except EtcdError:
                    return False
            return (await client.health(urls[0])).healthy

        health = await asyncio.gather(*(healthy(m.client_urls, m.is_learner) for m in members))
    return ClusterView(
        tuple(
            MemberView(
                m.id, m.name, tuple(m.peer_urls), m.is_learner, ok, m.id == leader, versions.get(m.id, "")
            )
            for m, ok in zip(members, health, strict=True)
        )
    )
