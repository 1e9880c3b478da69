"""EtcdClient against a real 3-member mutual-TLS cluster (3.4 and 3.5): membership, fan-out, move_leader."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_client import Cluster, etcd_binaries, free_ports, make_pki, run_cluster

from etcdforge.errors import EtcdError
from etcdforge.etcd import EtcdClient, MemberStatus, TlsFiles

pytestmark = pytest.mark.integration
BINARIES = etcd_binaries()


@pytest.fixture(scope="module", params=sorted(BINARIES), ids=lambda v: f"etcd{v}")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="etcdforge-it-pki-"))
    try:
        pki = make_pki(workdir)
        with run_cluster(BINARIES[request.param], request.param, pki, 3) as c:
            yield c
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tls(c: Cluster) -> TlsFiles:
    return TlsFiles(c.pki.ca.pair.cert, c.pki.client.cert, c.pki.client.key)


async def wait_leader(c: EtcdClient) -> MemberStatus:
    for _ in range(200):
        try:
            return await c.leader()
        except EtcdError:
            await asyncio.sleep(0.05)
    raise AssertionError("no leader elected")


def test_member_list_status_health(cluster: Cluster) -> None:
    async def main() -> None:
        async with EtcdClient(cluster.endpoints, tls(cluster)) as c:
            await wait_leader(c)
            members = await c.member_list()
            assert sorted(m.name for m in members) == ["m0", "m1", "m2"]
            assert sorted(u for m in members for u in m.client_urls) == sorted(cluster.endpoints)
            statuses = await c.status_all()
            assert all(isinstance(s, MemberStatus) for s in statuses)
            ok = [s for s in statuses if isinstance(s, MemberStatus)]
            assert {s.member_id for s in ok} == {m.id for m in members}
            assert len({s.leader for s in ok}) == 1 and sum(s.is_leader for s in ok) == 1
            assert len({s.cluster_id for s in ok}) == 1
            healths = await c.health_all()
            assert [h.endpoint for h in healths] == cluster.endpoints and all(h.healthy for h in healths)

    asyncio.run(main())


def test_move_leader(cluster: Cluster) -> None:
    async def main() -> None:
        async with EtcdClient(cluster.endpoints, tls(cluster)) as c:
            before = await wait_leader(c)
            target = next(m for m in await c.member_list() if m.id != before.member_id)
            await c.move_leader(target.id)
            for _ in range(100):
                now = await wait_leader(c)
                if now.member_id == target.id:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("leadership did not move")

    asyncio.run(main())


def test_read_fails_over_past_a_dead_endpoint(cluster: Cluster) -> None:
    (dead,) = free_ports(1)
    endpoints = [f"https://127.0.0.1:{dead}", *cluster.endpoints]

    async def main() -> None:
        async with EtcdClient(endpoints, tls(cluster)) as c:
            await wait_leader(c)
            rev = await c.put("failover", "yes")  # connect-first path skips the dead endpoint
            got = await c.get("failover")
            assert got.kvs[0].value == b"yes" and got.revision >= rev
            assert len(await c.member_list()) == 3
            statuses = await c.status_all()
            assert isinstance(statuses[0], EtcdError) and "connection refused" in statuses[0].message

    asyncio.run(main())
