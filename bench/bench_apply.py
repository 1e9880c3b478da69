"""Benchmark: `etcdforge apply` from nothing on 3 and 5 test hosts, and the guide's procedure scripted.

In one run (root; systemd-nspawn test hosts in their own network namespaces, see shared/docs/test-hosts.md):

* etcdforge — ``init`` + ``apply --yes`` from nothing (CA and certificates, files, units, start, health),
  on 3 hosts and on 5 hosts; ratio 5/3 (goal ≤ 1.2: hosts are worked in parallel);
* the guide, scripted — the seed guide's steps as a shell user would script them on the same 3 hosts:
  ``cfssl gencert`` (CA, one server and one peer cert with every IP, a client cert), ``ssh mkdir`` and
  ``scp`` of the certificates and the guide's unit to each host in turn, ``systemctl daemon-reload/enable``,
  ``systemctl start --no-block`` (the blocking start of the guide would hang on the first member), then
  ``etcdctl endpoint health`` until healthy; ratio etcdforge/guide (goal ≤ 1.0).

Hosts are reset between runs. Results go to ``bench/results/apply.json``.

    python bench/bench_apply.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from etcdforge.testing.hosts import TestHosts, cleanup_stale

HERE = Path(__file__).resolve().parent

GUIDE_UNIT = """\
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
  --cert-file=/etc/etcd/pki/etcd-server.pem \\
  --key-file=/etc/etcd/pki/etcd-server-key.pem \\
  --trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --peer-cert-file=/etc/etcd/pki/etcd-member.pem \\
  --peer-key-file=/etc/etcd/pki/etcd-member-key.pem \\
  --peer-trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --peer-client-cert-auth \\
  --client-cert-auth \\
  --listen-peer-urls=https://{ip}:2380 \\
  --initial-advertise-peer-urls=https://{ip}:2380 \\
  --listen-client-urls=https://{ip}:2379,https://127.0.0.1:2379 \\
  --advertise-client-urls=https://{ip}:2379 \\
  --initial-cluster-token=k8s-etcd-cluster \\
  --initial-cluster={cluster} \\
  --initial-cluster-state=new \\
  --data-dir=/var/lib/etcd
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""

CA_CONFIG = {
    "signing": {
        "default": {"expiry": "87600h"},
        "profiles": {
            "client": {"expiry": "87600h", "usages": ["signing", "key encipherment", "client auth"]},
            "etcd": {
                "expiry": "87600h",
                "usages": ["signing", "key encipherment", "server auth", "client auth"],
            },
        },
    }
}


def etcdforge(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "etcdforge", *args], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"etcdforge {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


#: seconds etcd itself took to form the cluster, from apply's "cluster/wait-healthy … in X.Xs" line
BOOTSTRAP: list[float] = []


def forge_once(hosts: TestHosts, work: Path) -> float:
    ws = work / "cluster"
    members = [f"--member=etcd{i + 1}={h.address}" for i, h in enumerate(hosts.hosts)]
    start = time.perf_counter()
    etcdforge(
        "init",
        "--dir",
        str(ws),
        *members,
        "--ssh-key",
        str(hosts.client_key),
        "--known-hosts",
        str(hosts.known_hosts),
    )
    out = etcdforge("apply", "--dir", str(ws), "--yes").stdout
    took = time.perf_counter() - start
    match = re.search(r"cluster/wait-healthy\s+\d+ healthy in ([0-9.]+)s", out)
    BOOTSTRAP.append(float(match.group(1)) if match else 0.0)
    return took


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, timeout=300, **kw)  # type: ignore[call-overload,no-any-return]


