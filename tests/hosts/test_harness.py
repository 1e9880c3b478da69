"""The test-host harness itself, against real hosts: boot, SSH with verified host keys, identities, sudo
users, faults (partition, kill etcd, stop/start) and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import string
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from etcdforge.testing.hosts import (
    REGISTRY_DIR,
    HostHarnessError,
    SubnetInUseError,
    TestHosts,
    cleanup_stale,
)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_three_hosts_boot_and_run_systemd(hosts: TestHosts) -> None:
    print(f"\n[test-hosts] boot time for 3 hosts: {hosts.boot_seconds:.2f}s")
    assert [h.name for h in hosts.hosts] == ["h1", "h2", "h3"]
    for host in hosts.hosts:
        state = hosts.run(host, ["systemctl", "is-system-running"], check=False).stdout.strip()
        if state != "running":
            failed = hosts.run(host, ["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            print(f"[test-hosts] {host.name} is {state}; failed units:\n{failed}")
        assert state in ("running", "degraded"), f"{host.name}: {state}"
        assert host.leader_pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]
        # Debian's etcd must not autostart in a test host
        assert hosts.run(host, ["systemctl", "is-active", "etcd"], check=False).stdout.strip() == "inactive"


def test_host_keys_are_really_verified(hosts: TestHosts, tmp_path: Path) -> None:
    host = hosts.hosts[0]
    argv = hosts.ssh_argv(host)
    known = argv.index(f"UserKnownHostsFile={hosts.known_hosts}")
    assert "StrictHostKeyChecking=yes" in argv and "StrictHostKeyChecking=no" not in argv

    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"{host.address} {key_type} {key}\n")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    for known_hosts, expect in ((wrong, "HOST IDENTIFICATION HAS CHANGED"), (empty, "verification failed")):
        bad = [*argv[:known], f"UserKnownHostsFile={known_hosts}", *argv[known + 1 :]]
        bad[bad.index("LogLevel=ERROR")] = "LogLevel=INFO"
        proc = subprocess.run([*bad, "true"], capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 255, proc
        assert expect in proc.stderr, proc.stderr
    # and the real known_hosts holds exactly the key the host presents
    scanned = subprocess.run(
        ["ssh-keygen", "-F", host.address, "-f", str(hosts.known_hosts)], capture_output=True, text=True
    ).stdout
    served = hosts.run(host, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[1]
    assert served in scanned


def test_each_host_has_its_own_identity(hosts: TestHosts) -> None:
    seen: dict[str, set[str]] = {"hostname": set(), "machine-id": set(), "hostkey": set()}
    for host in hosts.hosts:
        assert host.address.startswith(str(hosts.subnet.network_address).rsplit(".", 1)[0] + ".")
        out = hosts.run(
            host,
            ["sh", "-c", "hostname; cat /etc/machine-id; cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub"],
        ).stdout.split()
        assert out[0] == host.name
        for field, value in zip(("hostname", "machine-id", "hostkey"), out, strict=True):
            seen[field].add(value)
        addresses = hosts.run(host, ["ip", "-4", "-o", "addr", "show", "dev", "host0"]).stdout
        assert f"inet {host.address}/24" in addresses
        # peers resolve each other by name
        peer = hosts.hosts[host.index % 3]
        assert hosts.run(host, ["getent", "hosts", peer.name]).stdout.split()[0] == peer.address
    assert all(len(values) == 3 for values in seen.values()), seen


def test_deploy_has_passwordless_sudo_and_nosudo_has_none(
    hosts: TestHosts, host_requirements: Callable[..., None]
) -> None:
    if shutil.which("sudo") is None:
        host_requirements("sudo is not installed (apt-get install sudo)")
    host = hosts.hosts[1]
    assert hosts.run(host, ["id", "-un"], user="deploy").stdout.strip() == "deploy"
    assert hosts.run(host, ["sudo", "-n", "id", "-u"], user="deploy").stdout.strip() == "0"
    assert hosts.run(host, ["id", "-un"], user="nosudo").stdout.strip() == "nosudo"
    denied = hosts.run(host, ["sudo", "-n", "true"], user="nosudo", check=False)
    assert denied.returncode == 1, denied
    assert "password is required" in denied.stderr or "not allowed" in denied.stderr, denied.stderr


def test_partition_and_heal(hosts: TestHosts) -> None:
    h1, h2 = hosts.hosts[0], hosts.hosts[1]
    peer_probe = ["timeout", "2", "bash", "-c", f"</dev/tcp/{h2.address}/22"]
    assert hosts.wait_tcp(h2, 22)
    assert hosts.run(h1, peer_probe, check=False).returncode == 0
    hosts.partition(h2)
    try:
        assert not hosts.wait_tcp(h2, 22, timeout=1.0)  # control side cut off
        assert hosts.run(h1, peer_probe, check=False).returncode != 0  # peers cut off
        assert hosts.wait_tcp(h1, 22)  # the others are untouched
    finally:
        hosts.heal(h2)
    assert _wait(lambda: hosts.wait_tcp(h2, 22), 10)
    assert hosts.run(h2, ["true"]).returncode == 0


def test_kill_etcd_and_reset(hosts: TestHosts) -> None:
    host = hosts.hosts[2]
    # Debian's own unit (Type=notify, Restart=on-abnormal), on the host's loopback only
    hosts.run(host, ["install", "-d", "-o", "etcd", "-g", "etcd", "-m", "700", "/var/lib/etcd"])
    hosts.run(host, ["systemctl", "start", "etcd"], timeout=60)
    killed = hosts.kill_etcd(host)

    def restarted() -> bool:
        out = hosts.run(host, ["systemctl", "show", "-p", "MainPID", "--value", "etcd"]).stdout.strip()
        return out not in ("0", str(killed))

    assert _wait(restarted, 30), "systemd did not restart etcd after SIGKILL"
    hosts.reset([host])
    assert hosts.run(host, ["systemctl", "is-active", "etcd"], check=False).stdout.strip() == "inactive"
    assert hosts.run(host, ["test", "-e", "/var/lib/etcd"], check=False).returncode == 1
    with pytest.raises(HostHarnessError, match="no main process"):
        hosts.kill_etcd(host)


def test_stop_host_and_start_it_again(hosts: TestHosts) -> None:
    host = hosts.hosts[2]
    began = time.monotonic()
    hosts.stop_host(host)
    stopped = time.monotonic() - began
    assert hosts.host(host).nspawn_pid == 0
    assert not os.path.exists(f"/proc/{host.nspawn_pid}") or not _is_nspawn(host.nspawn_pid)
    assert not hosts.wait_tcp(host, 22, timeout=1.0)
    began = time.monotonic()
    again = hosts.start_host(host)
    booted = time.monotonic() - began
    print(f"\n[test-hosts] {host.name}: graceful stop {stopped:.2f}s, boot again {booted:.2f}s")
    assert again.nspawn_pid not in (0, host.nspawn_pid)
    assert again.address == host.address and again.root == host.root
    # same host keys (same overlay): the existing known_hosts still verifies it
    assert hosts.run(again, ["hostname"]).stdout.strip() == host.name


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def _leftovers(instance: str) -> list[str]:
    found = [f"netns {line}" for line in _lines(["ip", "netns", "list"]) if instance in line]
    found += [f"link {name}" for name in os.listdir("/sys/class/net") if name.startswith(instance)]
    found += [f"mount {line}" for line in Path("/proc/mounts").read_text().splitlines() if instance in line]
    found += [f"process {line}" for line in _lines(["pgrep", "-a", "-f", instance])]
    found += [f"registry {p}" for p in REGISTRY_DIR.glob(f"{instance}*")] if REGISTRY_DIR.is_dir() else []
    return found


def _lines(argv: list[str]) -> list[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()


def test_teardown_leaves_nothing(
    tmp_path: Path, test_hosts: TestHosts, boot_hosts: Callable[[int, Path, str, Sequence[str]], TestHosts]
) -> None:
    harness = boot_hosts(1, tmp_path, "eft", ("10.213.79.0/24", "10.213.89.0/24", "10.213.99.0/24"))
    instance = harness.instance
    assert _leftovers(instance), "a booted harness should be visible"
    assert harness.run("h1", ["true"]).returncode == 0
    assert harness.close() == []
    assert _leftovers(instance) == []
    assert not any(p.name.startswith(instance) for p in tmp_path.iterdir())
    assert harness.close() == []  # idempotent


def test_failed_start_cleans_up_and_refuses_a_used_subnet(tmp_path: Path, test_hosts: TestHosts) -> None:
    prefix = "ex" + "".join(random.choices(string.ascii_lowercase, k=3))  # ours alone, even in parallel runs
    with pytest.raises(SubnetInUseError):
        TestHosts.start(1, tmp_path, subnet=str(test_hosts.subnet), prefix=prefix)
    assert not [line for line in _lines(["ip", "-o", "link"]) if re.search(rf"\b{prefix}[0-9a-f]{{6}}", line)]
    assert not list(REGISTRY_DIR.glob(f"{prefix}*")) and not list(tmp_path.glob(f"{prefix}*"))
    with pytest.raises(HostHarnessError, match="not in the test subnet"):
        test_hosts.assert_routed_to_test_bridge("10.213.200.1")
    with pytest.raises(HostHarnessError, match="refusing"):
        test_hosts.assert_routed_to_test_bridge("127.0.0.1")


def test_cleanup_stale_removes_dead_runs_but_not_live_ones(test_hosts: TestHosts) -> None:
    dead = "eft" + secrets.token_hex(3)  # a run that died without a registry entry
    subprocess.run(["ip", "netns", "add", f"{dead}n1"], check=True)
    subprocess.run(["ip", "link", "add", f"{dead}br", "type", "bridge"], check=True)
    removed = cleanup_stale("eft")
    assert f"netns {dead}n1" in removed and f"link {dead}br" in removed
    assert _leftovers(dead) == []
    # the live session harness (another prefix, and a live owner) is untouched
    assert cleanup_stale(test_hosts.prefix) == []
    assert test_hosts.wait_tcp(test_hosts.hosts[0], 22)


def test_five_hosts_boot(five_test_hosts: TestHosts) -> None:
    print(f"\n[test-hosts] boot time for 5 hosts: {five_test_hosts.boot_seconds:.2f}s")
    assert [h.name for h in five_test_hosts.hosts] == [f"h{i}" for i in range(1, 6)]
    for host in five_test_hosts.hosts:
        assert five_test_hosts.run(host, ["hostname"]).stdout.strip() == host.name
