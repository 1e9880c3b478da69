"""Benchmark: `etcdforge member add` of a 4th member into a 3-member cluster holding a few hundred MB.

In one run (root; systemd-nspawn test hosts in their own network namespaces, see shared/docs/test-hosts.md):

* setup (untimed) — ``init`` + ``apply --yes`` of a 3-member cluster on hosts 1–3 (Debian's etcd, backend
  quota raised to 4 GiB), then ``--mb`` MB (default 300) of 256 KiB–1 MiB values written concurrently with
  etcdforge's own client, checked with ``etcdforge status -o json`` (db_size ≥ the target);
* etcdforge — ``etcdforge member add etcd4 --address HOST4``: learner, deploy, start, catch up (the
  leader sends the whole DB as a snapshot), promote, health. Then ``member remove etcd4`` (untimed);
* by hand — the same with etcdctl, ssh/scp and systemctl, as a careful shell user would script it:
  ``etcdctl member add etcd4 --learner``, wipe ``/var/lib/etcd`` on host 4, ``scp`` its certificates
  (the ones etcdforge issued, still in the workspace's ``pki/``) and a unit with the guide's flags plus
  ``--initial-cluster-state=existing`` and the ``ETCD_INITIAL_CLUSTER`` that ``member add`` printed,
  ``systemctl daemon-reload``, ``systemctl start --no-block etcd``, ``etcdctl member promote ID`` every
  0.5 s until etcd accepts it, then ``etcdctl endpoint health`` until all four answer. Then ``etcdctl
  member remove`` (untimed).

Both are timed from the first command to a healthy 4-member cluster; host 4 is reset between runs, an
untimed etcdforge add comes first (in trial runs the first add after the fill was much the slowest) and
the two alternate which goes first. Results go to ``bench/results/member_add.json``
(goal: etcdforge/by-hand ≤ 1.2).

    python bench/bench_member_add.py [--runs 2] [--mb 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from etcdforge.testing.hosts import TestHost, TestHosts, cleanup_stale
from etcdforge.workspace import admin_client, load_workspace

HERE = Path(__file__).resolve().parent
ETCDCTL = "/usr/bin/etcdctl"  # Debian's, the same 3.4.23 as the members
QUOTA = 4294967296
KIB = 1024
MIB = 1024 * KIB
PROMOTE_POLL = 0.5  # a careful human's retry interval for `etcdctl member promote`
WAIT = 300.0  # bound on every wait for the cluster

#: the guide's unit, for a member that joins an existing cluster (flags from `etcdctl member add`'s output)
HAND_UNIT = """\
[Unit]
Description=Etcd Server
After=network.target
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
WorkingDirectory=/var/lib/etcd/
ExecStart=/usr/bin/etcd \\
  --name={name} \\
  --cert-file=/etc/etcd/pki/{name}-server.pem \\
  --key-file=/etc/etcd/pki/{name}-server-key.pem \\
  --trusted-ca-file=/etc/etcd/pki/ca.pem \\
  --peer-cert-file=/etc/etcd/pki/{name}-peer.pem \\
  --peer-key-file=/etc/etcd/pki/{name}-peer-key.pem \\
  --peer-trusted-ca-file=/etc/etcd/pki/ca.pem \\
  --peer-client-cert-auth \\
  --client-cert-auth \\
  --listen-peer-urls=https://{ip}:2380 \\
  --initial-advertise-peer-urls=https://{ip}:2380 \\
  --listen-client-urls=https://{ip}:2379,https://127.0.0.1:2379 \\
  --advertise-client-urls=https://{ip}:2379 \\
  --initial-cluster-token={token} \\
  --initial-cluster={cluster} \\
  --initial-cluster-state=existing \\
  --quota-backend-bytes={quota} \\
  --data-dir=/var/lib/etcd
