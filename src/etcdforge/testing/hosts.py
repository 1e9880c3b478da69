"""Real SSH + systemd test hosts on one Linux machine (root only), for host tests of etcdforge.

Role: boot N "hosts", each a ``systemd-nspawn --boot`` container on a copy-on-write overlay of ``/``
with its own network namespace, its own address on a private test bridge, its own systemd as PID 1 and
OpenSSH inside, and expose faults (kill etcd, partition, stop/start a host). The recipe is
docs/test-hosts.md in the shared docs.

Invariants:

- **Network safety**: every address the harness hands out lies in the harness's own subnet, and before
  ``start`` returns (and whenever :meth:`TestHosts.assert_routed_to_test_bridge` is called) ``ip route
  get ADDR`` must resolve directly (no gateway) via the harness's bridge; otherwise we raise. A subnet
  that any existing route overlaps is refused before anything is created.
- **Unique names**: bridge, netns and veth names are ``<prefix><6 hex>`` plus a suffix (``br``,
  ``n<i>``, ``v<i>``), so a leftover of a crashed run never blocks a new one; a registry file under
  ``/run/etcdforge-testhosts`` records the owning process so :func:`cleanup_stale` removes only the
  leftovers of dead owners.
- **Host keys are verified**: clients get a known_hosts file holding each host's own ed25519 key; nothing
  here uses ``StrictHostKeyChecking=no``.
- **Teardown always completes**: :meth:`TestHosts.close` never raises, also after a half-done start; it
  returns the problems it met.
- The only machine-wide setting touched: ``fs.inotify.max_user_instances`` is raised (never lowered) to
  :data:`INOTIFY_INSTANCES`, because all containers' systemds share root's inotify pool.
- Every external command is an argv list with a bounded timeout; remote commands are quoted once, with
  :func:`shlex.join`.

Synchronous on purpose: tests drive it from fixtures, and one API (not sync + async twins) is house style.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

__all__ = [
    "DEFAULT_SUBNET",
    "HostHarnessError",
    "SubnetInUseError",
    "TestHost",
    "TestHosts",
    "assert_routed_via",
    "cleanup_stale",
    "missing_prerequisites",
]

DEFAULT_SUBNET = "10.213.77.0/24"
REGISTRY_DIR = Path("/run/etcdforge-testhosts")

#: units the image enables that only cost boot time (or reach for the network) inside a test host
MASKED_UNITS = (
    "postgresql.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "man-db.timer",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
)
SSHD_DROPIN = "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
INOTIFY_INSTANCES = 8192
REQUIRED_TOOLS = ("systemd-nspawn", "sshd", "ssh", "ssh-keygen", "ip", "mount", "umount", "useradd")

_ID_HEX = 6
_RESOURCE_SUFFIX = r"(?:br|n\d+|v\d+|-h\d+)"


class HostHarnessError(RuntimeError):
    """The test hosts could not be set up, reached or faulted as asked; the message says which and why."""


class SubnetInUseError(HostHarnessError):
    """The requested subnet overlaps an existing route: pick another (``subnet=``)."""


@dataclass(frozen=True)
class TestHost:
    """One booted (or stopped) test host. ``nspawn_pid``/``leader_pid`` are 0 while it is stopped."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    name: str
    address: str
    ssh_port: int
    root: Path
    nspawn_pid: int
    leader_pid: int
    index: int
    netns: str
    veth: str


def missing_prerequisites() -> list[str]:
    """Why host tests cannot run here (not root, tools missing); empty when they can."""
    problems = [] if os.geteuid() == 0 else ["not running as root"]
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(
            f"missing tools: {', '.join(missing)} (apt-get install systemd-container openssh-server iproute2)"
        )
    return problems


