"""`etcdforge pki check --hosts` against real SSH + systemd test hosts: what a monitor sees when a member's
installed PKI is broken on its host, finding by finding and exit code by exit code.

Every fault is made on etcd2's host over SSH through the harness and undone before the next one (the
``hosts`` fixture also resets all hosts before each test).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from support import init_hosts_workspace, run_cli

from etcdforge.testing.hosts import TestHost, TestHosts

PKI = "/etc/etcd/pki"
MEMBERS = ("etcd1", "etcd2", "etcd3")
#: what pki check judges about each installed certificate when all is well
LEAF_CHECKS = {"expiry", "chain", "key-match", "usages", "sans", "key-mode", "owner"}
CA_CHECKS = {"expiry", "chain"}

Problems = set[tuple[str, str, str]]


def check(ws: Path, *extra: str) -> tuple[int, list[dict[str, str]], float]:
    """Run `pki check --hosts -o json`: (exit code, findings, wall seconds of the whole CLI run)."""
    start = time.monotonic()
    proc = run_cli("pki", "check", "--dir", str(ws), "--hosts", "-o", "json", *extra, check=False)
    seconds = time.monotonic() - start
    assert proc.returncode in (0, 1, 2), proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode
    findings: list[dict[str, str]] = doc["findings"]
    return proc.returncode, findings, seconds


def problems(findings: list[dict[str, str]]) -> Problems:
    return {(f["subject"], f["check"], f["severity"]) for f in findings if f["severity"] != "ok"}


def message(findings: list[dict[str, str]], subject: str, check_name: str) -> str:
    (found,) = [f["message"] for f in findings if f["subject"] == subject and f["check"] == check_name]
    return found


def expect(ws: Path, code: int, wanted: Problems) -> list[dict[str, str]]:
    got_code, findings, _ = check(ws)
    assert (got_code, problems(findings)) == (code, wanted), json.dumps(findings, indent=1)
    return findings


def timing(ws: Path, runs: int = 5) -> None:
    """Print what `pki check --hosts` costs: the whole CLI, and the gathering alone (SSH connect + read)."""
    import asyncio
    import statistics

    from etcdforge.verbs.pki_check import gather_hosts
    from etcdforge.workspace import load_workspace

    cli = sorted(check(ws)[2] for _ in range(runs))
    w, spec = load_workspace(ws)
    gather = []
    for _ in range(runs):
        start = time.monotonic()
        asyncio.run(gather_hosts(spec, w))
        gather.append(time.monotonic() - start)
    gather.sort()
    print(
        f"\npki check --hosts on 3 hosts, {runs} runs: CLI wall min {cli[0]:.2f}s median "
        f"{statistics.median(cli):.2f}s; gather_hosts min {gather[0]:.2f}s "
        f"median {statistics.median(gather):.2f}s"
    )


def put(hosts: TestHosts, host: TestHost, path: str, content: bytes) -> None:
    """Overwrite ``path`` in place (keeps an existing file's mode and owner), creating its directory."""
    script = 'mkdir -p "$(dirname "$1")" && cat > "$1"'
    hosts.run(host, ["sh", "-c", script, "sh", path], input=content.decode())


def test_pki_check_hosts_flags_each_fault_on_the_member_and_file(hosts: TestHosts, tmp_path: Path) -> None:
    ws = Path(str(init_hosts_workspace(hosts, tmp_path / "prod", 3)))
    run_cli("apply", "--dir", str(ws), "--yes")
    h2 = hosts.hosts[1]
    pki = ws / "pki"

    # all fine: exit 0, and every member's installed files were read and judged on its host
    code, findings, _ = check(ws)
    timing(ws)
    assert code == 0, json.dumps([f for f in findings if f["severity"] != "ok"], indent=1)
    checks: dict[str, set[str]] = {}
    for f in findings:
        checks.setdefault(f["subject"], set()).add(f["check"])
    for member in MEMBERS:
        assert checks[f"{member}:server"] == LEAF_CHECKS, member
        assert checks[f"{member}:peer"] == LEAF_CHECKS, member
        assert checks[f"{member}:ca"] == CA_CHECKS, member
        assert checks[member] == {"ca-key-absent"}, member
        assert message(findings, f"{member}:server", "key-mode") == f"{member}:{PKI}/server-key.pem is 0600"
        assert message(findings, f"{member}:peer", "owner") == f"{member}:{PKI}/peer-key.pem owned by etcd"
        assert message(findings, f"{member}:ca", "chain") == "is the configured CA"

    # a group-readable key: a warning (1) on that member's server key, nothing else
    hosts.run(h2, ["chmod", "0640", f"{PKI}/server-key.pem"])
    found = expect(ws, 1, {("etcd2:server", "key-mode", "warning")})
    assert message(found, "etcd2:server", "key-mode").startswith(f"etcd2:{PKI}/server-key.pem is 0640")
    hosts.run(h2, ["chmod", "0600", f"{PKI}/server-key.pem"])

    # a world-readable key: broken (2)
    hosts.run(h2, ["chmod", "0644", f"{PKI}/peer-key.pem"])
    found = expect(ws, 2, {("etcd2:peer", "key-mode", "broken")})
    assert message(found, "etcd2:peer", "key-mode").startswith(f"etcd2:{PKI}/peer-key.pem is 0644")
    hosts.run(h2, ["chmod", "0600", f"{PKI}/peer-key.pem"])

    # a key owned by root instead of etcd: a warning naming the owner
    hosts.run(h2, ["chown", "root:root", f"{PKI}/peer-key.pem"])
    found = expect(ws, 1, {("etcd2:peer", "owner", "warning")})
    assert message(found, "etcd2:peer", "owner") == f"etcd2:{PKI}/peer-key.pem owned by root:root, want etcd"
    hosts.run(h2, ["chown", "etcd:etcd", f"{PKI}/peer-key.pem"])

    # etcd1's server pair on etcd2: signed by our CA, key matches, but it does not name etcd2's address
    put(hosts, h2, f"{PKI}/server.pem", (pki / "etcd1-server.pem").read_bytes())
    put(hosts, h2, f"{PKI}/server-key.pem", (pki / "etcd1-server-key.pem").read_bytes())
    found = expect(ws, 2, {("etcd2:server", "sans", "broken")})
    assert message(found, "etcd2:server", "sans") == f"etcd2:{PKI}/server.pem: SANs lack {h2.address}"
    # ... and the certificate alone (the key still etcd2's): its key no longer matches either
    put(hosts, h2, f"{PKI}/server-key.pem", (pki / "etcd2-server-key.pem").read_bytes())
    found = expect(ws, 2, {("etcd2:server", "sans", "broken"), ("etcd2:server", "key-match", "broken")})
    assert message(found, "etcd2:server", "key-match") == (
        f"etcd2:{PKI}/server-key.pem does not match etcd2:{PKI}/server.pem"
    )
    put(hosts, h2, f"{PKI}/server.pem", (pki / "etcd2-server.pem").read_bytes())

    # the CA key on a member: as ca-key.pem, under another name, and re-encoded (PKCS#8) — all three named
    ca_key = (pki / "ca-key.pem").read_bytes()
    pkcs8 = serialization.load_pem_private_key(ca_key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert pkcs8 != ca_key
    leaks = (f"{PKI}/ca-key.pem", "/etc/etcd/backup/stash", "/etc/etcd/backup/old.pem")
    for path, content in zip(leaks, (ca_key, ca_key, pkcs8), strict=True):
        put(hosts, h2, path, content)
    found = expect(ws, 2, {("etcd2", "ca-key-absent", "broken")})
    leak = message(found, "etcd2", "ca-key-absent")
    assert all(path in leak for path in leaks), leak
    hosts.run(h2, ["rm", "-rf", f"{PKI}/ca-key.pem", "/etc/etcd/backup"])

    # a missing certificate: one read finding, no cascade; `apply` puts it back and all is well again
    hosts.run(h2, ["rm", f"{PKI}/peer.pem"])
    found = expect(ws, 2, {("etcd2:peer", "read", "broken")})
    assert message(found, "etcd2:peer", "read") == f"etcd2:{PKI}/peer.pem is missing"
    run_cli("apply", "--dir", str(ws), "--yes")
    expect(ws, 0, set())


def test_pki_check_hosts_unreachable_host_is_unknown_in_one_line(hosts: TestHosts, tmp_path: Path) -> None:
    ws = Path(str(init_hosts_workspace(hosts, tmp_path / "cut", 3)))
    run_cli("apply", "--dir", str(ws), "--yes")
    h2 = hosts.hosts[1]
    hosts.partition(h2)
    try:
        proc: subprocess.CompletedProcess[str] = run_cli(
            "pki", "check", "--dir", str(ws), "--hosts", "-o", "json", check=False
        )
    finally:
        hosts.heal(h2)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "etcd2" in lines[0] and h2.address in lines[0], lines[0]