Restart=on-failure
RestartSec=5
TimeoutStartSec=infinity
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def etcdforge(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"etcdforge {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload,no-any-return]


# ---------------------------------------------------------------- setup


def setup_cluster(hosts: TestHosts, ws: Path) -> None:
    members = [f"--member=etcd{i + 1}={h.address}" for i, h in enumerate(hosts.hosts[:3])]
    etcdforge(
        "init", "--dir", str(ws), *members, "--ssh-key", str(hosts.client_key),
        "--known-hosts", str(hosts.known_hosts), "--etcd-binary", "system",
    )  # fmt: skip
    spec = ws / "cluster.yaml"
    text = spec.read_text()
    if "\netcd:\n" not in text:
        raise RuntimeError("cluster.yaml has no `etcd:` section to raise the quota in")
    spec.write_text(text.replace("\netcd:\n", f"\netcd:\n  quota_backend_bytes: {QUOTA}\n", 1))
    etcdforge("apply", "--dir", str(ws), "--yes")


def db_sizes(ws: Path) -> dict[str, int]:
    rows = json.loads(etcdforge("status", "--dir", str(ws), "-o", "json", timeout=120).stdout)
    return {r["member"]: int(r.get("db_size") or 0) for r in rows}


async def _put_values(ws: Path, total: int, offset: int, concurrency: int = 8) -> tuple[int, int]:
    """Write ≥ ``total`` bytes in values of 256 KiB–1 MiB (≤ max-request-bytes); returns (bytes, keys)."""
    workspace, spec = load_workspace(ws)
    rng = random.Random(offset)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(rng.randint(256 * KIB, MIB))
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for i, size in enumerate(sizes):
        queue.put_nowait((offset + i, size))

    async with admin_client(spec, workspace, timeout=60.0) as client:

        async def worker() -> None:
            while True:
                try:
                    index, size = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await client.put(f"/bench/fill/{index:07d}", os.urandom(size))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=WAIT)
    return sum(sizes), len(sizes)


