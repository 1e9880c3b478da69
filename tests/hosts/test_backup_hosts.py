"""Backups and restore on real SSH + systemd test hosts: a backup stored over SFTP on another host (host key
verified), two of three members losing their data, and `restore` bringing the whole cluster back with
every write acknowledged before the snapshot, data owned by etcd, the old data dirs kept aside, and
nothing left for `plan` to change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from support import init_hosts_workspace, run_cli

from etcdforge.testing.hosts import TestHosts
from etcdforge.testing.workload import Writer
from etcdforge.workspace import admin_client, load_workspace


def test_backup_over_sftp_then_restore_after_two_hosts_lost_their_data(
    hosts: TestHosts, tmp_path: Path
) -> None:
    directory = Path(str(init_hosts_workspace(hosts, tmp_path / "prod", 3)))
    nas = hosts.hosts[2]  # the backups go to another machine: here the third host's /srv/etcd-backups
    with (directory / "cluster.yaml").open("a") as f:
        f.write(
            "backup:\n  targets:\n"
            f"    - {{name: nas, kind: sftp, host: '{nas.address}', user: deploy, path: /srv/etcd-backups}}\n"
        )
    hosts.run(nas, ["install", "-d", "-o", "deploy", "-m", "0700", "/srv/etcd-backups"])
    run_cli("apply", "--dir", str(directory), "--yes")
    ws, spec = load_workspace(directory)

    async def write_then_backup() -> tuple[list[object], dict[str, object]]:
        async with admin_client(spec, ws, timeout=3.0) as client:
            writer = Writer(client, prefix="/hb", keys=30)
            stop = asyncio.Event()
            task = asyncio.create_task(writer.run(stop, pause=0.005))
            await asyncio.sleep(0.5)
            try:
                out = await asyncio.to_thread(
                    run_cli, "backup", "now", "--dir", str(directory), "--target", "nas", "-o", "json"
                )
            finally:
                stop.set()
                await task
        return list(writer.history), json.loads(out.stdout)

    history, taken = asyncio.run(write_then_backup())
    manifest = taken["manifest"]
    assert isinstance(manifest, dict)
    revision = manifest["check"]["revision"]
    listing = hosts.run(nas, ["ls", "-l", f"/srv/etcd-backups/{spec.name}"]).stdout
    assert f"{taken['id']}.manifest.json" in listing and f"{taken['id']}.snapshot.zst" in listing
    assert "-rw-------" in listing and " deploy " in listing, listing
    run_cli("backup", "verify", "--dir", str(directory), "--target", "nas")

    for h in hosts.hosts[:2]:  # two of three members lose everything: no quorum
        hosts.run(h, ["sh", "-c", "systemctl kill -s KILL etcd; systemctl stop etcd; rm -rf /var/lib/etcd"])
    out = run_cli("restore", "--dir", str(directory), "--target", "nas", "--yes")
    assert "restored" in out.stdout, out.stdout

    async def check() -> int:
        expected: dict[str, object] = {}
        for op in history:
            assert hasattr(op, "key")
            if op.outcome == "ok" and op.revision <= revision:  # type: ignore[attr-defined]
                prev = expected.get(op.key)  # type: ignore[attr-defined]
                if prev is None or op.revision > prev.revision:  # type: ignore[attr-defined]
                    expected[op.key] = op  # type: ignore[attr-defined]
        ws2, spec2 = load_workspace(directory)
        async with admin_client(spec2, ws2, timeout=3.0) as client:
            for key, op in expected.items():
                got = await client.get(key)
                assert got.kvs, key
                kv = got.kvs[0]
                assert op.revision <= kv.mod_revision <= revision  # type: ignore[attr-defined]
                if kv.mod_revision == op.revision:  # type: ignore[attr-defined]
                    assert kv.value.decode() == op.value  # type: ignore[attr-defined]
        return len(expected)

    assert asyncio.run(check()) == 30
    for h in hosts.hosts:
        owners = hosts.run(h, ["stat", "-c", "%U %a", "/var/lib/etcd"]).stdout.strip()
        assert owners == "etcd 700", (h.name, owners)
        asides = hosts.run(h, ["sh", "-c", "ls -d /var/lib/etcd.before-restore-*"]).stdout.split()
        assert len(asides) == 1, asides
        leftovers = hosts.run(h, ["sh", "-c", "ls /var/lib/ | grep -c restore- || true"]).stdout.strip()
        assert leftovers == "1", "only the aside dir: the uploaded snapshot was removed"
    # the third host kept its data aside (it had some); the two that lost theirs have an empty marker
    kept = hosts.run(hosts.hosts[2], ["sh", "-c", "ls /var/lib/etcd.before-restore-*/member"]).stdout
    assert "snap" in kept and "wal" in kept
    # configs carry the new token: nothing for `plan` to change
    assert "no changes" in run_cli("plan", "--dir", str(directory)).stdout
    run_cli("health", "--dir", str(directory))
