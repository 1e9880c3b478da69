"""Day-1 reads and writes against a workspace's cluster: status, health, members, kv.

Everything goes through our own gRPC client with the admin client certificate, to every member's
client URL from the spec — the same in local mode and (later) against remote hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etcdforge import topology
from etcdforge.errors import EtcdError
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client

if TYPE_CHECKING:
    from etcdforge.etcd import Health, Member, MemberStatus


@dataclass(frozen=True)
class StatusRow:
    member: str
    endpoint: str
    status: MemberStatus | None
    error: str | None


async def status(spec: ClusterSpec, ws: Workspace, *, timeout: float = 2.0) -> tuple[StatusRow, ...]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        results = await asyncio.gather(
            *(client.status(topology.client_url(spec, m)) for m in spec.members), return_exceptions=True
        )
    rows = []
    for m, r in zip(spec.members, results, strict=True):
        url = topology.client_url(spec, m)
        if isinstance(r, EtcdError):
            rows.append(StatusRow(m.name, url, None, str(r)))
        elif isinstance(r, BaseException):
            raise r
        else:
            rows.append(StatusRow(m.name, url, r, None))
    return tuple(rows)


async def health(spec: ClusterSpec, ws: Workspace, *, timeout: float = 5.0) -> tuple[tuple[str, Health], ...]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        results = await asyncio.gather(*(client.health(topology.client_url(spec, m)) for m in spec.members))
    return tuple((m.name, h) for m, h in zip(spec.members, results, strict=True))


async def members(spec: ClusterSpec, ws: Workspace, *, timeout: float = 5.0) -> Sequence[Member]:
    async with admin_client(spec, ws, timeout=timeout) as client:
        return await client.member_list()
