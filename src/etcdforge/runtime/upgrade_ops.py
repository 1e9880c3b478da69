"""Upgrade checks: a member reports the new version and serves a canary written through it; the
cluster version (etcd raises it once every member runs the new release)."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from etcdforge.errors import EtcdError, MaintenanceError
from etcdforge.plan import CheckMember, WaitClusterVersion
from etcdforge.runtime.cluster_ops import ClusterPort
from etcdforge.workspace import Workspace


async def check_member(client: ClusterPort, action: CheckMember) -> str:
    status = await client.status(action.url)
    if status.version != action.version:
        raise MaintenanceError(f"{action.member} reports etcd {status.version}, not {action.version}")
    value = f"{action.member} {action.version} {datetime.now(UTC).isoformat()}".encode()
    key = action.canary.encode()
    await client.put(key, value, endpoint=action.url)
    got = await client.get(key, endpoint=action.url)
    if not got.kvs or got.kvs[0].value != value:
        raise MaintenanceError(f"the canary written through {action.member} did not read back through it")
    return f"etcd {status.version}; canary read back through it"


def cluster_version(ws: Workspace, url: str, timeout: float = 5.0) -> str:
    """``GET /version``'s etcdcluster, over TLS with the admin certificate."""
    paths = ws.client_paths()
    context = ssl.create_default_context(cafile=paths.ca_cert)
    context.load_cert_chain(paths.cert, paths.key)
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context, timeout=timeout)
    try:
        conn.request("GET", "/version")
        body = conn.getresponse().read()
    finally:
        conn.close()
    return str(json.loads(body).get("etcdcluster", ""))


async def wait_cluster_version(
    ws: Workspace,
    action: WaitClusterVersion,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    deadline = clock() + action.timeout
    seen = "?"
    while True:
        try:
            seen = await asyncio.to_thread(cluster_version, ws, action.url)
        except (OSError, ValueError, ssl.SSLError, http.client.HTTPException, EtcdError) as exc:
            seen = f"unreadable ({exc})"
        if seen == action.minor or seen.startswith(action.minor + "."):
            return f"cluster version {seen}"
        if clock() > deadline:
            raise MaintenanceError(
                f"the cluster version is {seen} after {action.timeout:.0f}s, not {action.minor}",
                hint="`etcdforge status` shows each member's version",
            )
        await sleep(0.5)
