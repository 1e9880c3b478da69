"""``doctor``, ``metrics``, ``monitoring`` and ``exporter`` against real etcd: a healthy cluster, then the
same cluster broken for real one way at a time (another heartbeat in one member's config, a stopped
member, a learner that never starts, leaders stopped until they lose leadership, a peer certificate
without the address peer traffic comes from, a threshold override for the disk rules), and a small quota
filled up. Scrapes of the loopback metrics listener and of the exporter are parsed by prometheus_client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from etcd_binaries import one_version
from support import need_promtool, run_cli

from etcdforge.workspace import admin_client, load_workspace

pytestmark = pytest.mark.integration


def doctor(workspace: Path, *args: str) -> tuple[int, dict[str, list[dict[str, str]]]]:
    done = run_cli("doctor", "--dir", str(workspace), "-o", "json", *args, check=False)
    assert done.returncode in (0, 1, 2), done.stderr
    report = json.loads(done.stdout)
    assert report["exit"] == done.returncode
    rules: dict[str, list[dict[str, str]]] = {}
    for f in report["findings"]:
        assert f["fix"] and f["message"], f
        rules.setdefault(f["rule"], []).append(f)
    return done.returncode, rules


#: what doctor says of every healthy cluster etcdforge makes: nothing (peers have a CA of their own, so no
#: client certificate is a peer; the last rule that fired on every cluster)
KNOWN: set[str] = set()


def up(workspace: Path, etcd_bin: Path, base: int, extra: str = "") -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    members = "".join(f"  - {{name: etcd{i}, address: 127.0.0.{base + i}}}\n" for i in (1, 2, 3))
    etcd = f"etcd: {{{extra}}}\n" if extra else ""
    (workspace / "cluster.yaml").write_text(f"name: dr\ntoken: dr-{base}\n{etcd}members:\n{members}")
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))


def pid(workspace: Path, member: str) -> int:
    from etcdforge.runtime import supervisor

    found = supervisor.running_pid(workspace / "members" / member / "etcd.pid")
    assert found is not None, f"{member} does not run"
    return found


def leader(workspace: Path) -> str:
    rows = json.loads(run_cli("status", "--dir", str(workspace), "-o", "json", check=False).stdout)
    return next(r["member"] for r in rows if r.get("is_leader"))


def parse_page(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


@one_version()
def test_doctor_finds_what_was_broken_for_real(workspace: Path, etcd_bin: Path) -> None:
    up(workspace, etcd_bin, 100)
    code, found = doctor(workspace)
    assert set(found) == KNOWN | {"backups.none"}, found
    run_cli("backup", "now", "--dir", str(workspace))
    code, found = doctor(workspace)
    assert (code, set(found)) == (0, KNOWN), found  # a healthy cluster: exit 0, no findings

    # metrics: the loopback listener needs no certificate; `metrics` reads it for every member
    page = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        "http://127.0.0.102:2381/metrics", timeout=10
    )
    families = parse_page(page.read().decode())
    assert families["etcd_server_has_leader"].samples[0].value == 1
    figures = json.loads(run_cli("metrics", "--dir", str(workspace), "-o", "json").stdout)
    assert [f["member"] for f in figures] == ["etcd1", "etcd2", "etcd3"]
    assert all(f["error"] is None and f["figures"]["has_leader"] for f in figures), figures
    assert figures[0]["url"] == "http://127.0.0.101:2381/metrics"
    raw = run_cli("metrics", "--dir", str(workspace), "--member", "etcd3", "--raw").stdout
    assert (
        "etcd_disk_wal_fsync_duration_seconds_bucket"
        in parse_page(raw)["etcd_disk_wal_fsync_duration_seconds"].samples[0].name
    )

    # a threshold override makes the disk rule judge this machine's real fsync latency
    relaxed = ("--threshold", "wal_fsync_p99_ms=0.000001", "--threshold", "min_disk_samples=1")
    _, found = doctor(workspace, *relaxed)
    assert {f["subject"] for f in found["disk.latency"]} == {"etcd1", "etcd2", "etcd3"}
    assert "WAL fsync p99" in found["disk.latency"][0]["message"]
    bad = run_cli("doctor", "--dir", str(workspace), "--threshold", "nope=1", check=False)
    assert bad.returncode != 0 and "no threshold 'nope'" in bad.stderr

    # another heartbeat in one member's config
    config = workspace / "members/etcd2/etcd.conf.yml"
    original = config.read_text()
    config.write_text(original.replace("heartbeat-interval: 100", "heartbeat-interval: 300"))
    code, found = doctor(workspace)
    (differs,) = found["configuration.differs"]
    assert code == 2 and "heartbeat-interval" in differs["message"] and "etcd2: 300" in differs["evidence"]
    assert differs["fix"].startswith(f"etcdforge down --dir {workspace} && etcdforge up --dir {workspace}")
    assert found["configuration.drift"][0]["subject"] == "etcd2"
    config.write_text(original)

    # a stopped member
    os.kill(pid(workspace, "etcd3"), signal.SIGKILL)
    code, found = doctor(workspace)
    (down,) = found["membership.down"]
    assert (
        code == 2 and down["subject"] == "etcd3" and down["fix"].startswith(f"etcdforge up --dir {workspace}")
    )
    run_cli("up", "--dir", str(workspace), "--etcd-bin", str(etcd_bin))

    # a learner that never starts (added behind etcdforge's back)
    async def add_learner() -> int:
        from etcdforge.errors import EtcdError

        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws) as client:
            for _ in range(40):  # etcd refuses a change until the restarted etcd3 has been active a while
                try:
                    members = await client.member_add(["https://127.0.0.109:2380"], learner=True)
                    break
                except EtcdError:
                    await asyncio.sleep(0.5)
            return next(m.id for m in members if "https://127.0.0.109:2380" in m.peer_urls)

    async def remove(member_id: int) -> None:
        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws) as client:
            await client.member_remove(member_id)

    learner = asyncio.run(add_learner())
    code, found = doctor(workspace)
    assert code == 2 and "never started" in found["membership.unstarted"][0]["message"]
    asyncio.run(remove(learner))

    # leaders stopped until they lose leadership: leader changes, and late heartbeats in their logs
    for _ in range(3):
        stopped = pid(workspace, leader(workspace))
        os.kill(stopped, signal.SIGSTOP)
        time.sleep(2.5)  # longer than the longest randomized election timeout (2 × 1 s)
        os.kill(stopped, signal.SIGCONT)
        time.sleep(1.5)
    _, found = doctor(workspace)
    assert "leader changes in the last hour" in found["leader.changes"][0]["message"], found
    # a paused leader that logs its late heartbeat before it hears of the new term: most runs, not all
    assert {f["subject"] for f in found.get("disk.heartbeat", [])} <= {"etcd1", "etcd2", "etcd3"}, found

    # a peer certificate without the address peer traffic comes from (127.0.0.1 in local mode)
    from etcdforge.pki.issue import issue
    from etcdforge.pki.keys import KeyPair, load_cert, load_key
    from etcdforge.pki.model import CertRequest

    ws, _ = load_workspace(workspace)
    ca = KeyPair(load_cert(ws.ca_cert), load_key(ws.pki_dir / "ca-key.pem"))
    narrow = issue(ca, CertRequest("x", "etcd2", "peer", ip_sans=("127.0.0.102",)), datetime.now(UTC))
    (workspace / "members/etcd2/pki").joinpath(Path(ws.member_paths("etcd2").peer_cert).name).write_bytes(
        narrow.cert_pem()
    )
    code, found = doctor(workspace)
    (source,) = found["certificates.peer-source"]
    assert code == 2 and source["subject"] == "etcd2" and "127.0.0.1" in source["message"]


@one_version()
def test_a_small_quota_filled_up(workspace: Path, etcd_bin: Path) -> None:
    up(workspace, etcd_bin, 90, "quota_backend_bytes: 4194304")

    async def fill() -> None:
        from etcdforge.errors import EtcdError

        ws, spec = load_workspace(workspace)
        async with admin_client(spec, ws, timeout=10) as client:
            for i in range(400):
                try:
                    await client.put(f"/fill/{i}", os.urandom(8 * 1024).hex())
                except EtcdError:
                    return  # NOSPACE: full
                if i % 10 == 9:
                    used = [r["quota_used_pct"] for r in statuses(workspace)]
                    if min(used) >= 85:
                        return

    asyncio.run(fill())
    code, found = doctor(workspace)
    assert code >= 1, found  # a warning from 80 %, a problem from 95 %
    assert {f["subject"] for f in found["space.quota"]} == {"etcd1", "etcd2", "etcd3"}, found
    quota = found["space.quota"][0]
    assert "of the quota" in quota["message"] and "etcdforge compact" in quota["fix"], quota


def statuses(workspace: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        run_cli("status", "--dir", str(workspace), "-o", "json", check=False).stdout
    )
    return rows


@one_version()
def test_monitoring_files_and_the_exporter(workspace: Path, etcd_bin: Path, tmp_path: Path) -> None:
    promtool = need_promtool()
    up(workspace, etcd_bin, 96)
    out = tmp_path / "prom"
    dry = run_cli("monitoring", "--dir", str(workspace), "--prometheus", str(out), "--dry-run").stdout
    assert "monitoring/prometheus.yml" in dry and not out.exists()
    run_cli("monitoring", "--dir", str(workspace), "--prometheus", str(out))
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "etcdforge-rules.yml"]):
        done = subprocess.run([promtool, *args], cwd=out, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    unit = (out / "etcdforge-exporter.service").read_text()
    assert f"exporter --dir {workspace.resolve()}" in unit

    # the exporter: a real scrape parses, with the certificates' expiry and the members by state
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etcdforge",
            "exporter",
            "--dir",
            str(workspace),
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in line, line + (
            proc.stderr.read() if proc.poll() is not None else ""
        )
        url = line.split()[1]
        text = (
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10).read().decode()
        )
        families = parse_page(text)
        expiry = {
            s.labels["certificate"]: s.value
            for s in families["etcdforge_certificate_expiry_timestamp_seconds"].samples
        }
        assert {"ca", "etcd1-server", "admin-client"} <= set(expiry)
        assert all(v > time.time() + 300 * 86400 for v in expiry.values())
        states = {s.labels["state"]: s.value for s in families["etcdforge_members"].samples}
        assert states["serving"] == 3 and states["down"] == 0
        assert families["etcdforge_backup_last_success_timestamp_seconds"].samples[0].value == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
