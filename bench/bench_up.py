"""Benchmark: `etcdforge up` vs raw etcd, and `etcdforge status` vs `etcdctl endpoint status`.

In one run, with the same etcd binary:

* raw baseline — three etcd processes started directly with command-line flags and certificates made
  beforehand (not timed), polled until every member answers ``/health`` over mutual TLS;
* etcdforge — ``etcdforge up`` on a fresh workspace (spec, CA and certificates, config files, start,
  wait until healthy), as a user runs it, so Python start-up and imports are included;
* ``etcdforge status -o json`` against ``etcdctl endpoint status`` on the same running cluster.

Each is repeated ``--runs`` times (alternating), medians and the ratios are printed and written as JSON
to ``bench/results/``. Only loopback addresses are used.

    python bench/bench_up.py [--etcd-bin PATH] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def etcdforge(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args], capture_output=True, text=True, check=False, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"etcdforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def healthy(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", context=ctx, timeout=1) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def raw_once(etcd: Path, certs: Path, work: Path, ips: list[str]) -> float:
    """Start 3 members from flags with pre-made certs; seconds until all report healthy."""
    names = ["etcd1", "etcd2", "etcd3"]
    cluster = ",".join(f"{n}=https://{ip}:2380" for n, ip in zip(names, ips, strict=True))
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(certs / "admin-client.pem", certs / "admin-client-key.pem")
    procs = []
    start = time.perf_counter()
    try:
        for name, ip in zip(names, ips, strict=True):
            argv = [
                str(etcd),
                f"--name={name}",
                f"--data-dir={work / name}",
                f"--listen-client-urls=https://{ip}:2379",
                f"--advertise-client-urls=https://{ip}:2379",
                f"--listen-peer-urls=https://{ip}:2380",
                f"--initial-advertise-peer-urls=https://{ip}:2380",
                f"--initial-cluster={cluster}",
                "--initial-cluster-token=bench-raw",
                "--initial-cluster-state=new",
                "--client-cert-auth",
                f"--cert-file={certs / (name + '-server.pem')}",
                f"--key-file={certs / (name + '-server-key.pem')}",
                f"--trusted-ca-file={certs / 'ca.pem'}",
                "--peer-client-cert-auth",
                f"--peer-cert-file={certs / (name + '-peer.pem')}",
                f"--peer-key-file={certs / (name + '-peer-key.pem')}",
                f"--peer-trusted-ca-file={certs / 'peer-ca.pem'}",
                "--logger=zap",
                "--log-outputs=stderr",
            ]
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen(argv, stdout=log, stderr=log), log))
        pending = set(ips)
        while pending:
            for ip in sorted(pending):
                if healthy(f"https://{ip}:2379", ctx):
                    pending.discard(ip)
            if time.perf_counter() - start > 60:
                logs = "\n".join((work / f"{n}.log").read_text()[-2000:] for n in names)
                raise RuntimeError(f"raw cluster not healthy after 60 s\n{logs}")
            if pending:
                time.sleep(0.05)
        return time.perf_counter() - start
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def forge_once(etcd: Path, work: Path) -> float:
    ws = work / "ws"
    start = time.perf_counter()
    try:
        etcdforge("up", "--dir", str(ws), "--etcd-bin", str(etcd))
        return time.perf_counter() - start
    finally:
        subprocess.run(
            [sys.executable, "-m", "etcdforge", "destroy", "--yes", "--dir", str(ws)],
            capture_output=True,
            check=False,
            timeout=120,
        )


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=60, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--etcd-bin", default=None)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    from etcdforge import binaries

    etcd = binaries.find_tool("etcd", args.etcd_bin)
    version = binaries.probe(etcd).version_str
    etcdctl = binaries.sibling_tool(etcd, "etcdctl")

    with tempfile.TemporaryDirectory(prefix="etcdforge-bench-") as tmp:
        root = Path(tmp)
        # Pre-made certificates for the raw baseline (untimed): a throwaway workspace's PKI.
        seed = root / "seed"
        etcdforge("up", "--dir", str(seed), "--etcd-bin", str(etcd))
        etcdforge("down", "--dir", str(seed))
        certs = seed / "pki"
        from etcdforge.spec import load_spec

        ips = [m.address for m in load_spec(seed / "cluster.yaml").members]

        raw, forge = [], []
        for i in range(args.runs):
            work = root / f"raw{i}"
            work.mkdir()
            raw.append(raw_once(etcd, certs, work, ips))
            shutil.rmtree(work)
            work = root / f"forge{i}"
            work.mkdir()
            forge.append(forge_once(etcd, work))

        # status on a running cluster
        etcdforge("up", "--dir", str(seed), "--etcd-bin", str(etcd))
        try:
            env_text = etcdforge("env", "--dir", str(seed)).stdout
            env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
            for line in env_text.splitlines():
                key, _, value = line.removeprefix("export ").partition("=")
                env[key] = value.strip("'")
            # the console script, as a user types it (python -m when it is not installed next to python)
            script = Path(sys.executable).parent / "etcdforge"
            entry = [str(script)] if script.is_file() else [sys.executable, "-m", "etcdforge"]
            status_argv = [*entry, "status", "--dir", str(seed), "-o", "json"]
            # the first call after a spec change runs the full path (and caches the spec's status
            # inputs); every later one takes the quick path: timed apart
            first_status = timed(status_argv)
            forge_status, ctl_status = [], []
            for _ in range(args.runs):  # paired, alternating
                forge_status.append(timed(status_argv))
                ctl_status.append(timed([str(etcdctl), "endpoint", "status", "-w", "json"], env))
        finally:
            etcdforge("destroy", "--yes", "--dir", str(seed))

    med = statistics.median
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "etcd": f"{etcd} ({version})",
        "runs": args.runs,
        "up_raw_s": [round(x, 3) for x in raw],
        "up_etcdforge_s": [round(x, 3) for x in forge],
        "up_ratio_median": round(med(forge) / med(raw), 2),
        # etcd's own bootstrap time is bimodal (a split first election costs another election
        # timeout), so the mean and the best case are reported too; min(forge) - min(raw) is roughly
        # etcdforge's fixed cost (Python start-up, imports, PKI, files).
        "up_ratio_mean": round(statistics.fmean(forge) / statistics.fmean(raw), 2),
        "up_min_raw_s": round(min(raw), 3),
        "up_min_etcdforge_s": round(min(forge), 3),
        "status_etcdforge_s": [round(x, 3) for x in forge_status],
        "status_etcdctl_s": [round(x, 3) for x in ctl_status],
        "status_etcdforge_median_s": round(med(forge_status), 3),
        "status_etcdctl_median_s": round(med(ctl_status), 3),
        "status_first_call_s": round(first_status, 3),
        "status_ratio_median": round(med(forge_status) / med(ctl_status), 2),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"up-{version}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"etcd {version}: up raw {med(raw):.3f}s, etcdforge up {med(forge):.3f}s"
        f" -> ratio {result['up_ratio_median']} (mean ratio {result['up_ratio_mean']},"
        f" best case {min(raw):.3f}s vs {min(forge):.3f}s)"
    )
    print(
        f"status: etcdforge {med(forge_status):.3f}s, etcdctl {med(ctl_status):.3f}s"
        f" -> ratio {result['status_ratio_median']} (first call after a spec change {first_status:.3f}s)"
    )


if __name__ == "__main__":
    main()
