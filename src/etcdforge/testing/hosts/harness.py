"""The test-host harness: :class:`TestHosts` boots, reaches, faults and tears down a set of hosts.

Role: the one stateful object of the ``hosts`` package. It owns a harness instance's resources (bridge,
per-host netns/veth, overlays, containers, client key, known_hosts, registry entry) and composes the
stateless helpers of :mod:`.network`, :mod:`.processes`, :mod:`.rootfs` and :mod:`.stale`; how tests
reach the hosts (lookup, SSH, TCP, routing checks) is its base class :class:`.access.HostAccess`.

Invariants:

- Before :meth:`TestHosts.start` returns, and before every SSH command or TCP probe, each host address
  must be in the harness's subnet and routed directly via its bridge; otherwise it raises.
- Host keys are verified: clients get a known_hosts file holding each host's own ed25519 key; nothing here
  uses ``StrictHostKeyChecking=no``. Remote commands are quoted once, with :func:`shlex.join`.
- :meth:`TestHosts.close` never raises, also after a half-done start; it returns the problems it met.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from .access import HostAccess
from .base import DEFAULT_SUBNET, HostHarnessError, TestHost, missing_prerequisites, run_local
from .network import add_host_network, claim_bridge, delete_link
from .processes import (
    INOTIFY_INSTANCES,
    ensure_inotify_instances,
    kill_container,
    spawn_nspawn,
    wait_for_leader,
    wait_gone,
)
from .rootfs import host_key, prepare_root, remove_dir, unmount
from .stale import SUBNET_LOCK, register, registry_file


class TestHosts(HostAccess):
    """A set of booted test hosts and the faults that can be applied to them. Make one with :meth:`start`.

    Thread use: one test thread at a time; :meth:`start` fans out internally.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    def __init__(self, workdir: Path, subnet: str, prefix: str) -> None:
        super().__init__(workdir, subnet, prefix)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._partitioned: set[str] = set()
        self._created_links: list[str] = []
        self._created_netns: list[str] = []
        self._closed = False
        #: wall time :meth:`start` took, from the first command to the last host answering SSH
        self.boot_seconds = 0.0

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls,
        count: int,
        workdir: Path,
        *,
        subnet: str = DEFAULT_SUBNET,
        prefix: str = "efh",
        timeout: float = 60.0,
    ) -> TestHosts:
        """Boot ``count`` hosts concurrently and return once each accepts SSH (within ``timeout``).

        On any failure everything created so far is torn down before the error propagates.
        """
        problems = missing_prerequisites()
        if problems:
            raise HostHarnessError("cannot boot test hosts: " + "; ".join(problems))
        began = time.monotonic()
        harness = cls(workdir, subnet, prefix)
        if not 1 <= count <= harness.subnet.num_addresses - 3:
            raise ValueError(f"count {count} does not fit in {subnet}")
        try:
            harness._boot(count, timeout)
        except BaseException:
            harness.close()
            raise
        harness.boot_seconds = time.monotonic() - began
        return harness

    def _boot(self, count: int, timeout: float) -> None:
        ensure_inotify_instances(INOTIFY_INSTANCES)
        self.workdir.mkdir(parents=True, exist_ok=True)
        register(self.instance, self.workdir)
        run_local(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.instance, "-f", str(self.client_key)]
        )
        claim_bridge(SUBNET_LOCK, self.subnet, self.bridge, self.bridge_address, self._created_links)
        for index in range(1, count + 1):
            host = self._describe(index)
            add_host_network(
                host, self.bridge, self.subnet.prefixlen, self._created_netns, self._created_links
            )
        self._hosts = {h.name: h for h in (self._describe(i) for i in range(1, count + 1))}
        for host in self._hosts.values():
            self.assert_routed_to_test_bridge(host.address)
        peers = self.hosts
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda h: prepare_root(h, peers, self.client_key), self._hosts.values()))
        self.known_hosts.write_text("".join(f"{h.address} {host_key(h)}\n" for h in self.hosts))
        for name in self._hosts:
            self._launch(name)
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda n: self._wait_ssh(n, deadline), list(self._hosts)))
        for host in self._hosts.values():
            self.assert_routed_to_test_bridge(host.address)

    def _launch(self, name: str) -> None:
        host = self._hosts[name]
        run_local(["ip", "-n", host.netns, "link", "set", "host0", "up"])
        proc = spawn_nspawn(host, f"{self.instance}-{name}")
        self._procs[name] = proc
        self._hosts[name] = dataclasses.replace(host, nspawn_pid=proc.pid, leader_pid=0)
        leader = wait_for_leader(proc)
        if leader is None:
            raise HostHarnessError(
                f"{name}: systemd-nspawn did not start a container\n{self.console_tail(name)}"
            )
        self._hosts[name] = dataclasses.replace(self._hosts[name], leader_pid=leader)

    def _wait_ssh(self, name: str, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise HostHarnessError(
                    f"{name}: systemd-nspawn exited {proc.returncode}\n{self.console_tail(name)}"
                )
            result = self.run(name, ["true"], timeout=10, check=False, connect_timeout=2)
            if result.returncode == 0:
                return
            last = result.stderr.strip()
            time.sleep(0.1)
        raise HostHarnessError(
            f"{name}: no SSH within the timeout (last error: {last})\n{self.diagnose(name)}"
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self) -> list[str]:
        """Tear everything down; never raises. Returns the problems met (empty when all went away)."""
        problems: list[str] = []

        def attempt(what: str, action: Callable[..., object], *args: object) -> None:
            try:
                result = action(*args)
                if isinstance(result, str):
                    problems.append(result)
            except Exception as exc:
                problems.append(f"{what}: {exc}")

        if self._closed:
            return problems
        self._closed = True
        for name in list(self._procs):
            attempt(f"kill {name}", self._kill_container, name)
        for host in self._hosts.values():
            attempt(f"umount {host.root}", unmount, host.root)
        # veths before their netns: deleting a netns removes its veth pair asynchronously
        for link in reversed(self._created_links):
            attempt(f"link {link}", delete_link, link)
        for netns in self._created_netns:
            attempt(f"netns {netns}", run_local, ["ip", "netns", "del", netns])
        for host in self._hosts.values():
            attempt(f"remove {host.root.parent}", remove_dir, host.root.parent)
        for path in (self.client_key, self.client_key.with_suffix(".pub"), self.known_hosts):
            attempt(f"remove {path}", path.unlink, True)
        attempt("registry", registry_file(self.instance).unlink, True)
        return problems

    def _kill_container(self, name: str) -> str | None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            kill_container(proc.pid, 15, proc)
        self._hosts[name] = dataclasses.replace(self._hosts[name], nspawn_pid=0, leader_pid=0)
        return None if proc.poll() is not None else f"{name}: systemd-nspawn {proc.pid} did not exit"

    def __enter__(self) -> TestHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- faults

    def kill_etcd(self, host: TestHost | str, unit: str = "etcd") -> int:
        """SIGKILL the main process of ``unit`` on ``host``; returns its PID (inside the host)."""
        out = self.run(host, ["systemctl", "show", "-p", "MainPID", "--value", unit], timeout=20).stdout
        pid = int(out.strip() or 0)
        if pid == 0:
            raise HostHarnessError(f"{self.host(host).name}: {unit} has no main process to kill")
        self.run(host, ["kill", "-KILL", str(pid)], timeout=20)
        return pid

    def partition(self, host: TestHost | str) -> None:
        """Cut ``host`` off the bridge (all its traffic, client and peer): its veth goes down."""
        current = self.host(host)
        run_local(["ip", "link", "set", current.veth, "down"])
        self._partitioned.add(current.name)

    def heal(self, host: TestHost | str) -> None:
        """Undo :meth:`partition`."""
        current = self.host(host)
        run_local(["ip", "link", "set", current.veth, "up"])
        self._partitioned.discard(current.name)

    def stop_host(self, host: TestHost | str, timeout: float = 60.0) -> None:
        """Shut ``host`` down gracefully (SIGTERM to nspawn powers it off); kill it after ``timeout``."""
        name = self.host(host).name
        proc = self._procs.get(name)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        if not wait_gone(proc.pid, timeout, proc):
            self._kill_container(name)
            raise HostHarnessError(f"{name}: did not power off within {timeout:g}s; killed it")
        self._procs.pop(name)
        self._hosts[name] = dataclasses.replace(self._hosts[name], nspawn_pid=0, leader_pid=0)

    def start_host(self, host: TestHost | str, timeout: float = 60.0) -> TestHost:
        """Boot a stopped ``host`` again (same overlay, address and keys); wait until it accepts SSH."""
        name = self.host(host).name
        if name in self._procs:
            raise HostHarnessError(f"{name} is already running")
        self._launch(name)
        self._wait_ssh(name, time.monotonic() + timeout)
        return self._hosts[name]

    def reset(self, hosts: Iterable[TestHost | str] | None = None) -> None:
        """Bring hosts back to their booted state between tests: healed, running, no etcd installed."""
        names = self._each(hosts)
        for name in names:
            if name in self._partitioned:
                self.heal(name)
            if name not in self._procs:
                self.start_host(name)
        script = (
            "systemctl stop etcd 2>/dev/null; systemctl reset-failed etcd 2>/dev/null; "
            "rm -rf /var/lib/etcd /etc/etcd /etc/systemd/system/etcd.service"
            " /etc/systemd/system/etcd.service.d && systemctl daemon-reload"
        )
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(lambda n: self.run(n, ["sh", "-c", script], timeout=120), names))
