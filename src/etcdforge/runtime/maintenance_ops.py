"""Maintenance calls against the :class:`~etcdforge.runtime.cluster_ops.ClusterPort`: defragment one
member, compact, disarm alarms, prove that writes work. Each is safe to repeat (a re-run converges)."""

from __future__ import annotations

from etcdforge.errors import MaintenanceError
from etcdforge.etcd import EtcdServerError
from etcdforge.plan import Compact, Defragment, DisarmAlarms, ProbeWrite
from etcdforge.runtime.cluster_ops import ClusterPort


async def perform(client: ClusterPort, action: Defragment | Compact | DisarmAlarms | ProbeWrite) -> str:
    if isinstance(action, Defragment):
        before = await client.status(action.url)
        await client.defragment(action.url, timeout=action.timeout)
        after = await client.status(action.url)
        return f"{_mib(before.db_size)} → {_mib(after.db_size)}"
    if isinstance(action, Compact):
        try:
            await client.compact(action.revision, physical=True)
        except EtcdServerError as exc:
            if exc.reason == "compacted":
                return f"already compacted at or past revision {action.revision}"
            raise
        return f"history before revision {action.revision} removed"
    if isinstance(action, DisarmAlarms):
        active = [a for a in await client.alarms() if a.alarm in action.kinds]
        for alarm in active:
            await client.disarm(alarm)
        left = [a for a in await client.alarms() if a.alarm in action.kinds]
        if left:
            raise MaintenanceError(
                f"{', '.join(sorted({a.alarm for a in left}))} still active after disarming",
                hint="etcd raised it again: the database is still over its quota",
            )
        return f"disarmed {len(active)} alarm(s)" if active else "no such alarm was active"
    key = action.key.encode()
    revision = await client.put(key, b"etcdforge write probe")
    got = await client.get(key)
    if not got.kvs or got.kvs[0].value != b"etcdforge write probe":
        raise MaintenanceError(f"the probe write to {action.key} did not read back")
    await client.delete(key)
    return f"written at revision {revision}, read back, deleted"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
