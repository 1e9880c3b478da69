"""EtcdClient against a real single-member mutual-TLS etcd (3.4 and 3.5): KV, status, health, maintenance."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from conftest_client import Cluster, etcd_binaries, free_ports, make_pki, run_cluster

from etcdforge.errors import EtcdError
from etcdforge.etcd import EtcdClient, EtcdServerError, MemberStatus, TlsFiles

pytestmark = pytest.mark.integration
T = TypeVar("T")
BINARIES = etcd_binaries()


@pytest.fixture(scope="module", params=sorted(BINARIES), ids=lambda v: f"etcd{v}")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="etcdforge-it-pki-"))
    try:
        pki = make_pki(workdir)
        with run_cluster(BINARIES[request.param], request.param, pki, 1) as c:
            yield c
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tls(c: Cluster) -> TlsFiles:
    return TlsFiles(c.pki.ca.pair.cert, c.pki.client.cert, c.pki.client.key)


def run(c: Cluster, body: Callable[[EtcdClient], Awaitable[T]]) -> T:
    """Run ``body`` with a fresh client (channels belong to the loop that asyncio.run creates)."""

    async def main() -> T:
        # a generous per-call timeout: the suite runs beside the test hosts, and an fsync can be slow
        async with EtcdClient(c.endpoints, tls(c), timeout=30) as client:
            # The member may still be electing itself right after start.
            for _ in range(100):
                try:
                    await client.get("warmup")
                    break
                except EtcdError:
                    await asyncio.sleep(0.1)
            return await body(client)

    return asyncio.run(main())


def test_put_get_delete(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> None:
        rev = await c.put("kv/a", "1")
        assert rev > 0
        got = await c.get("kv/a")
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"kv/a", b"1")]
        assert (
            got.kvs[0].mod_revision == rev and got.kvs[0].create_revision == rev and got.kvs[0].version == 1
        )
        assert got.count == 1 and got.revision >= rev
        rev2 = await c.put(b"kv/a", b"2")
        again = await c.get("kv/a")
        assert again.kvs[0].value == b"2" and again.kvs[0].version == 2 and again.kvs[0].mod_revision == rev2
        old = await c.get("kv/a", revision=rev)
        assert old.kvs[0].value == b"1"
        assert await c.delete("kv/a") == 1
        assert (await c.get("kv/a")).kvs == ()
        assert await c.delete("kv/a") == 0

    run(cluster, body)


def test_prefix_keys_only_limit_serializable(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> None:
        for k in ("p/x", "p/y", "p/z", "p0", "q"):
            await c.put(k, k.upper())
        got = await c.get("p/", prefix=True)
        assert [kv.key for kv in got.kvs] == [b"p/x", b"p/y", b"p/z"]
        keys = await c.get("p/", prefix=True, keys_only=True)
        assert [kv.value for kv in keys.kvs] == [b"", b"", b""]
        limited = await c.get("p/", prefix=True, limit=2)
        assert len(limited.kvs) == 2 and limited.count == 3 and limited.more
        local = await c.get("p/x", serializable=True)
        assert local.kvs[0].value == b"P/X"
        everything = await c.get(b"", prefix=True, keys_only=True)
        assert {b"p/x", b"p0", b"q"} <= {kv.key for kv in everything.kvs}
        assert await c.delete("p/", prefix=True) == 3
        assert (await c.get("p0")).kvs[0].value == b"P0"

    run(cluster, body)


def test_txn_compare_and_swap(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> None:
        await c.delete("cas")
        created = await c.txn("cas", "v1", mod_revision=0)
        assert created.succeeded and created.current is None
        lost = await c.txn("cas", "v-other", mod_revision=0)
        assert not lost.succeeded and lost.current is not None and lost.current.value == b"v1"
        won = await c.txn("cas", "v2", mod_revision=lost.current.mod_revision)
        assert won.succeeded
        assert (await c.get("cas")).kvs[0].value == b"v2"

    run(cluster, body)


def test_status_fields(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> MemberStatus:
        await c.put("status-key", "x")
        return await c.status(c.endpoints[0])

    st = run(cluster, body)
    assert st.version.startswith(cluster.version + ".")
    assert st.member_id != 0 and st.cluster_id != 0
    assert st.is_leader and not st.is_learner
    assert st.db_size > 0 and 0 < st.db_size_in_use <= st.db_size
    assert st.raft_term >= 1 and st.raft_index >= st.raft_applied_index > 0
    assert st.revision > 1 and st.errors == ()


def test_health_alarms_member_list(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> None:
        (h,) = await c.health_all()
        assert h.healthy and h.error is None and h.endpoint == c.endpoints[0] and 0 <= h.took < 10
        assert await c.alarms() == ()
        assert await c.disarm() == ()
        (m,) = await c.member_list()
        assert m.name == "m0" and m.client_urls == (cluster.nodes[0].client_url,) and not m.is_learner
        assert (await c.member_list(linearizable=False)) == (m,)
        st = await c.status(c.endpoints[0])
        assert m.id == st.member_id

    run(cluster, body)


def test_member_add_learner_then_remove(cluster: Cluster) -> None:
    (spare,) = free_ports(1)
    url = f"https://127.0.0.1:{spare}"

    async def conf_change_settled(c: EtcdClient) -> None:
        # raft takes one configuration change at a time and silently drops a second one proposed before
        # it has advanced past the first (the proposer then waits until its deadline). etcd answers a
        # member change once it is applied, which on a leader can be before raft has advanced (the
        # leader applies while it still fsyncs the same entries: a slow disk widens the window). A
        # write answered afterwards sits in a later raft batch, so raft has advanced past the change.
        await c.put("test/conf-change-barrier", "")

    async def body(c: EtcdClient) -> None:
        added, members = await c.member_add([url], learner=True)
        try:
            await conf_change_settled(c)
            assert added.is_learner and added.peer_urls == (url,) and not added.started
            assert added in members and len(members) == 2
            # A learner that never started cannot be promoted: etcd's answer is typed.
            with pytest.raises(EtcdServerError) as exc_info:
                await c.member_promote(added.id)
            assert exc_info.value.reason == "learner_not_ready"
            assert "in sync with leader" in str(exc_info.value)
        finally:
            after = await c.member_remove(added.id)
        assert [m.id for m in after] == [m.id for m in members if m.id != added.id]
        assert all(m.id != added.id for m in await c.member_list())
        await conf_change_settled(c)  # etcd proposes the second removal too (and refuses it when applied)
        with pytest.raises(EtcdServerError) as missing:
            await c.member_remove(added.id)
        assert missing.value.reason == "member_not_found" and missing.value.code == "NOT_FOUND"

    run(cluster, body)


def test_maintenance_defrag_hash_compact_snapshot(cluster: Cluster) -> None:
    async def body(c: EtcdClient) -> None:
        ep = c.endpoints[0]
        for i in range(5):
            rev = await c.put("m/k", str(i))
        h1 = await c.hash_kv(ep, rev)
        h2 = await c.hash_kv(ep, rev)
        assert h1.hash == h2.hash and h1.member_id != 0
        await c.compact(rev - 1, physical=True)
        with pytest.raises(EtcdServerError) as compacted:
            await c.get("m/k", revision=rev - 2)
        assert compacted.value.reason == "compacted"
        await c.defragment(ep)
        data = b"".join([chunk async for chunk in c.snapshot(ep)])
        db, digest = data[:-32], data[-32:]
        assert len(db) % 512 == 0 and hashlib.sha256(db).digest() == digest

    run(cluster, body)
