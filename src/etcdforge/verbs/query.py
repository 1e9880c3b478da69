"""Day-1 reads and writes against a workspace's cluster: status, health, members, kv.

Everything goes through our own gRPC client with the admin client certificate, to every member's
client URL from the spec — the same in local mode and (later) against remote hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etcdforge import statuscache, topology
from etcdforge.errors import EtcdError
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client

if TYPE_CHECKING:
    from etcdforge.etcd import EtcdClient, Health, Member, MemberStatus
    from etcdforge.etcd.types import Alarm


@dataclass(frozen=True)
class StatusRow:
    member: str
    endpoint: str
    status: MemberStatus | None
    error: str | None
    #: the active alarms raised by this member (NOSPACE, CORRUPT)
    alarms: tuple[str, ...] = ()
    quota: int = 0

    @property
    def quota_used_pct(self) -> float | None:
        """The database file's size against the backend quota (NOSPACE at 100 %)."""
        return None if self.status is None else statuscache.quota_used_pct(self.status.db_size, self.quota)

    @property
    def fragmented_pct(self) -> float | None:
        """Free pages in the database file: what a defragmentation gives back."""
        s = self.status
        return None if s is None else statuscache.fragmented_pct(s.db_size, s.db_size_in_use)


async def status(spec: ClusterSpec, ws: Workspace, *, timeout: float = 2.0) -> tuple[StatusRow, ...]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        results, alarms = await asyncio.gather(
            asyncio.gather(
                *(client.status(topology.client_url(spec, m)) for m in spec.members), return_exceptions=True
            ),
            _alarms(client),
        )
    rows = []
    for m, r in zip(spec.members, results, strict=True):
        url = topology.client_url(spec, m)
        if isinstance(r, EtcdError):
            rows.append(StatusRow(m.name, url, None, str(r)))
        elif isinstance(r, BaseException):
            raise r
        else:
            raised = tuple(sorted(a.alarm for a in alarms if a.member_id == r.member_id))
            rows.append(StatusRow(m.name, url, r, None, raised, spec.quota_bytes))
    return tuple(rows)


async def _alarms(client: EtcdClient) -> tuple[Alarm, ...]:
    try:
        return await client.alarms()
    except EtcdError:  # no quorum: the statuses say enough
        return ()


async def health(spec: ClusterSpec, ws: Workspace, *, timeout: float = 5.0) -> tuple[tuple[str, Health], ...]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        results = await asyncio.gather(*(client.health(topology.client_url(spec, m)) for m in spec.members))
    return tuple((m.name, h) for m, h in zip(spec.members, results, strict=True))


async def members(spec: ClusterSpec, ws: Workspace, *, timeout: float = 5.0) -> Sequence[Member]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        return await client.member_list()
