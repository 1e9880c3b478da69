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


def test_scheduled_backups_on_the_members_run_checked_and_record_their_outcome(
    hosts: TestHosts, tmp_path: Path
) -> None:
    directory = Path(str(init_hosts_workspace(hosts, tmp_path / "sched", 3)))
    with (directory / "cluster.yaml").open("a") as f:
        # with auth on: the members' own backup certificate must hold etcd's root role (snapshots)
        f.write("backup:\n  on_members: {every: 30m, keep: 2}\nauth: {enabled: true}\n")
        f.write("clients:\n  - {name: app, access: [{prefix: /app/}]}\n")
    applied = run_cli("apply", "--dir", str(directory), "--yes").stdout
    assert "backup-timer" in applied and "auth/enable" in applied, applied
    assert "no changes" in run_cli("plan", "--dir", str(directory)).stdout
    h1, h2, _ = hosts.hosts
    for h in hosts.hosts:
        state = hosts.run(
            h, ["systemctl", "is-enabled", "etcdforge-backup.timer"], check=False
        ).stdout.strip()
        assert state == "enabled", (h.name, state)
        active = hosts.run(
            h, ["systemctl", "is-active", "etcdforge-backup.timer"], check=False
        ).stdout.strip()
        assert active == "active", (h.name, active)
    run_cli("kv", "put", "--dir", str(directory), "/scheduled", "yes")
    # the scheduled service, run by hand three times: a verified snapshot each time, the newest 2 kept
    for _ in range(3):
        hosts.run(h1, ["systemctl", "start", "etcdforge-backup.service"])
        hosts.run(h1, ["sleep", "1.1"])  # names are per second
    listing = hosts.run(
        h1, ["sh", "-c", "stat -c '%a %U %n' /var/backups/etcd /var/backups/etcd/*.db"]
    ).stdout
    lines = listing.splitlines()
    assert lines[0] == "700 root /var/backups/etcd" and len(lines) == 3, listing
    assert all(line.startswith("600 root /var/backups/etcd/") for line in lines[1:]), listing
    record = json.loads(hosts.run(h1, ["cat", "/var/backups/etcd/last-run.json"]).stdout)
    assert record["ok"] is True and record["file"] == lines[-1].split()[-1]
    assert int(record["detail"]["revision"]) >= 2 and int(record["detail"]["totalKey"]) >= 1
    # a run that cannot reach its member fails, and says so where `backup list` shows it
    hosts.run(h2, ["systemctl", "stop", "etcd"])
    failed = hosts.run(h2, ["systemctl", "start", "etcdforge-backup.service"], check=False)
    assert failed.returncode != 0
    bad = json.loads(hosts.run(h2, ["cat", "/var/backups/etcd/last-run.json"]).stdout)
    assert bad["ok"] is False and "not healthy" in bad["detail"]
    assert hosts.run(h2, ["sh", "-c", "ls -A /var/backups/etcd | grep -c part || true"]).stdout.strip() == "0"
    listed = json.loads(run_cli("backup", "list", "--dir", str(directory), "-o", "json").stdout)
    on_members = {t["target"]: t for t in listed if t["target"].startswith("member:")}
    assert len(on_members["member:etcd1"]["files"]) == 2 and on_members["member:etcd1"]["last_run"]["ok"]
    assert on_members["member:etcd2"]["last_run"]["ok"] is False
    shown = run_cli("backup", "list", "--dir", str(directory)).stdout
    assert "etcd1:/var/backups/etcd: 2 snapshot(s)" in shown and "failed" in shown, shown
    hosts.run(h2, ["systemctl", "start", "etcd"])