def fill(ws: Path, mb: int) -> dict[str, object]:
    target = mb * 1000 * 1000
    written, keys = 0, 0
    start = time.perf_counter()
    for _ in range(5):
        more, n = asyncio.run(_put_values(ws, target - written if written == 0 else target // 10, keys))
        written, keys = written + more, keys + n
        sizes = db_sizes(ws)
        if min(sizes.values()) >= target:
            break
    else:
        raise RuntimeError(f"db_size stays below {target} bytes after writing {written}: {sizes}")
    took = time.perf_counter() - start
    print(f"filled {written / 1e6:.0f} MB in {keys} values in {took:.1f}s; db_size {sizes}", flush=True)
    return {"written_bytes": written, "keys": keys, "db_size": sizes, "fill_s": round(took, 1)}


# ---------------------------------------------------------------- the two ways


def forge_once(hosts: TestHosts, ws: Path, host4: TestHost) -> tuple[float, float | None, int]:
    argv = [sys.executable, "-u", "-m", "etcdforge", "member", "add", "etcd4", "--address", host4.address,
            "--dir", str(ws)]  # fmt: skip
    lines: list[str] = []
    start = time.perf_counter()
    # the step lines as they come, each with the time since the start (where the time goes)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(f"{time.perf_counter() - start:6.2f}s  {line.rstrip()}")
            if time.perf_counter() - start > WAIT:
                proc.kill()
        rc = proc.wait(timeout=60)
    took = time.perf_counter() - start
    out = "\n".join(lines)
    print(out, flush=True)
    if rc != 0:
        raise RuntimeError(f"etcdforge member add failed ({rc}):\n{out}")
    match = re.search(r"promoted after ([0-9.]+)s", out)
    joined_db = member_db_size(ws, host4)
    etcdforge("member", "remove", "etcd4", "--dir", str(ws), "--yes")
    return took, float(match.group(1)) if match else None, joined_db


def etcdctl_env(ws: Path) -> dict[str, str]:
    """What `eval "$(etcdforge env)"` would export: the admin client cert and the three endpoints."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for line in etcdforge("env", "--dir", str(ws)).stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    if "ETCDCTL_CERT" not in env or "ETCDCTL_ENDPOINTS" not in env:
        raise RuntimeError("etcdforge env printed no ETCDCTL_CERT/ETCDCTL_ENDPOINTS")
    return env


def hand_once(hosts: TestHosts, ws: Path, host4: TestHost, work: Path) -> tuple[float, float, int]:
    env = etcdctl_env(ws)
    token = re.search(r'^token:\s*"?([^"\s]+)', (ws / "cluster.yaml").read_text(), re.M)
    if token is None:
        raise RuntimeError("no token in cluster.yaml")
    pki = ws / "pki"
    certs = [str(pki / f) for f in (
        "ca.pem", "etcd4-server.pem", "etcd4-server-key.pem", "etcd4-peer.pem", "etcd4-peer-key.pem",
    )]  # fmt: skip
    missing = [c for c in certs if not Path(c).is_file()]
    if missing:
        raise RuntimeError(f"etcdforge's certificates for etcd4 are not in pki/: {missing}")
    ssh = hosts.ssh_argv(host4)
    scp_opts = [o if o != "-p" else "-P" for o in ssh[1:-1]]
    target = f"root@{host4.address}"
    hosts.assert_routed_to_test_bridge(host4.address)
    all_endpoints = f"{env['ETCDCTL_ENDPOINTS']},https://{host4.address}:2379"
    ctl = [ETCDCTL]

    start = time.perf_counter()
    out = run([*ctl, "member", "add", "etcd4", "--learner", f"--peer-urls=https://{host4.address}:2380"],
              env=env).stdout  # fmt: skip
    member_id = re.search(r"Member\s+([0-9a-f]+) added", out)
    cluster = re.search(r'ETCD_INITIAL_CLUSTER="([^"]+)"', out)
    if member_id is None or cluster is None:
        raise RuntimeError(f"unexpected `etcdctl member add` output:\n{out}")
    unit = work / "etcd.service"
    unit.write_text(
        HAND_UNIT.format(
            name="etcd4", ip=host4.address, token=token.group(1), cluster=cluster.group(1), quota=QUOTA
        )
    )
    run([*ssh, "mkdir -p /etc/etcd/pki && rm -rf /var/lib/etcd && mkdir -p /var/lib/etcd"])
    run(["scp", "-q", *scp_opts, *certs, f"{target}:/etc/etcd/pki/"])
    run(["scp", "-q", *scp_opts, str(unit), f"{target}:/etc/systemd/system/etcd.service"])
    run([*ssh, "systemctl daemon-reload && systemctl start --no-block etcd"])
    deadline = time.perf_counter() + WAIT
    started = time.perf_counter()
    promote = [*ctl, "member", "promote", member_id.group(1)]
    while not promoted_now(subprocess.run(promote, capture_output=True, text=True, env=env, timeout=60)):
        if time.perf_counter() > deadline:
            raise RuntimeError("the hand-added learner was never promoted")
        time.sleep(PROMOTE_POLL)
    promoted = time.perf_counter() - started
    # all four endpoints (etcdctl refuses a flag that an ETCDCTL_* variable also sets)
    health = [*ctl, "endpoint", "health"]
    all_env = {**env, "ETCDCTL_ENDPOINTS": all_endpoints}
    while subprocess.run(health, capture_output=True, env=all_env, timeout=60).returncode != 0:
        if time.perf_counter() > deadline:
            raise RuntimeError("the 4-member cluster never became healthy")
        time.sleep(0.1)
    took = time.perf_counter() - start

    # untimed: take it out again, and wait for the three to be healthy
    joined_db = member_db_size(ws, host4)
    run([*ctl, "member", "remove", member_id.group(1)], env=env)
    wait_healthy(env)
    return took, promoted, joined_db


def member_db_size(ws: Path, host: TestHost) -> int:
    """The new member's own db size once it is healthy: it really received the whole DB."""
    env = {**etcdctl_env(ws), "ETCDCTL_ENDPOINTS": f"https://{host.address}:2379"}
    out = run([ETCDCTL, "endpoint", "status", "-w", "json"], env=env).stdout
    return int(json.loads(out)[0]["Status"]["dbSize"])


def promoted_now(proc: subprocess.CompletedProcess[str]) -> bool:
    """`etcdctl member promote` succeeded — or an earlier attempt did (etcd: "can only promote a learner
    member"; not yet in sync reads "... which is in sync with leader")."""
    if proc.returncode == 0:
        return True
    return "can only promote a learner member" in proc.stderr and "in sync" not in proc.stderr


def wait_healthy(env: dict[str, str]) -> None:
    health = [ETCDCTL, "endpoint", "health"]
    deadline = time.perf_counter() + WAIT
    while subprocess.run(health, capture_output=True, env=env, timeout=60).returncode != 0:
        if time.perf_counter() > deadline:
            raise RuntimeError("the 3-member cluster is not healthy again")
        time.sleep(0.2)


def assert_three(ws: Path) -> None:
    """Between runs: the cluster is back to etcd1–3 (no learner, no leftover etcd4)."""
    out = run([ETCDCTL, "member", "list", "-w", "json"], env=etcdctl_env(ws)).stdout
    names = sorted(m.get("name", "") for m in json.loads(out)["members"])
    if names != ["etcd1", "etcd2", "etcd3"]:
        raise RuntimeError(f"expected etcd1-3 only, the cluster lists {names}")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--mb", type=int, default=300, help="MB to fill the database with first")
    args = parser.parse_args()
    cleanup_stale("efm")
    med = statistics.median
    forge: list[float] = []
    forge_promote: list[float | None] = []
    hand: list[float] = []
    hand_promote: list[float] = []
    joined_db: dict[str, list[int]] = {"etcdforge": [], "by_hand": []}
    with tempfile.TemporaryDirectory(prefix="etcdforge-bench-member-add-") as tmp:
        root = Path(tmp)
        hosts = TestHosts.start(4, root / "hosts", subnet="10.213.49.0/24", prefix="efm")
        try:
            ws = root / "cluster"
            host4 = hosts.hosts[3]
            setup_cluster(hosts, ws)
            filled = fill(ws, args.mb)
            # untimed warm-up: the first add after the fill was much the slowest in trial runs (and it issues
            # the etcd4 certificates that the by-hand runs reuse); then the two alternate which goes first
            hosts.reset([host4])
            warm, _, _ = forge_once(hosts, ws, host4)
            print(f"warm-up (untimed): etcdforge member add {warm:.2f}s", flush=True)
            for i in range(args.runs):
                for way in ("etcdforge", "by_hand") if i % 2 == 0 else ("by_hand", "etcdforge"):
                    hosts.reset([host4])
                    assert_three(ws)
                    if way == "etcdforge":
                        took, promoted, db = forge_once(hosts, ws, host4)
                        forge.append(took)
                        forge_promote.append(promoted)
                    else:
                        work = root / f"hand-{i}"
                        work.mkdir()
                        took, promoted, db = hand_once(hosts, ws, host4, work)
                        hand.append(took)
                        hand_promote.append(promoted)
                    joined_db[way].append(db)
                    print(
                        f"run {i + 1}: {way} {took:.2f}s (promoted after {promoted and round(promoted, 2)}s)",
                        flush=True,
                    )
            hosts.reset([host4])
            final_sizes = db_sizes(ws)
        finally:
            print("teardown:", hosts.close())
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "warm_up_etcdforge_s": round(warm, 2),
        "mb": args.mb,
        "etcd": "3.4.23 (Debian, system)",
        "fill": filled,
        "db_size_after": final_sizes,
        "etcdforge_member_add_s": [round(x, 2) for x in forge],
        "etcdforge_promoted_after_s": forge_promote,
        "by_hand_s": [round(x, 2) for x in hand],
        "by_hand_promoted_after_start_s": [round(x, 2) for x in hand_promote],
        "etcd4_db_size_once_healthy": joined_db,
        "median_etcdforge_s": round(med(forge), 2),
        "median_by_hand_s": round(med(hand), 2),
        "ratio_etcdforge_vs_by_hand": round(med(forge) / med(hand), 2),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "member_add.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"member add with {args.mb} MB: etcdforge {med(forge):.2f}s, by hand {med(hand):.2f}s "
        f"-> etcdforge/by-hand {result['ratio_etcdforge_vs_by_hand']} (goal <= 1.2)"
    )


if __name__ == "__main__":
    main()