def _run(
    argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise HostHarnessError(f"{shlex.join(argv)} timed out after {timeout:g}s") from exc
    if check and proc.returncode != 0:
        raise HostHarnessError(
            f"{shlex.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def assert_routed_via(address: str, bridge: str) -> None:
    """Raise unless the kernel routes ``address`` directly (no gateway) out of ``bridge``."""
    out = _run(["ip", "-o", "route", "get", address], timeout=10).stdout.split()
    dev = out[out.index("dev") + 1] if "dev" in out else None
    if dev != bridge or "via" in out:
        raise HostHarnessError(
            f"refusing to send to {address}: it routes as {' '.join(out)!r}, not directly via test bridge "
            f"{bridge}"
        )


def _routes_overlapping(subnet: ipaddress.IPv4Network) -> list[str]:
    kinds = {"local", "broadcast", "unicast", "multicast", "unreachable", "blackhole", "prohibit", "throw"}
    found = []
    for line in _run(["ip", "-o", "-4", "route", "show", "table", "all"], timeout=10).stdout.splitlines():
        tokens = line.split()
        if not tokens:
            continue
        dest = tokens[1] if tokens[0] in kinds and len(tokens) > 1 else tokens[0]
        if dest == "default":
            continue
        try:
            if ipaddress.ip_network(dest, strict=False).overlaps(subnet):
                found.append(line.strip())
        except ValueError:
            continue
    return found


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _ensure_inotify_instances(wanted: int) -> None:
    """Raise fs.inotify.max_user_instances to ``wanted`` if lower (never lower it).

    Every container's systemd, journald, logind … takes inotify instances from the one per-uid pool of
    root; Debian's default of 128 runs out at about a dozen hosts (systemd then fails with "Too many open
    files" as PID 1 and the container exits).
    """
    knob = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(knob.read_text()) < wanted:
        knob.write_text(f"{wanted}\n")


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(int(p.name)) == pid]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _mounts() -> list[tuple[str, str]]:
    """(fstype, mountpoint) of every mount in our mount namespace (octal escapes decoded)."""
    result = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        result.append((fields[2], point))
    return result


def _unmount(path: Path) -> str | None:
    if not any(point == str(path) for _, point in _mounts()):
        return None
    if _run(["umount", str(path)], timeout=30, check=False).returncode == 0:
        return None
    lazy = _run(["umount", "-l", str(path)], timeout=30, check=False)
    return None if lazy.returncode == 0 else f"umount {path}: {lazy.stderr.strip()}"


def _delete_link(name: str) -> str | None:
    if not Path("/sys/class/net", name).exists():
        return None
    proc = _run(["ip", "link", "del", name], check=False)
    if proc.returncode == 0 or not Path("/sys/class/net", name).exists():
        return None  # gone, maybe removed by the kernel with its peer meanwhile
    return f"ip link del {name}: {proc.stderr.strip()}"


class TestHosts:
    """A set of booted test hosts and the faults that can be applied to them. Make one with :meth:`start`.

    Thread use: one test thread at a time; :meth:`start` fans out internally.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    def __init__(self, workdir: Path, subnet: str, prefix: str) -> None:
        if not re.fullmatch(r"[a-z]{1,5}", prefix):
            raise ValueError(f"prefix {prefix!r}: use 1-5 lowercase letters (interface names are short)")
        self.instance = prefix + uuid.uuid4().hex[:_ID_HEX]
        self.prefix = prefix
        self.subnet = ipaddress.IPv4Network(subnet)
        self.bridge = f"{self.instance}br"
        self.bridge_address = str(self.subnet.network_address + (self.subnet.num_addresses - 2))
        self.workdir = workdir
        self.client_key = workdir / f"{self.instance}-id_ed25519"
        self.known_hosts = workdir / f"{self.instance}-known_hosts"
        self._hosts: dict[str, TestHost] = {}
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
        _ensure_inotify_instances(INOTIFY_INSTANCES)
        self.workdir.mkdir(parents=True, exist_ok=True)
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        (REGISTRY_DIR / f"{self.instance}.json").write_text(
            json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()), "workdir": str(self.workdir)})
        )
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.instance, "-f", str(self.client_key)])
        # check-then-claim the subnet under a machine-wide lock, so concurrent runs never share one
        with (REGISTRY_DIR / ".subnet.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            overlapping = _routes_overlapping(self.subnet)
            if overlapping:
                raise SubnetInUseError(f"subnet {self.subnet} overlaps existing routes: {overlapping}")
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self._created_links.append(self.bridge)
            _run(["ip", "addr", "add", f"{self.bridge_address}/{self.subnet.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for index in range(1, count + 1):
            self._add_network(index)
        self._hosts = {h.name: h for h in (self._describe(i) for i in range(1, count + 1))}
        for host in self._hosts.values():
            self.assert_routed_to_test_bridge(host.address)
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(self._prepare_root, self._hosts.values()))
        self.known_hosts.write_text(
            "".join(
                f"{h.address} {self._host_key(h)}\n"
                for h in sorted(self._hosts.values(), key=lambda h: h.index)
            )
        )
        for name in self._hosts:
            self._launch(name)
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda n: self._wait_ssh(n, deadline), list(self._hosts)))
        for host in self._hosts.values():
            self.assert_routed_to_test_bridge(host.address)

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

    def _add_network(self, index: int) -> None:
        host = self._describe(index)
        _run(["ip", "netns", "add", host.netns])
        self._created_netns.append(host.netns)
        _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "host0", "netns", host.netns])
        self._created_links.append(host.veth)
        _run(["ip", "link", "set", host.veth, "master", self.bridge, "up"])
        prefixed = f"{host.address}/{self.subnet.prefixlen}"
        _run(["ip", "-n", host.netns, "addr", "add", prefixed, "dev", "host0"])
        _run(["ip", "-n", host.netns, "link", "set", "host0", "up"])
        _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])

    def _prepare_root(self, host: TestHost) -> None:
        """Mount the overlay and make it a distinct host: identity, keys, users, quiet boot."""
        base = host.root.parent
        for sub in ("up", "work", "root"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        options = f"lowerdir=/,upperdir={base / 'up'},workdir={base / 'work'}"
        _run(["mount", "-t", "overlay", "overlay", "-o", options, str(host.root)])
        root = host.root
        etc = root / "etc"
        (etc / "systemd/system/multi-user.target.wants/etcd.service").unlink(missing_ok=True)
        for unit in MASKED_UNITS:
            target = etc / "systemd/system" / unit
            target.unlink(missing_ok=True)
            target.symlink_to("/dev/null")
        (etc / "hostname").write_text(f"{host.name}\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        hosts_lines = [f"{self._describe(i).address}\th{i}\n" for i in range(1, len(self._hosts) + 1)]
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n" + "".join(hosts_lines))
        for old in (etc / "ssh").glob("ssh_host_*"):
            old.unlink()
        _run(["ssh-keygen", "-A", "-f", str(root)], timeout=60)
        (etc / "ssh/sshd_config.d/etcdforge-test.conf").write_text(SSHD_DROPIN)
        public_key = self.client_key.with_suffix(".pub").read_text()
        self._authorize(root, "root", public_key)
        for user in ("deploy", "nosudo"):
            _run(["useradd", "--root", str(root), "-m", "-s", "/bin/bash", "-p", "*", user])
            self._authorize(root, user, public_key)
        sudoers = etc / "sudoers.d/deploy"
        sudoers.parent.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(sudoers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
        with os.fdopen(fd, "w") as f:
            f.write("deploy ALL=(ALL) NOPASSWD:ALL\n")

    @staticmethod
    def _authorize(root: Path, user: str, public_key: str) -> None:
        entry = next(
            line.split(":")
            for line in (root / "etc/passwd").read_text().splitlines()
            if line.split(":")[0] == user
        )
        uid, gid, home = int(entry[2]), int(entry[3]), root / entry[5].lstrip("/")
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(public_key)
        for path in (ssh_dir, keys):
            os.chown(path, uid, gid)

    @staticmethod
    def _host_key(host: TestHost) -> str:
        key_type, key = (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"{key_type} {key}"

    def _launch(self, name: str) -> None:
        host = self._hosts[name]
        _run(["ip", "-n", host.netns, "link", "set", "host0", "up"])
        log = (host.root.parent / "console.log").open("ab")
        argv = [
            "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=passive",
            "--settings=no", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
            "-D", str(host.root), f"--network-namespace-path=/run/netns/{host.netns}",
            f"--machine={self.instance}-{name}", "--boot",
        ]  # fmt: skip
        with log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._procs[name] = proc
        self._hosts[name] = dataclasses.replace(host, nspawn_pid=proc.pid, leader_pid=0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            # PID 1 is the child in a new PID namespace (a short-lived helper child precedes it)
            leaders = [
                c for c in _children(proc.pid) if _pid_namespace(c) not in (None, _pid_namespace(proc.pid))
            ]
            if leaders:
                self._hosts[name] = dataclasses.replace(self._hosts[name], leader_pid=leaders[0])
                return
            time.sleep(0.02)
        raise HostHarnessError(f"{name}: systemd-nspawn did not start a container\n{self.console_tail(name)}")

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

    def diagnose(self, name: str) -> str:
        """What the host's own systemd says about its boot and sshd (entered via nsenter, bounded)."""
        leader = self._hosts[name].leader_pid
        report = [self.console_tail(name)]
        if leader:
            for argv in (["systemctl", "is-system-running"], ["systemctl", "list-jobs", "--no-pager"],
                         ["systemctl", "status", "--no-pager", "-n", "20", "ssh.service"]):  # fmt: skip
                try:
                    proc = _run(["nsenter", "-t", str(leader), "-a", "--", *argv], timeout=10, check=False)
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
            attempt(f"umount {host.root}", _unmount, host.root)
        # veths before their netns: deleting a netns removes its veth pair asynchronously
        for link in reversed(self._created_links):
            attempt(f"link {link}", _delete_link, link)
        for netns in self._created_netns:
            attempt(f"netns {netns}", _run, ["ip", "netns", "del", netns])
        for host in self._hosts.values():
            attempt(f"remove {host.root.parent}", self._remove_dir, host.root.parent)
        for path in (self.client_key, self.client_key.with_suffix(".pub"), self.known_hosts):
            attempt(f"remove {path}", path.unlink, True)
        attempt("registry", (REGISTRY_DIR / f"{self.instance}.json").unlink, True)
        return problems

    @staticmethod
    def _remove_dir(path: Path) -> str | None:
        # never delete through a live overlay: the directory must not hold a mount any more
        if any(point == str(path) or point.startswith(f"{path}/") for _, point in _mounts()):
            return f"not removing {path}: still mounted"
        shutil.rmtree(path, ignore_errors=True)
        return None

    def _kill_container(self, name: str) -> str | None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            for child in _children(proc.pid):  # the container's PID 1: killing it ends its PID namespace
                _kill(child, signal.SIGKILL)
            if not _wait_gone(proc.pid, 15, proc):
                _kill(proc.pid, signal.SIGKILL)
                _wait_gone(proc.pid, 5, proc)
        self._hosts[name] = dataclasses.replace(self._hosts[name], nspawn_pid=0, leader_pid=0)
        return None if proc.poll() is not None else f"{name}: systemd-nspawn {proc.pid} did not exit"

    def __enter__(self) -> TestHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- access

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
        self, host: TestHost | str, user: str = "root", *, connect_timeout: float = 5.0
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
        timeout: float = 60.0,
        check: bool = True,
        input: str | None = None,
        connect_timeout: float = 5.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` over SSH (quoted once for the remote shell)."""
        current = self.host(host)
        self.assert_routed_to_test_bridge(current.address)
        ssh = self.ssh_argv(current, user, connect_timeout=connect_timeout)
        return _run([*ssh, "--", shlex.join(argv)], timeout=timeout, check=check, input=input)

    def _each(self, hosts: Iterable[TestHost | str] | None) -> list[str]:
        return [self.host(h).name for h in (self._hosts if hosts is None else hosts)]

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
        _run(["ip", "link", "set", current.veth, "down"])
        self._partitioned.add(current.name)

    def heal(self, host: TestHost | str) -> None:
        """Undo :meth:`partition`."""
        current = self.host(host)
        _run(["ip", "link", "set", current.veth, "up"])
        self._partitioned.discard(current.name)

    def stop_host(self, host: TestHost | str, timeout: float = 60.0) -> None:
        """Shut ``host`` down gracefully (SIGTERM to nspawn powers it off); kill it after ``timeout``."""
        name = self.host(host).name
        proc = self._procs.get(name)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        if not _wait_gone(proc.pid, timeout, proc):
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

    def wait_tcp(self, host: TestHost | str, port: int, timeout: float = 1.0) -> bool:
        """True if a TCP connection to ``host:port`` succeeds within ``timeout`` (routing checked first)."""
        current = self.host(host)
        self.assert_routed_to_test_bridge(current.address)
        try:
            with socket.create_connection((current.address, port), timeout=timeout):
                return True
        except OSError:
            return False


# -------------------------------------------------------------------- stale leftovers


def _live_instances(prefix: str) -> set[str]:
    live = set()
    for entry in REGISTRY_DIR.glob(f"{prefix}*.json") if REGISTRY_DIR.is_dir() else ():
        try:
            data = json.loads(entry.read_text())
            if _alive(int(data["pid"])) and _start_time(int(data["pid"])) == data["start"]:
                live.add(entry.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return live


def cleanup_stale(prefix: str = "efh") -> list[str]:
    """Remove what earlier, now dead, harness runs with ``prefix`` left behind; returns what was removed.

    Resources of a live harness (its owner process still runs) are left alone, so concurrent test runs
    with the same prefix do not tear each other down.
    """
    pattern = re.compile(rf"^({re.escape(prefix)}[0-9a-f]{{{_ID_HEX}}}){_RESOURCE_SUFFIX}$")
    live = _live_instances(prefix)
    removed: list[str] = []

    def stale(name: str) -> bool:
        match = pattern.match(name)
        return match is not None and match.group(1) not in live

    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            args = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0].endswith(b"systemd-nspawn"):
            continue
        machines = [a[len(b"--machine=") :].decode() for a in args if a.startswith(b"--machine=")]
        if machines and stale(machines[0]):
            pid = int(proc_dir.name)
            for child in _children(pid):
                _kill(child, signal.SIGKILL)
            if not _wait_gone(pid, 10):
                _kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)
            removed.append(f"process {pid} ({machines[0]})")
    for fstype, point in _mounts():
        parts = Path(point).parts
        if fstype == "overlay" and len(parts) >= 2 and parts[-1] == "root" and stale(parts[-2]):
            problem = _unmount(Path(point))
            removed.append(f"mount {point}" + (f" ({problem})" if problem else ""))
            if problem is None:
                shutil.rmtree(Path(point).parent, ignore_errors=True)
    for name in sorted(os.listdir("/sys/class/net"), key=lambda n: n.endswith("br")):
        if stale(name):
            problem = _delete_link(name)
            removed.append(f"link {name}" + (f" ({problem})" if problem else ""))
    netns_out = _run(["ip", "netns", "list"], check=False).stdout
    for name in (line.split()[0] for line in netns_out.splitlines() if line.strip()):
        if stale(name):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(f"netns {name}")
    for entry in REGISTRY_DIR.glob(f"{prefix}*.json") if REGISTRY_DIR.is_dir() else ():
        if pattern.match(entry.stem + "br") and entry.stem not in live:
            entry.unlink(missing_ok=True)
            removed.append(f"registry {entry.name}")
    return removed
