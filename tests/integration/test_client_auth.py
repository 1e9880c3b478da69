"""EtcdClient's auth administration against a real one-member mutual-TLS cluster (3.4 and 3.5), with
users named by their certificate's CN: root and the admin certificate's user hold the role root; an
``app`` certificate may read and write ``/app/``, a ``reader`` certificate may only read it. etcd's
refusals arrive as ``EtcdServerError`` reasons, never as grpc errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from etcdforge import topology
from etcdforge.etcd import AuthStatus, EtcdClient, EtcdServerError, Permission, TlsFiles
from etcdforge.spec import ClusterSpec
from etcdforge.workspace import Workspace, admin_client, load_workspace

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.66"


def client_for(spec: ClusterSpec, ws: Workspace, name: str) -> EtcdClient:
    """A client with the certificate ``up`` issued for ``pki.clients`` entry ``name`` (its CN)."""
    paths = ws.client_paths(name)
    tls = TlsFiles(ca=Path(paths.ca_cert), cert=Path(paths.cert), key=Path(paths.key))
    return EtcdClient(list(topology.client_urls(spec)), tls, timeout=3.0)


async def refused(call: Awaitable[Any]) -> str:
    """The reason etcd gives for refusing ``call`` (which must fail with a one-line server error)."""
    with pytest.raises(EtcdServerError) as info:
        await call
    assert "\n" not in str(info.value)
    return info.value.reason


async def member_list_or_refusal(client: EtcdClient) -> str:
    """Whether a non-root user may list members depends on the patch release: 3.4.23 and 3.5.1 (the
    releases tested) serve it to any certificate the CA signed; 3.4.42/3.5.28/3.6.9 refuse it, and
    3.4.43/3.5.29/3.6.10 serve it again (etcd CHANGELOG, CVE-2026-33413). Either way, no grpc error."""
    try:
        await client.member_list()
    except EtcdServerError as exc:
        assert "\n" not in str(exc)
        return exc.reason
    return "served"


async def first_chunk(client: EtcdClient, endpoint: str) -> bytes:
    async for chunk in client.snapshot(endpoint, timeout=10.0):
        return chunk
    raise AssertionError("empty snapshot stream")


async def scenario(spec: ClusterSpec, ws: Workspace) -> None:
    endpoint = topology.client_urls(spec)[0]
    async with (
        admin_client(spec, ws, timeout=5.0) as admin,
        client_for(spec, ws, "app") as app,
        client_for(spec, ws, "reader") as reader,
    ):
        assert not (await admin.auth_status()).enabled

        # etcd's preconditions for switching auth on
        assert await refused(admin.auth_enable()) == "root_user_not_exist"
        await admin.user_add("root")
        assert await refused(admin.auth_enable()) == "root_role_not_granted"
        await admin.user_grant_role("root", "root")
        admin_cn = topology.ADMIN_CLIENT  # the CN `up` gives the admin certificate
        await admin.user_add(admin_cn)
        await admin.user_grant_role(admin_cn, "root")
        await admin.user_grant_role(admin_cn, "root")  # granting twice is a no-op

        await admin.role_add("app")
        await admin.role_grant_permission("app", Permission.prefix("readwrite", b"/app/"))
        await admin.role_add("reader")
        await admin.role_grant_permission("reader", Permission.prefix("read", b"/app/"))
        for user in ("app", "reader"):
            await admin.user_add(user)
            await admin.user_grant_role(user, user)

        assert sorted(await admin.user_list()) == sorted(["root", admin_cn, "app", "reader"])
        assert {"app", "reader"} <= set(await admin.role_list())
        assert await admin.user_get("app") == ("app",)
        assert await admin.user_get(admin_cn) == ("root",)
        assert await admin.role_get("app") == (Permission("readwrite", b"/app/", b"/app0"),)
        assert await admin.role_get("reader") == (Permission("read", b"/app/", b"/app0"),)

        # the other refusals of the auth store, each with its reason
        assert await refused(admin.user_add("app")) == "user_already_exists"
        assert await refused(admin.role_add("app")) == "role_already_exists"
        assert await refused(admin.user_get("ghost")) == "user_not_found"
        assert await refused(admin.role_get("ghost")) == "role_not_found"
        assert await refused(admin.user_revoke_role("app", "reader")) == "role_not_granted"
        await admin.role_grant_permission("app", Permission("read", b"/tmp"))
        await admin.role_revoke_permission("app", b"/tmp")
        assert await refused(admin.role_revoke_permission("app", b"/tmp")) == "permission_not_granted"

        await admin.auth_enable()
        await admin.auth_enable()  # a no-op once on
        assert (await admin.auth_status()).enabled
        assert await refused(admin.user_delete("root")) == "invalid_auth_mgmt"

        # the admin certificate's user holds root: everything still works
        await admin.put("/other/x", "o")
        assert (await admin.get("/app/", prefix=True)).count == 0
        assert len(await admin.member_list()) == 1
        assert (await admin.status(endpoint)).version
        assert await first_chunk(admin, endpoint)

        # app: its prefix only
        await app.put("/app/x", "v")
        assert (await app.get("/app/x")).kvs[0].value == b"v"
        assert await refused(app.put("/other/x", "2")) == "permission_denied"
        assert await refused(app.get("/other/x")) == "permission_denied"
        assert await refused(app.member_remove(0xDEAD)) == "permission_denied"
        assert await refused(first_chunk(app, endpoint)) == "permission_denied"
        assert await refused(app.user_list()) == "permission_denied"
        assert await member_list_or_refusal(app) in ("served", "permission_denied")

        # reader: reads, never writes
        assert (await reader.get("/app/x")).kvs[0].value == b"v"
        assert await refused(reader.put("/app/y", "r")) == "permission_denied"

        # a deleted user's certificate is refused everything
        await admin.user_delete("app")
        assert await refused(app.get("/app/x")) == "permission_denied"
        assert await refused(app.put("/app/x", "w")) == "permission_denied"
        # etcd's root check names the missing user instead
        assert await refused(app.member_remove(0xDEAD)) == "user_not_found"

        await admin.auth_disable()
        status = await admin.auth_status()
        assert status == AuthStatus(enabled=False)
        assert (await app.get("/other/x")).kvs[0].value == b"o"  # auth off: any certificate the CA signed


def test_cn_users_roles_and_the_auth_switch(workspace: Path, etcd_bin: Path) -> None:
    workspace.mkdir(parents=True)
    (workspace / "cluster.yaml").write_text(
        "name: au\ntoken: au-1\npki: {clients: [admin, app, reader]}\n"
        f"members:\n  - {{name: etcd1, address: {ADDRESS}}}\n"
    )
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))
    ws, spec = load_workspace(workspace)
    asyncio.run(scenario(spec, ws))