def guide_once(hosts: TestHosts, work: Path) -> float:
    """The guide's procedure, as a shell user would script it (commands are run one after another)."""
    ips = [h.address for h in hosts.hosts]
    names = [f"etcd{i + 1}" for i in range(len(ips))]
    cluster = ",".join(f"{n}=https://{ip}:2380" for n, ip in zip(names, ips, strict=True))
    pki = work / "pki"
    pki.mkdir()
    (pki / "etcd-ca-config.json").write_text(json.dumps(CA_CONFIG))
    names_json = [{"C": "CN", "ST": "ShangHai", "L": "ShangHai", "O": "etcd", "OU": "Etcd Security"}]
    rsa = {"algo": "rsa", "size": 2048}
    csrs = {
        "etcd-ca-csr.json": {"CN": "ETCD CA", "key": rsa, "names": names_json},
        "etcd-server-csr.json": {
            "CN": "etcd-server",
            "hosts": ["127.0.0.1", *ips],
            "key": rsa,
            "names": names_json,
        },
        "etcd-member-csr.json": {"CN": "etcd", "hosts": ["127.0.0.1", *ips], "key": rsa, "names": names_json},
        "etcd-client-csr.json": {"CN": "etcd-client", "hosts": [""], "key": rsa, "names": names_json},
    }
    for name, body in csrs.items():
        (pki / name).write_text(json.dumps(body))
    ssh = hosts.ssh_argv
    scp_opts = ssh(hosts.hosts[0])[1:-1]  # the same options (key, known_hosts, strict checking), no target
    scp_opts = [o if o != "-p" else "-P" for o in scp_opts]
    start = time.perf_counter()
    out = run(["cfssl", "gencert", "-initca", "etcd-ca-csr.json"], cwd=pki).stdout
    run(["cfssljson", "-bare", "etcd-ca"], cwd=pki, input=out)
    for csr, bare, profile in (
        ("etcd-server-csr.json", "etcd-server", "etcd"),
        ("etcd-member-csr.json", "etcd-member", "etcd"),
        ("etcd-client-csr.json", "etcd-client", "client"),
    ):
        out = run(
            ["cfssl", "gencert", "-ca=etcd-ca.pem", "-ca-key=etcd-ca-key.pem", "-config=etcd-ca-config.json",
             f"-profile={profile}", csr],
            cwd=pki,
        ).stdout  # fmt: skip
        run(["cfssljson", "-bare", bare], cwd=pki, input=out)
    certs = [str(pki / f) for f in (
        "etcd-ca.pem", "etcd-server.pem", "etcd-server-key.pem", "etcd-member.pem", "etcd-member-key.pem",
    )]  # fmt: skip
    for h, name in zip(hosts.hosts, names, strict=True):
        unit = work / f"{name}.service"
        unit.write_text(GUIDE_UNIT.format(name=name, ip=h.address, cluster=cluster))
        run([*ssh(h), "mkdir -p /etc/etcd/pki && rm -rf /var/lib/etcd && mkdir -p /var/lib/etcd"])
        run(["scp", "-q", *scp_opts, *certs, f"root@{h.address}:/etc/etcd/pki/"])
        run(["scp", "-q", *scp_opts, str(unit), f"root@{h.address}:/etc/systemd/system/etcd.service"])
        run([*ssh(h), "systemctl daemon-reload && systemctl enable etcd && systemctl start --no-block etcd"])
    endpoints = ",".join(f"https://{ip}:2379" for ip in ips)
    health = [
        "/usr/bin/etcdctl", f"--endpoints={endpoints}", f"--cacert={pki / 'etcd-ca.pem'}",
        f"--cert={pki / 'etcd-client.pem'}", f"--key={pki / 'etcd-client-key.pem'}", "endpoint", "health",
    ]  # fmt: skip
    deadline = time.perf_counter() + 120
    while subprocess.run(health, capture_output=True, env={"ETCDCTL_API": "3"}, timeout=60).returncode != 0:
        if time.perf_counter() > deadline:
            raise RuntimeError("the scripted guide's cluster never became healthy")
        time.sleep(0.1)
    return time.perf_counter() - start


def reset(hosts: TestHosts) -> None:
    hosts.reset()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cleanup_stale("efb")
    cleanup_stale("efc")
    med = statistics.median
    with tempfile.TemporaryDirectory(prefix="etcdforge-bench-apply-") as tmp:
        root = Path(tmp)
        three = TestHosts.start(3, root / "h3", subnet="10.213.47.0/24", prefix="efb")
        five = TestHosts.start(5, root / "h5", subnet="10.213.48.0/24", prefix="efc")
        try:
            f3: list[float] = []
            f5: list[float] = []
            guide: list[float] = []
            boot3: list[float] = []
            boot5: list[float] = []
            for i in range(args.runs):
                for label, hosts, sink, fn in (
                    ("forge3", three, f3, forge_once),
                    ("guide3", three, guide, guide_once),
                    ("forge5", five, f5, forge_once),
                ):
                    work = root / f"{label}-{i}"
                    work.mkdir()
                    reset(hosts)
                    sink.append(fn(hosts, work))
                    if fn is forge_once:
                        (boot3 if hosts is three else boot5).append(BOOTSTRAP[-1])
                    shutil.rmtree(work)
        finally:
            print("teardown:", three.close() + five.close())
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "apply_3_hosts_s": [round(x, 2) for x in f3],
        "apply_5_hosts_s": [round(x, 2) for x in f5],
        "guide_scripted_3_hosts_s": [round(x, 2) for x in guide],
        "ratio_5_vs_3": round(med(f5) / med(f3), 2),
        # etcd's own bootstrap (first election) is random and often dominates; without it, the ratio
        # shows how well the tool's own work (connect, observe, prepare, start) scales with hosts
        "etcd_bootstrap_3_hosts_s": boot3,
        "etcd_bootstrap_5_hosts_s": boot5,
        "ratio_5_vs_3_tool_only": round(
            med([a - b for a, b in zip(f5, boot5, strict=True)])
            / med([a - b for a, b in zip(f3, boot3, strict=True)]),
            2,
        ),
        "ratio_etcdforge_vs_guide": round(med(f3) / med(guide), 2),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "apply.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"apply 3 hosts {med(f3):.2f}s, 5 hosts {med(f5):.2f}s -> ratio {result['ratio_5_vs_3']} "
        f"(without etcd's own bootstrap: {result['ratio_5_vs_3_tool_only']}); "
        f"guide scripted {med(guide):.2f}s -> etcdforge/guide {result['ratio_etcdforge_vs_guide']}"
    )


if __name__ == "__main__":
    main()
