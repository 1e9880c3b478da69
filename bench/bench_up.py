"""Benchmark: `etcdforge up` vs raw etcd, and `etcdforge status` vs `etcdctl endpoint status`.

In one run, with the same etcd binary:

* raw baseline — three etcd processes started directly with command-line flags and certificates made
  beforehand (not timed), polled until every member answers ``/health`` over mutual TLS; once started
  all at once (as by hand or by systemd), once one by one as etcdforge starts a new cluster (each when
  the one before serves its peer port), which separates etcdforge's fixed cost from the start order;
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
import socket
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


def peer_serving(ip: str, certs: Path, name: str, deadline: float) -> None:
    """Wait until the member's peer port completes a handshake (it is bound before it serves)."""
    ctx = ssl.create_default_context(cafile=str(certs / "peer-ca.pem"))
    ctx.load_cert_chain(certs / f"{name}-peer.pem", certs / f"{name}-peer-key.pem")
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection((ip, 2380), timeout=2) as sock:
                ctx.wrap_socket(sock, server_hostname=ip).close()
                return
        except ssl.SSLError:
            raise  # it serves, but not as this baseline expects: say so instead of timing a wait
        except OSError:  # not bound yet, or bound and not serving within the timeout
            time.sleep(0.01)


def raw_once(etcd: Path, certs: Path, work: Path, ips: list[str], *, staggered: bool = False) -> float:
    """Start 3 members from flags with pre-made certs; seconds until all report healthy. ``staggered``:
    each starts once the one before serves its peer port, as etcdforge starts a new cluster."""
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
            if staggered and name != names[-1]:
                peer_serving(ip, certs, name, start + 10)
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

    import compileall

    from etcdforge import binaries

    # as a regular install has it: etcdforge's bytecode compiled (an editable checkout where
    # PYTHONDONTWRITEBYTECODE is set would compile every module in every run and time that instead)
    compileall.compile_dir(Path(binaries.__file__).parent, quiet=1)
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

        raw, staggered, forge = [], [], []
        for i in range(args.runs):
            work = root / f"raw{i}"
            work.mkdir()
            raw.append(raw_once(etcd, certs, work, ips))
            shutil.rmtree(work)
            work = root / f"staggered{i}"
            work.mkdir()
            staggered.append(raw_once(etcd, certs, work, ips, staggered=True))
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
            forge_status, ctl_status, bare = [], [], []
            for _ in range(args.runs):  # paired, alternating
                forge_status.append(timed(status_argv))
                ctl_status.append(timed([str(etcdctl), "endpoint", "status", "-w", "json"], env))
                # the floor of any Python command here: the interpreter starting (with this machine's
                # site-packages .pth files) and exiting
                bare.append(timed([sys.executable, "-c", "pass"]))
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
        # etcd's own bootstrap time is bimodal: members started at once often stall 1 s per other
        # member in etcd's bootstrap check (a peer port bound but not served yet), then the first
        # election is random; so the mean and the best case are reported too
        "up_ratio_mean": round(statistics.fmean(forge) / statistics.fmean(raw), 2),
        "up_min_raw_s": round(min(raw), 3),
        "up_min_etcdforge_s": round(min(forge), 3),
        # raw etcd started the way etcdforge starts a new cluster (each member once the one before
        # serves its peer port): etcdforge minus this is its fixed cost (Python, imports, PKI, files)
        "up_raw_staggered_s": [round(x, 3) for x in staggered],
        "up_min_raw_staggered_s": round(min(staggered), 3),
        "up_ratio_mean_vs_staggered": round(statistics.fmean(forge) / statistics.fmean(staggered), 2),
        "status_etcdforge_s": [round(x, 3) for x in forge_status],
        "status_etcdctl_s": [round(x, 3) for x in ctl_status],
        "status_etcdforge_median_s": round(med(forge_status), 3),
        "status_etcdctl_median_s": round(med(ctl_status), 3),
        "status_first_call_s": round(first_status, 3),
        "status_ratio_median": round(med(forge_status) / med(ctl_status), 2),
        "python_pass_median_s": round(med(bare), 3),
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
        f"raw started one by one: median {med(staggered):.3f}s, best {min(staggered):.3f}s"
        f" (etcdforge mean ratio against it {result['up_ratio_mean_vs_staggered']})"
    )
    print(
        f"status: etcdforge {med(forge_status):.3f}s, etcdctl {med(ctl_status):.3f}s"
        f" -> ratio {result['status_ratio_median']} (first call after a spec change {first_status:.3f}s;"
        f" `python -c pass` alone {med(bare):.3f}s)"
    )


if __name__ == "__main__":
    main()
