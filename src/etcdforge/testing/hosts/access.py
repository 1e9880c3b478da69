"""Reaching a harness's hosts: names and addresses, host lookup, routing checks, SSH and TCP.

Role: :class:`HostAccess` is the base of :class:`~etcdforge.testing.hosts.harness.TestHosts`: the
identity of one harness instance (its id, subnet, bridge, client key, known_hosts), the records of its
hosts, and every way a test talks to them. It starts, stops and faults nothing.

Invariants:

- Every host address is derived from the harness's subnet (host ``h<i>`` is network address + ``i``);
  every SSH command and TCP probe first checks that the address is in that subnet and that the kernel
  routes it directly via the harness's bridge, and raises otherwise.
- SSH verifies host keys (our known_hosts, ``StrictHostKeyChecking=yes``) and quotes the remote command
  once, with :func:`shlex.join`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import ID_HEX, HostHarnessError, TestHost, run_local
from .network import assert_routed_via


def machine_load() -> str:
    """This machine's load, pressure and free memory in a few lines (for timeout reports)."""
    lines = []
    for path in ("/proc/loadavg", "/proc/pressure/cpu", "/proc/pressure/io", "/proc/pressure/memory"):
        try:
            lines.append(f"{path}: " + " | ".join(Path(path).read_text().split("\n")).strip(" |"))
        except OSError:
            continue
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        meminfo = []
    lines += [row for row in meminfo if row.startswith("MemAvailable:")]
    return "\n".join(lines)


class HostAccess:
    """The hosts of one harness instance and how to reach them (one test thread at a time)."""

    def __init__(self, workdir: Path, subnet: str, prefix: str) -> None:
        if not re.fullmatch(r"[a-z]{1,5}", prefix):
            raise ValueError(f"prefix {prefix!r}: use 1-5 lowercase letters (interface names are short)")
        self.instance = prefix + uuid.uuid4().hex[:ID_HEX]
        self.prefix = prefix
        self.subnet = ipaddress.IPv4Network(subnet)
        self.bridge = f"{self.instance}br"
        self.bridge_address = str(self.subnet.network_address + (self.subnet.num_addresses - 2))
        self.workdir = workdir
        self.client_key = workdir / f"{self.instance}-id_ed25519"
        self.known_hosts = workdir / f"{self.instance}-known_hosts"
        self._hosts: dict[str, TestHost] = {}

    def _describe(self, index: int) -> TestHost:
        return TestHost(
            name=f"h{index}",
            address=str(self.subnet.network_address + index),
            ssh_port=22,
            root=self.workdir / f"{self.instance}-h{index}" / "root",
            nspawn_pid=0,
            leader_pid=0,
            index=index,
            netns=f"{self.instance}n{index}",
            veth=f"{self.instance}v{index}",
        )

    @property
    def hosts(self) -> tuple[TestHost, ...]:
        """The hosts in index order, with their current PIDs."""
        return tuple(sorted(self._hosts.values(), key=lambda h: h.index))

    def host(self, host: TestHost | str) -> TestHost:
        """The current record of ``host`` (by name or by a possibly stale record)."""
        name = host if isinstance(host, str) else host.name
        try:
            return self._hosts[name]
        except KeyError:
            raise HostHarnessError(f"no test host {name!r} (have {', '.join(self._hosts)})") from None

    def assert_routed_to_test_bridge(self, address: str) -> None:
        """Raise unless ``address`` is in our subnet and the kernel routes it directly via our bridge."""
        if ipaddress.IPv4Address(address) not in self.subnet:
            raise HostHarnessError(f"refusing to send to {address}: not in the test subnet {self.subnet}")
        assert_routed_via(address, self.bridge)

    def ssh_argv(
        self, host: TestHost | str, user: str = "root", *, connect_timeout: float = 20.0
    ) -> list[str]:
        """The argv prefix of the real ``ssh`` client for ``user@host``: our key, our known_hosts, checked."""
        current = self.host(host)
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={connect_timeout:g}", "-o", "LogLevel=ERROR",
            "-p", str(current.ssh_port), f"{user}@{current.address}",
        ]  # fmt: skip

    def run(
        self,
        host: TestHost | str,
        argv: Sequence[str],
        *,
        user: str = "root",
        timeout: float = 180.0,
        check: bool = True,
        input: str | None = None,
        connect_timeout: float = 20.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` over SSH (quoted once for the remote shell)."""
        current = self.host(host)
        self.assert_routed_to_test_bridge(current.address)
        ssh = self.ssh_argv(current, user, connect_timeout=connect_timeout)
        try:
            return run_local([*ssh, "--", shlex.join(argv)], timeout=timeout, check=check, input=input)
        except HostHarnessError as exc:
            if "timed out" not in str(exc):
                raise
            raise HostHarnessError(
                f"{exc}\n--- {current.name} at the timeout:\n{self.diagnose(current.name)}"
            ) from exc

    def diagnose(self, name: str) -> str:
        """What the machine and the host's own systemd say (load, memory, boot, sshd, journal; bounded)."""
        leader = self._hosts[name].leader_pid
        report = [self.console_tail(name), machine_load()]
        if leader:
            for argv in (["systemctl", "is-system-running"], ["systemctl", "list-jobs", "--no-pager"],
                         ["systemctl", "status", "--no-pager", "-n", "20", "ssh.service"],
                         ["journalctl", "--no-pager", "-n", "40"]):  # fmt: skip
                try:
                    proc = run_local(
                        ["nsenter", "-t", str(leader), "-a", "--", *argv], timeout=10, check=False
                    )
                    report.append(f"$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}")
                except HostHarnessError as exc:
                    report.append(str(exc))
        return "\n".join(report)

    def console_tail(self, name: str, lines: int = 30) -> str:
        """The last lines the host's console printed (for error messages)."""
        try:
            text = (self._hosts[name].root.parent / "console.log").read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def _each(self, hosts: Iterable[TestHost | str] | None) -> list[str]:
        return [self.host(h).name for h in (self._hosts if hosts is None else hosts)]

    def wait_tcp(self, host: TestHost | str, port: int, timeout: float = 1.0) -> bool:
        """True if a TCP connection to ``host:port`` succeeds within ``timeout`` (routing checked first)."""
        current = self.host(host)
        self.assert_routed_to_test_bridge(current.address)
        try:
            with socket.create_connection((current.address, port), timeout=timeout):
                return True
        except OSError:
            return False
