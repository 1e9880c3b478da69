"""Benchmark: `etcdforge backup now` and `etcdforge restore` against etcdctl/etcdutl by hand, on a ≥ 1 GB
database, in one run on one local 3-member cluster (made once, filled once, not timed).

* backup — raw baseline: ``etcdctl snapshot save`` from the same member (it checks only the size);
  etcdforge: ``backup now`` as a user runs it (Python start-up, observe, stream, trailer check, bbolt
  walk, ``snapshot status``, zstd, manifest, store). The phases are timed from its own step lines, so the
  snapshot + verification throughput is compared with etcdctl's, and compression (and age encryption,
  in a second workspace run with a recipient) is reported separately. The backup's peak RSS (the
  process's ``ru_maxrss``) is reported too.
* restore — raw baseline: stop the members, ``etcdutl``/``etcdctl snapshot restore`` for each member into a
  fresh data dir, start them, wait until all three answer; etcdforge: ``restore ID --yes --no-snapshot``
  (fetch + verify, stop, aside, restore, start, health, KV-hash check).

Alternating runs; medians and ratios are printed and written as JSON to ``bench/results/``. Loopback only.

    python bench/bench_backup.py [--etcd-bin PATH] [--size-mb 1100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
VALUE = 1024 * 1024  # 1 MiB values: half random, half zeros (compressible like real data, roughly)


def etcdforge(*args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run the CLI; return the process, its wall time and its peak RSS in KiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    took = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(
            f"etcdforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc, took, rss if rss > before else before


def tool(binary: Path, name: str) -> Path | None:
    candidate = binary.resolve().parent / name
    return candidate if candidate.is_file() else None


async def fill(ws: Path, size_mb: int) -> None:
    from etcdforge.workspace import admin_client, load_workspace

    w, spec = load_workspace(ws)
    async with admin_client(spec, w, timeout=30.0) as client:
        for i in range(size_mb):
            value = os.urandom(VALUE // 2) + bytes(VALUE // 2)
            await client.put(f"/bench/{i:06d}", value)


def env_for(ws: Path) -> dict[str, str]:
    env = dict(os.environ)
    for line in (ws / "etcdctl.env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    env["ETCDCTL_API"] = "3"
    return env


def raw_snapshot(ws: Path, etcdctl: Path, endpoint: str, out: Path) -> float:
    env = env_for(ws)
    env["ETCDCTL_ENDPOINTS"] = endpoint
    start = time.perf_counter()
    subprocess.run([str(etcdctl), "snapshot", "save", str(out)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


class Timing:
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.took: dict[str, float] = {}

    def step_started(self, step: object) -> None:
        self.started[step.id] = time.perf_counter()  # type: ignore[attr-defined]

    def step_done(self, step: object, note: str) -> None:
        sid = step.id  # type: ignore[attr-defined]
        self.took[sid] = time.perf_counter() - self.started[sid]

    def step_failed(self, step: object, error: Exception) -> None:
        pass


OWN_RSS = """
import asyncio, resource, sys
from pathlib import Path
from etcdforge.verbs.backup.run import backup_now
asyncio.run(backup_now(Path(sys.argv[1])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def own_rss_kib(ws: Path) -> int:
    """Peak RSS of the process that backs up (its own, not the `snapshot status` tool it runs, whose
    mmap of the database is page cache)."""
    out = subprocess.run([sys.executable, "-c", OWN_RSS, str(ws)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def backup_phases(ws: Path) -> tuple[dict[str, float], int]:
    """``backup now`` through the library with a timing reporter: seconds per step, and the db size."""
    from etcdforge.verbs.backup.run import backup_now

    timing = Timing()
    result = asyncio.run(backup_now(ws, reporter=timing))
    assert result.manifest is not None
    return timing.took, result.manifest.db_size


def raw_restore(ws: Path, binary: Path, snapshot: Path, token: str) -> float:
    """Stop the members, restore each by hand into a fresh data dir, start them, wait for health."""
    from etcdforge import topology
    from etcdforge.workspace import load_workspace

    w, spec = load_workspace(ws)
    restore_tool = tool(binary, "etcdutl") or tool(binary, "etcdctl")
    assert restore_tool is not None
    etcforge_down(ws)
    start = time.perf_counter()
    initial = topology.initial_cluster(spec)
    for m in spec.members:
        data = Path(w.member_paths(m.name).data_dir)
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run(
            [str(restore_tool), "snapshot", "restore", str(snapshot), f"--name={m.name}",
             f"--data-dir={data}", f"--initial-cluster={initial}", f"--initial-cluster-token={token}",
             f"--initial-advertise-peer-urls={topology.peer_url(spec, m)}"],
            check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"},
        )  # fmt: skip
    etcdforge("up", "--dir", str(ws), "--etcd-bin", str(binary))  # starts all three and waits for health
    return time.perf_counter() - start


def etcforge_down(ws: Path) -> None:
    etcdforge("down", "--dir", str(ws))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--etcd-bin", default=shutil.which("etcd") or "etcd")
    parser.add_argument("--size-mb", type=int, default=1100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    binary = Path(args.etcd_bin)
    etcdctl = tool(binary, "etcdctl")
    assert etcdctl is not None, "etcdctl must sit beside the etcd binary"
    tmp = Path(tempfile.mkdtemp(prefix="etcdforge-bench-backup-"))
    ws = tmp / "ws"
    ws.mkdir()
    members = "".join(f"  - {{name: etcd{i}, address: 127.0.0.{i}}}\n" for i in (1, 2, 3))
    (ws / "cluster.yaml").write_text(
        f"name: bench\ntoken: bench-1\netcd: {{quota_backend_bytes: {8 * 1024**3}}}\nmembers:\n{members}"
    )
    results: dict[str, object] = {"etcd": str(binary), "size_mb": args.size_mb, "runs": args.runs}
    try:
        etcdforge("up", "--dir", str(ws), "--etcd-bin", str(binary))
        t0 = time.perf_counter()
        asyncio.run(fill(ws, args.size_mb))
        print(f"filled {args.size_mb} MiB in {time.perf_counter() - t0:.0f}s")
        raw, ours, verify, pack_s, rss, own = [], [], [], [], [], []
        db_size = 0
        for _ in range(args.runs):
            # the same member etcdforge reads (a follower): etcd2 is never the leader here by chance
            raw.append(raw_snapshot(ws, etcdctl, "https://127.0.0.2:2379", tmp / "raw.db"))
            took, db_size = backup_phases(ws)
            verify.append(took["backup/snapshot"] + took["backup/check"])
            pack_s.append(took["backup/pack"])
            _, whole, peak = etcdforge("backup", "now", "--dir", str(ws))
            ours.append(whole)
            rss.append(peak)
            own.append(own_rss_kib(ws))
        mb = db_size / 1e6
        results["backup"] = {
            "db_mb": round(mb),
            "etcdctl_snapshot_save_s": statistics.median(raw),
            "etcdctl_mb_s": round(mb / statistics.median(raw), 1),
            "snapshot_and_verify_s": statistics.median(verify),
            "snapshot_and_verify_mb_s": round(mb / statistics.median(verify), 1),
            "throughput_ratio_vs_etcdctl": round(statistics.median(raw) / statistics.median(verify), 3),
            "zstd_s": statistics.median(pack_s),
            "backup_now_cli_total_s": statistics.median(ours),
            "peak_rss_mb_with_children": round(max(rss) / 1024),
            "peak_rss_mb_backup_process": round(max(own) / 1024),
        }
        # encryption, reported separately: the same backup with an age recipient
        from pyrage import x25519

        recipient = str(x25519.Identity.generate().to_public())
        spec_text = (ws / "cluster.yaml").read_text()
        (ws / "cluster.yaml").write_text(spec_text + f"backup:\n  encrypt_to: [{recipient}]\n")
        took, _ = backup_phases(ws)
        results["backup"]["zstd_and_age_s"] = took["backup/pack"]  # type: ignore[index]
        (ws / "cluster.yaml").write_text(spec_text)
        # restore: the latest (unencrypted) backup, by hand and by etcdforge, alternating
        listing = json.loads(etcdforge("backup", "list", "--dir", str(ws), "-o", "json")[0].stdout)
        latest = next(b["id"] for b in reversed(listing[0]["backups"]) if b["ok"] and b["encrypted"] is False)
        raw_r, ours_r = [], []
        for _ in range(args.runs):
            raw_r.append(raw_restore(ws, binary, tmp / "raw.db", f"bench-raw-{len(raw_r)}"))
            _, took_r, _ = etcdforge("restore", latest, "--dir", str(ws), "--yes", "--no-snapshot")
            ours_r.append(took_r)
        results["restore"] = {
            "by_hand_s": statistics.median(raw_r),
            "etcdforge_s": statistics.median(ours_r),
            "ratio": round(statistics.median(ours_r) / statistics.median(raw_r), 3),
        }
    finally:
        subprocess.run(
            [sys.executable, "-m", "etcdforge", "destroy", "--dir", str(ws), "--yes"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    out = HERE / "results" / f"backup-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
