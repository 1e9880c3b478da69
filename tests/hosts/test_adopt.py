"""Adoption: a 3-member cluster built on test hosts by the guide's own commands (shared/seed: cfssl on the
first node, scp to the others, its systemd unit with flags, etcd as root, the CA key on every node), then
`etcdforge adopt`, `plan`, `apply` under a writer, `member add` and `member remove` — and every key
written before adoption is still there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from support import GUIDE_CA_CONFIG, GUIDE_CA_CSR, run_cli

from etcdforge.etcd import EtcdClient, TlsFiles
from etcdforge.testing.hosts import TestHosts
from etcdforge.testing.workload import Writer, check_history
from etcdforge.workspace import Workspace, admin_client, load_workspace

SUBNETS = ("10.213.76.0/24", "10.213.86.0/24", "10.213.96.0/24")
KEYS = 100
PKI = "/etc/etcd/pki"
GUIDE_UNIT_PATH = "/usr/lib/systemd/system/etcd.service"
NAMES = {"C": "CN", "ST": "ShangHai", "L": "ShangHai", "O": "ETCD"}


def guide_csr(cn: str, hosts: Sequence[str]) -> str:
    return json.dumps(
        {"CN": cn, "hosts": list(hosts), "key": {"algo": "rsa", "size": 2048}, "names": [NAMES]}
    )


def guide_cfssl_script(ips: Sequence[str]) -> str:
    """The guide's steps 1-5 on kube-master-1, as typed (heredocs, cfssl | cfssljson -bare, mv *.csr)."""
    hosts = ["127.0.0.1", *ips]
    return f"""set -e
mkdir -p /etc/etcd/pki /etc/etcd/csr
cat <<'EOF' > /etc/etcd/pki/etcd-ca-config.json
{json.dumps(GUIDE_CA_CONFIG, indent=2)}
EOF
cat <<'EOF' > /etc/etcd/csr/etcd-ca-csr.json
{json.dumps(GUIDE_CA_CSR, indent=2)}
EOF
cd /etc/etcd/pki
cfssl gencert -initca /etc/etcd/csr/etcd-ca-csr.json | cfssljson -bare etcd-ca
mv -f etcd-ca.csr ../csr
cat <<'EOF' > /etc/etcd/csr/etcd-server-csr.json
{guide_csr("etcd-server", hosts)}
EOF
cat <<'EOF' > /etc/etcd/csr/etcd-member-csr.json
{guide_csr("etcd", hosts)}
EOF
cat <<'EOF' > /etc/etcd/csr/etcd-client-csr.json
{guide_csr("etcd-client", [])}
EOF
cfssl gencert -ca=etcd-ca.pem -ca-key=etcd-ca-key.pem \\
  -config=etcd-ca-config.json -profile=etcd ../csr/etcd-server-csr.json | cfssljson -bare etcd-server
cfssl gencert -ca=etcd-ca.pem -ca-key=etcd-ca-key.pem \\
  -config=etcd-ca-config.json -profile=etcd ../csr/etcd-member-csr.json | cfssljson -bare etcd-member
cfssl gencert -ca=etcd-ca.pem -ca-key=etcd-ca-key.pem \\
  -config=etcd-ca-config.json -profile=client ../csr/etcd-client-csr.json | cfssljson -bare etcd-client
mv -f *.csr ../csr
"""


def guide_unit(name: str, ip: str, ips: Sequence[str]) -> str:
    """Step 7: the guide's unit, with its `etcd1=${INITIAL_CLUSTER}` quirk reproduced."""
    initial = f"https://{ips[0]}:2380,etcd2=https://{ips[1]}:2380,etcd3=https://{ips[2]}:2380"
    return f"""[Unit]
Description=Etcd Server
After=network.target
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
ExecStart=/usr/bin/etcd \\
  --name={name} \\
  --client-cert-auth=true \\
  --cert-file=/etc/etcd/pki/etcd-server.pem \\
  --key-file=/etc/etcd/pki/etcd-server-key.pem \\
  --trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --peer-client-cert-auth=true \\
  --peer-cert-file=/etc/etcd/pki/etcd-member.pem \\
  --peer-key-file=/etc/etcd/pki/etcd-member-key.pem \\
  --peer-trusted-ca-file=/etc/etcd/pki/etcd-ca.pem \\
  --advertise-client-urls=https://{ip}:2379 \\
  --listen-client-urls=https://{ip}:2379 \\
  --listen-peer-urls=https://{ip}:2380 \\
  --initial-advertise-peer-urls=https://{ip}:2380 \\
  --initial-cluster=etcd1={initial} \\
  --initial-cluster-token=k8s-etcd-cluster \\
  --initial-cluster-state=new \\
  --data-dir=/var/lib/etcd
Restart=on-failure
RestartSec=5
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def scp(harness: TestHosts, sources: Sequence[str], target: str) -> None:
    """The real scp client with the harness's key and known_hosts (host keys verified)."""
    for spec in (*sources, target):
        if "@" in spec:
            harness.assert_routed_to_test_bridge(spec.split("@", 1)[1].split(":", 1)[0])
    argv = [
        "scp", "-q", "-F", "/dev/null", "-i", str(harness.client_key), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={harness.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        *sources, target,
    ]  # fmt: skip
    subprocess.run(argv, check=True, timeout=60, capture_output=True)


def build_guide_cluster(harness: TestHosts, local: Path) -> None:
    first, *others = harness.hosts[:3]
    ips = [h.address for h in harness.hosts[:3]]
    harness.run(first, ["sh", "-c", guide_cfssl_script(ips)], timeout=120)
    # steps 4 and 6: the CA (with its key!) and the leaf certificates to the other nodes, via this machine
    local.mkdir()
    scp(harness, [f"root@{first.address}:{PKI}/etcd-*"], str(local))
    for h in others:
        harness.run(h, ["mkdir", "-p", PKI])
        files = [str(p) for p in sorted(local.iterdir())]
        scp(harness, files, f"root@{h.address}:{PKI}/")
    # steps 7 and 8: the unit, wipe the data dir, start all together (a blocking start would hang)
    for i, h in enumerate(harness.hosts[:3]):
        harness.run(
            h, ["sh", "-c", f"cat > {GUIDE_UNIT_PATH}"], input=guide_unit(f"etcd{i + 1}", h.address, ips)
        )
        script = "rm -rf /var/lib/etcd && mkdir -p /var/lib/etcd && systemctl daemon-reload"
        harness.run(h, ["sh", "-c", script + " && systemctl enable etcd 2>/dev/null"])
    for h in harness.hosts[:3]:
        harness.run(h, ["systemctl", "start", "--no-block", "etcd"])


def guide_client(harness: TestHosts, local: Path) -> EtcdClient:
    """etcdctl's view in the guide's ~/.bashrc: the client certificate, every member's client URL."""
    tls = TlsFiles(
        ca=local / "etcd-ca.pem", cert=local / "etcd-client.pem", key=local / "etcd-client-key.pem"
    )
    return EtcdClient([f"https://{h.address}:2379" for h in harness.hosts[:3]], tls, timeout=3.0)


async def wait_healthy(client: EtcdClient, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        results = await asyncio.gather(
            *(client.status(ep) for ep in client.endpoints), return_exceptions=True
        )
        if not any(isinstance(r, BaseException) for r in results):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the guide's cluster did not become healthy: {results}")
        await asyncio.sleep(0.5)


async def all_keys(client: EtcdClient) -> dict[str, str]:
    result = await client.get("/guide/", prefix=True)
    return {kv.key.decode(): kv.value.decode() for kv in result.kvs}


def keys_in(ws: Path) -> dict[str, str]:
    async def read() -> dict[str, str]:
        w, spec = load_workspace(ws)
        async with admin_client(spec, w) as client:
            return await all_keys(client)

    return asyncio.run(read())


def cli_under_writer(harness: TestHosts, local: Path, prefix: str, *argv: str) -> str:
    """Run an etcdforge command while the guide's client writes under ``prefix``: no acknowledged write
    may be lost (history checker); returns what the command printed."""

    async def run() -> str:
        async with guide_client(harness, local) as client:
            writer = Writer(client, prefix=prefix)
            stop = asyncio.Event()
            task = asyncio.create_task(writer.run(stop))
            await asyncio.sleep(0.5)
            try:
                t0 = time.monotonic()
                out = (await asyncio.to_thread(run_cli, *argv)).stdout
                print(f"{' '.join(argv[:3])} took {time.monotonic() - t0:.1f}s")
            finally:
                await asyncio.sleep(0.5)
                stop.set()
                await task
            result = await check_history(client, writer.history)
            assert result.ok, result.problems
            assert result.acknowledged > 20, result
            return out

    return asyncio.run(run())


def step_ids(ws: Path) -> list[str]:
    plan = json.loads(run_cli("plan", "--dir", str(ws), "-o", "json").stdout)
    return [s["id"] for s in plan["steps"]]


def test_adopt_a_cluster_built_by_the_guide_then_apply_and_scale(
    boot_hosts: Callable[[int, Path, str, Sequence[str]], TestHosts], tmp_path: Path
) -> None:
    harness = boot_hosts(4, tmp_path / "hosts", "efa", SUBNETS)
    try:
        run_scenario(harness, tmp_path)
    finally:
        problems = harness.close()
        assert not problems, problems


def run_scenario(harness: TestHosts, tmp_path: Path) -> None:
    started = time.monotonic()
    local = tmp_path / "guide-pki"
    build_guide_cluster(harness, local)
    written = {f"/guide/k{i:03d}": f"v{i}" for i in range(KEYS)}

    async def seed() -> None:
        async with guide_client(harness, local) as client:
            await wait_healthy(client)
            for key, value in written.items():
                await client.put(key, value)

    asyncio.run(seed())
    print(f"guide cluster built and seeded in {time.monotonic() - started:.1f}s")
    h1, h2, h3, h4 = harness.hosts
    ws = tmp_path / "adopted"
    members = [f"--member=etcd{i + 1}={h.address}" for i, h in enumerate((h1, h2, h3))]
    ssh = ["--ssh-key", str(harness.client_key), "--known-hosts", str(harness.known_hosts)]

    # adopt: a name that does not match what runs is refused with one line, and nothing is written
    wrong = run_cli(
        "adopt", "--dir", str(ws), f"--member=etcdx={h1.address}", *members[1:], *ssh, check=False
    )
    assert (
        wrong.returncode != 0 and "runs as --name=etcd1" in wrong.stderr and "Traceback" not in wrong.stderr
    )
    assert not (ws / "cluster.yaml").exists()
    # a dry run reads everything and shows its plan (the CA key first, the spec last), writing nothing
    dry = run_cli("adopt", "--dir", str(ws), *members, *ssh, "--dry-run").stdout
    lines = [line.split()[0] for line in dry.splitlines() if line.startswith(("pki/", "workspace/"))]
    assert lines[0] == "pki/ca-key" and lines[-1] == "workspace/write-spec" and "pki/issue" in lines, dry
    assert not (ws / "cluster.yaml").exists() and not (ws / "pki" / "ca-key.pem").exists()
    out = run_cli("adopt", "--dir", str(ws), *members, *ssh).stdout
    print(out)
    assert "nothing was changed on the hosts" in out and "etcd-ca-key.pem" in out, out
    spec = load_workspace(ws)[1]
    assert spec.token == "k8s-etcd-cluster" and spec.etcd.binary == "/usr/bin/etcd"
    assert spec.pki.cfssl is not None and spec.pki.cfssl.server_profile == "etcd"
    ca_key_sha = hashlib.sha256((ws / "pki" / "ca-key.pem").read_bytes()).hexdigest()
    assert ca_key_sha == hashlib.sha256((local / "etcd-ca-key.pem").read_bytes()).hexdigest()
    unit = harness.run(h1, ["systemctl", "show", "-p", "FragmentPath", "--value", "etcd"]).stdout.strip()
    assert unit.endswith("/systemd/system/etcd.service") and not unit.startswith("/etc/"), unit

    # the admin certificate is there at once: day-1 commands work on the adopted cluster before apply
    run_cli("health", "--dir", str(ws))
    assert keys_in(ws) == written
    # but certificates and CAs are refused until apply: etcd there does not read etcdforge's files yet
    for argv in (("pki", "rotate-ca", "--yes"), ("pki", "renew", "--force", "--yes")):
        refused = run_cli(*argv, "--dir", str(ws), check=False)
        assert refused.returncode != 0 and "run `etcdforge plan` / `etcdforge apply` first" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (ws / "pki" / "rotation").exists()

    # plan: per-member certificates, the CA key off every member, our unit, rolling restarts, leader last
    text = run_cli("plan", "--dir", str(ws)).stdout
    print(text)
    assert "overrides" in text and "not etcdforge's unit" in text, text
    ids = step_ids(ws)
    assert ids[0] == "pki/issue"
    for i in (1, 2, 3):
        assert f"etcd{i}/remove:{PKI}/etcd-ca-key.pem" in ids
        assert f"etcd{i}/file:/etc/systemd/system/etcd.service" in ids
        assert f"etcd{i}/file:{PKI}/server.pem" in ids
        assert f"etcd{i}/restart" in ids
    assert "cluster/start" not in ids
    assert ids[-1].endswith("/restart") and ids[-2].endswith("/move-leader")

    # kill points (a sample on hosts): the adoption's apply SIGKILLed once its certificates are issued,
    # then in the middle of the first member's restart; other commands work (or refuse in one line)
    # meanwhile, and the re-run below — under a writer — converges
    from killpoints import cli, others_never_crash

    first_restart = next(i for i in ids if i.endswith("/restart"))
    for point in ("after:pki/issue", f"during:{first_restart}"):
        code, killed_out, err = asyncio.run(cli(ws, "apply", "--yes", failpoint=point))
        assert code == -9 and "Traceback" not in err, (point, code, killed_out, err)
        asyncio.run(others_never_crash(ws, (("status", "-o", "json"), ("plan",), ("health",))))
    assert keys_in(ws) == written

    # apply under a writer: rolling restarts keep quorum; no acknowledged write is lost
    applied = cli_under_writer(harness, local, "/adopt-load", "apply", "--dir", str(ws), "--yes")
    assert "cluster healthy" in applied
    run_cli("health", "--dir", str(ws))
    assert keys_in(ws) == written
    for h in (h1, h2, h3):
        sums = harness.run(
            h,
            [
                "find",
                "/etc",
                "/var/lib/etcd",
                "/root/.ssh",
                "/tmp",
                "-type",
                "f",
                "-exec",
                "sha256sum",
                "{}",
                "+",
            ],
        ).stdout
        assert ca_key_sha not in sums, f"CA key still on {h.name}"
        assert harness.run(h, ["find", "/var/lib/etcd", "!", "-user", "etcd"]).stdout == ""
        show = harness.run(h, ["systemctl", "show", "-p", "FragmentPath", "-p", "MainPID", "etcd"]).stdout
        assert "FragmentPath=/etc/systemd/system/etcd.service" in show
        pid = next(line.split("=")[1] for line in show.splitlines() if line.startswith("MainPID="))
        argv = harness.run(h, ["sh", "-c", f"tr '\\0' ' ' < /proc/{shlex.quote(pid)}/cmdline"]).stdout.strip()
        assert argv == "/usr/bin/etcd --config-file /etc/etcd/etcd.conf.yml"
        assert harness.run(h, ["ps", "-o", "user=", "-p", pid]).stdout.strip() == "etcd"
    assert step_ids(ws) == []  # converged

    # the guide's client certificate still works (same CA)
    async def guide_view() -> dict[str, str]:
        async with guide_client(harness, local) as client:
            return await all_keys(client)

    assert asyncio.run(guide_view()) == written

    # the guide's one CA signed everything, so its client certificate reads the peer API; `pki rotate-ca
    # --peer` gives peers a CA of their own — under a writer, no acknowledged write lost — and then only
    # peer certificates are peers (security item 4); the guide's client keeps working on the client port
    from support import peer_port_answers

    wsp = Workspace(ws)
    peer_url = f"https://{h1.address}:2380"
    guide_cert = (local / "etcd-client.pem", local / "etcd-client-key.pem")
    assert peer_port_answers(peer_url, local / "etcd-ca.pem", *guide_cert)

    migrated = cli_under_writer(
        harness, local, "/peer-ca-load", "pki", "rotate-ca", "--peer", "--dir", str(ws), "--yes"
    )
    assert "peers' CA rotated" in migrated, migrated
    assert not peer_port_answers(peer_url, wsp.peer_ca_cert, *guide_cert)
    assert not peer_port_answers(peer_url, wsp.peer_ca_cert, wsp.cert_path("admin-client"),
                                 wsp.key_path("admin-client"))  # fmt: skip
    # a real peer still is one: etcd2's peer certificate, from etcd2's host (etcd checks a peer
    # certificate's IP SANs against the address it comes from, so not from this machine)
    pki = "/etc/etcd/pki"
    code = harness.run(
        h2,
        [
            "curl",
            "-s",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            f"{pki}/peer-ca.pem",
            "--cert",
            f"{pki}/peer.pem",
            "--key",
            f"{pki}/peer-key.pem",
            f"{peer_url}/members",
        ],
    )
    assert code.stdout.strip() == "200", code  # fmt: skip
    assert (
        harness.run(h1, ["cat", "/etc/etcd/pki/peer-ca.pem"]).stdout.encode() == wsp.peer_ca_cert.read_bytes()
    )
    assert step_ids(ws) == []  # converged: apply has nothing to do
    assert asyncio.run(guide_view()) == written

    # scale out and back in with etcdforge; the data stays
    run_cli("member", "add", "etcd4", "--address", h4.address, "--dir", str(ws))
    listed = json.loads(run_cli("members", "--dir", str(ws), "-o", "json").stdout)
    assert sorted(m["name"] for m in listed) == ["etcd1", "etcd2", "etcd3", "etcd4"]
    assert keys_in(ws) == written
    run_cli("member", "remove", "etcd4", "--dir", str(ws), "--yes")
    listed = json.loads(run_cli("members", "--dir", str(ws), "-o", "json").stdout)
    assert sorted(m["name"] for m in listed) == ["etcd1", "etcd2", "etcd3"]
    run_cli("health", "--dir", str(ws))
    assert keys_in(ws) == written
    print(f"adoption scenario took {time.monotonic() - started:.1f}s")
